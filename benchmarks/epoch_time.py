"""Where each FEGAN training epoch's time goes, and the subnormal floats that can slow it down.

    python benchmarks/epoch_time.py --root datasets --category magnetic_tile --weights VGG16BN.pth \
        --epochs 15 --seed 42 --out epoch_time/magnetic_tile [--model-args '{"flush_denormal": false}']

Trains FEGAN through anomalib's Engine as BENCHMARKS.md's runs do (128², batch 8, planted validation, the
stand-in VGG16-BN cut at relu4_3 with ``--weights``) and prints one row per epoch: the seconds of its training
steps, of its validation and, inside the validation, of the scoring statistics' passes over the training
images; then, at the epoch's end, how many float32 values are subnormal (non-zero, under 1.2e-38) in each
network's parameters, gradients and Adam states (``exp_avg``, ``exp_avg_sq``), and in its activations during the
epoch's last step, with the two places a GAN makes them: the decoder's pre-Tanh values past ±44 (where Tanh's
derivative is subnormal or zero) and the discriminator's largest |logit| (past 87 the BCE gradient is). x86
CPUs take a microcode assist on every subnormal operand unless flush-to-zero is on, which is what made
0.3's long run slow down 3.6× (BENCHMARKS.md, "Training speed").

Writes ``epochs.csv`` (one row per epoch) and, with ``--save-checkpoints``, each epoch's checkpoint
(``epoch_NN.ckpt``, ~120 MB each at relu4_3) for rescoring without retraining.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from common import clock_statistics  # the benchmarks' shared helpers
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn

from fegan_anomalib import Fegan
from fegan_anomalib.callbacks import PlantedValidation
from fegan_anomalib.experiments.compare import cpu_name
from fegan_anomalib.experiments.weights import STANDIN_FEN

TINY = torch.finfo(torch.float32).tiny
NETWORKS = ("encoder", "decoder", "discriminator")


def subnormal(tensor: torch.Tensor | None) -> int:
    """Count the non-zero float32 values under the smallest normal float."""
    if tensor is None or tensor.dtype != torch.float32:
        return 0
    return int(((tensor != 0) & (tensor.abs() < TINY)).sum())


class EpochSplit(Callback):
    """Per epoch: training-step, validation and statistics seconds, and subnormal counts per network."""

    def __init__(self, path: Path, checkpoints: Path | None) -> None:
        self.path, self.checkpoints = path, checkpoints
        self.rows: list[dict[str, Any]] = []
        self.row: dict[str, Any] = {}
        self.hooks: list[Any] = []
        self.activations: dict[str, int] = {}

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Open the epoch's row."""
        del pl_module
        self.row = {"epoch": trainer.current_epoch + 1, "train_s": 0.0, "validation_s": 0.0, "statistics_s": 0.0}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        """Start the step's clock; on the epoch's last step, count subnormal activations."""
        del batch
        if batch_idx == trainer.num_training_batches - 1:
            self._watch(pl_module.model)
        self.step_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Stop the step's clock."""
        del trainer, pl_module, outputs, batch, batch_idx
        self.row["train_s"] += time.perf_counter() - self.step_start
        for hook in self.hooks:
            hook.remove()
        self.hooks = []

    def _watch(self, model: nn.Module) -> None:
        self.activations = {f"{name}_activations": 0 for name in NETWORKS}
        self.activations |= {"decoder_pre_tanh_past_44": 0, "discriminator_max_abs_logit": 0.0}
        for name in NETWORKS:
            network = getattr(model, name, None)
            for module in network.modules() if network is not None else ():
                if not list(module.children()):
                    self.hooks.append(module.register_forward_hook(self._counter(name, module)))

    def _counter(self, name: str, module: nn.Module) -> Any:
        def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            with torch.no_grad():
                self.activations[f"{name}_activations"] += subnormal(output)
                if isinstance(module, nn.Tanh):
                    self.activations["decoder_pre_tanh_past_44"] += int((inputs[0].abs() > 44).sum())
                if name == "discriminator" and output.shape[-1] == 1 and output.ndim == 4:  # the logit conv
                    largest = float(output.detach().abs().max())
                    self.activations["discriminator_max_abs_logit"] = max(
                        self.activations["discriminator_max_abs_logit"], largest
                    )

        return hook

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the validation clock."""
        del trainer, pl_module
        self.validation_start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Stop the validation clock."""
        del trainer, pl_module
        self.row["validation_s"] += time.perf_counter() - self.validation_start

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Count subnormals in weights, gradients and Adam states; write the row (and the checkpoint)."""
        model = pl_module.model
        optimizers = trainer.optimizers
        for name in NETWORKS:
            network = getattr(model, name, None)
            parameters = list(network.parameters()) if network is not None else []
            self.row[f"{name}_weights"] = sum(subnormal(p) for p in parameters)
            self.row[f"{name}_grads"] = sum(subnormal(p.grad) for p in parameters)
            states = [optimizer.state.get(p, {}) for optimizer in optimizers for p in parameters]
            self.row[f"{name}_exp_avg"] = sum(subnormal(s.get("exp_avg")) for s in states)
            self.row[f"{name}_exp_avg_sq"] = sum(subnormal(s.get("exp_avg_sq")) for s in states)
        self.row |= self.activations
        self.row["train_s"] = round(self.row["train_s"], 1)
        self.write(trainer)  # Lightning validates before on_train_epoch_end: the row is complete

    def write(self, trainer: Trainer) -> None:
        """Append the finished row to the CSV and print it; keep the epoch's checkpoint if asked."""
        self.row["validation_s"] = round(self.row["validation_s"], 1)
        self.row["statistics_s"] = round(self.row["statistics_s"], 1)
        self.rows.append(self.row)
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        print(json.dumps(self.row), flush=True)
        if self.checkpoints is not None:
            trainer.save_checkpoint(self.checkpoints / f"epoch_{self.row['epoch']:02d}.ckpt")


def main() -> None:
    """Train ``--epochs`` epochs and print each epoch's split."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder of MVTec-layout categories")
    parser.add_argument("--category", required=True)
    parser.add_argument("--weights", help="torchvision-keyed VGG16-BN state dict (stand-in); random FEN without")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model-args", default="{}", help="JSON of further Fegan arguments")
    parser.add_argument("--save-checkpoints", action="store_true", help="keep each epoch's checkpoint in --out")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}", flush=True)
    seed_everything(args.seed)
    backbone = {**STANDIN_FEN, "weights": args.weights} if args.weights else {"pre_trained": False}
    model_args = {"augmenter_seed": args.seed, **backbone, **json.loads(args.model_args)}
    model = Fegan(image_size=args.image_size, max_epochs=args.epochs, visualizer=False, **model_args)
    datamodule = MVTecAD(
        root=args.root,
        category=args.category,
        train_batch_size=args.batch_size,
        eval_batch_size=16,
        num_workers=0,
        seed=args.seed,
    )
    split = EpochSplit(args.out / "epochs.csv", args.out if args.save_checkpoints else None)

    def add_statistics_seconds(seconds: float) -> None:
        split.row["statistics_s"] += seconds

    clock_statistics(add_statistics_seconds)  # the passes run inside validation
    engine = Engine(
        default_root_dir=args.out / "fegan",
        callbacks=[PlantedValidation(seed=args.seed), split],
        logger=False,
        enable_progress_bar=False,
    )
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    print(f"fit {time.perf_counter() - start:.0f} s; model arguments {json.dumps(model_args)}")


if __name__ == "__main__":
    main()
