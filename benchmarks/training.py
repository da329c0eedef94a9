"""FEGAN training throughput on this CPU, per variant, against the machine's convolution bound.

    python benchmarks/training.py [--sizes 128 256] [--batches 8 16] [--steps 10] [--out training_speed.csv]
    python benchmarks/training.py --one "bf16-mixed + FEN cache" 128 8 --profile     # where a step's time goes

Runs the real loop (anomalib's MVTecAD datamodule on generated PNGs, Lightning's Trainer,
``Fegan.training_step``: M-SE, G step, D step) for two epochs per variant and times the steps of
the second, when the FEN cache (if on) is warm, as it is for 199 of the paper's 200 epochs. Each
variant runs in its own process, so its peak RSS is its own.

FLOPs of one training step are counted like benchmarks/inference.py counts inference: every
convolution (FEN, encoder, decoder, discriminator), here forward **and** backward
(``torch.utils.flop_counter``, the ``convolution`` and ``convolution_backward`` ops only), on the
variant's own step (a warm cache skips the FEN). The bound is this CPU's measured 3x3-convolution
rate, fp32 for fp32 rows and bf16 for bf16 rows.

Gradient-norm logging (``gradient_norm_every``) is off in every row but the one named for it, which
shows its cost.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from inference import conv_gflops_per_second  # the same bound as inference's (script folder)

from fegan_anomalib.experiments.compare import cpu_name

VARIANTS: dict[str, dict[str, Any]] = {
    "fp32, plain layout": {"precision": "32-true", "model": {"channels_last": False, "fen_cache_mb": 0}},
    "fp32 (previous default)": {"precision": "32-true", "model": {"fen_cache_mb": 0}},
    "fp32 + grad-norm logging every 10 steps": {
        "precision": "32-true",
        "model": {"fen_cache_mb": 0, "gradient_norm_every": 10},
    },
    "fp32 + channels-last input": {"precision": "32-true", "model": {"fen_cache_mb": 0}, "channels_last_input": True},
    "fp32 + FEN cache": {"precision": "32-true", "model": {}},
    "bf16-mixed": {"precision": "bf16-mixed", "model": {"fen_cache_mb": 0}},
    "bf16-mixed + FEN cache": {"precision": "bf16-mixed", "model": {}},
}
# 256² and batch 16 cost 4x/2x per step: only the previous and the new default there by default
SHORT = ("fp32 (previous default)", "fp32 + FEN cache")


def cpu_flags() -> set[str]:
    """Return the CPU's feature flags (Linux), to say whether bf16 runs in hardware here."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def measure(
    variant: str, size: int, batch: int, steps: int, backbone: str, tap: str, profile: bool = False
) -> dict[str, Any]:
    """Train two epochs of ``steps`` batches in this process; return the second epoch's step times."""
    from anomalib.data import MVTecAD  # noqa: PLC0415
    from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: PLC0415
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    from fegan_anomalib import Fegan  # noqa: PLC0415
    from fegan_anomalib.data import make_synthetic_dataset  # noqa: PLC0415

    setting = VARIANTS[variant]
    seed_everything(0)
    root = make_synthetic_dataset(
        tempfile.mkdtemp(),
        categories=("texture",),
        image_size=size,
        num_train=batch * steps,
        num_test_good=1,
        num_test_defect=1,
    )
    model_args = {"gradient_norm_every": 0, **setting["model"]}
    model = Fegan(image_size=size, backbone=backbone, tap=tap, pre_trained=False, max_epochs=2, **model_args)

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.gflop = 0.0

        def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if setting.get("channels_last_input"):
                batch.image = batch.image.contiguous(memory_format=torch.channels_last)
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
            if trainer.current_epoch == 1:
                self.times.append(time.perf_counter() - self.start)

        def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
            if trainer.current_epoch == 1:  # count one more step's convolutions, outside the timed ones
                batch = next(iter(trainer.datamodule.train_dataloader()))
                batch.image = pl_module.pre_processor.transform(batch.image)
                counter = FlopCounterMode(display=False)
                with counter, trainer.precision_plugin.train_step_context():
                    pl_module.training_step(batch, 1)
                counts = counter.get_flop_counts().get("Global", {})
                self.gflop = sum(v for op, v in counts.items() if "convolution" in str(op)) / 1e9
                if profile:  # where one step's time goes, by operator
                    with torch.profiler.profile() as profiler, trainer.precision_plugin.train_step_context():
                        pl_module.training_step(batch, 1)
                    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    timer = StepTimer()
    datamodule = MVTecAD(root=root, category="texture", train_batch_size=batch, eval_batch_size=batch, num_workers=0)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        precision=setting["precision"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
        default_root_dir=tempfile.mkdtemp(),
    )
    trainer.fit(model, datamodule=datamodule)
    step = mean(timer.times)
    return {
        "variant": variant,
        "precision": setting["precision"],
        "image_size": size,
        "batch": batch,
        "timed_steps": len(timer.times),
        "ms_per_step": round(1000 * step),
        "images_per_s": round(batch / step, 3),
        "gflop_per_step": round(timer.gflop, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    """Run every (size, batch, variant) in its own process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--steps", type=int, default=10, help="batches per epoch at the smallest size (>= 3 at others)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: all at 128², batch 8")
    parser.add_argument("--backbone", default="vgg19")
    parser.add_argument("--tap", default="relu5_4")
    parser.add_argument("--out", type=Path, default=Path("training_speed.csv"))
    parser.add_argument(
        "--one", nargs=3, metavar=("VARIANT", "SIZE", "BATCH"), help="measure one variant in this process and stop"
    )
    parser.add_argument("--profile", action="store_true", help="with --one: print the operators of one step")
    args = parser.parse_args()
    if args.one:
        row = measure(
            args.one[0], int(args.one[1]), int(args.one[2]), args.steps, args.backbone, args.tap, args.profile
        )
        print("ROW " + json.dumps(row))
        return

    flags = cpu_flags()
    bf16_hardware = bool(flags & {"avx512_bf16", "amx_bf16"})
    rates = {"32-true": conv_gflops_per_second(bf16=False), "bf16-mixed": conv_gflops_per_second(bf16=True)}
    print(
        f"bf16 in hardware (avx512_bf16 / amx_bf16): {'yes' if bf16_hardware else 'NO: bf16 is emulated here'}; "
        f"AVX-512: {'yes' if 'avx512f' in flags else 'no'}"
    )
    print(
        f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}; measured 3x3-conv rate: fp32 {rates['32-true']:.0f} GFLOP/s, "
        f"bf16 {rates['bf16-mixed']:.0f} GFLOP/s",
        flush=True,
    )
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            full = size == min(args.sizes) and batch == min(args.batches)
            names = args.variants or (list(VARIANTS) if full else list(SHORT))
            steps = max(3, round(args.steps * (min(args.sizes) / size) ** 2))  # about equal images per row
            for name in names:
                emulated = VARIANTS[name]["precision"] != "32-true" and not bf16_hardware
                variant_steps = 3 if emulated else steps  # emulated bf16 is slow: enough steps to show it
                command = [
                    sys.executable,
                    __file__,
                    "--one",
                    name,
                    str(size),
                    str(batch),
                    "--steps",
                    str(variant_steps),
                    "--backbone",
                    args.backbone,
                    "--tap",
                    args.tap,
                ]
                result = subprocess.run(command, capture_output=True, text=True, check=False)
                lines = [line for line in result.stdout.splitlines() if line.startswith("ROW ")]
                if result.returncode or not lines:
                    print(result.stdout[-2000:] + result.stderr[-4000:])
                    raise SystemExit(f"variant '{name}' at {size}², batch {batch} failed")
                row = json.loads(lines[-1][4:])
                rate = rates[row["precision"]]
                row["pct_of_bound"] = round(100 * row["gflop_per_step"] / (row["ms_per_step"] / 1000) / rate)
                rows.append(row)
                print(f"  {name}, {size}², batch {batch}: {row['images_per_s']} img/s", flush=True)
    base = {(r["image_size"], r["batch"]): r["images_per_s"] for r in rows if r["variant"] == "fp32 (previous default)"}
    print(f"\nFEGAN training, {args.backbone} to {args.tap}, random weights, CPU, mean step of epoch 2")
    print(
        "| variant | size | batch | images/s | ms/step | x previous default | GFLOP/step | % of bound | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["images_per_s"] / base[(r["image_size"], r["batch"])] if (r["image_size"], r["batch"]) in base else 0
        print(
            f"| {r['variant']} | {r['image_size']}² | {r['batch']} | {r['images_per_s']:.2f} | {r['ms_per_step']} "
            f"| {ratio:.2f} | {r['gflop_per_step']} | {r['pct_of_bound']} % | {r['peak_rss_mb']} |"
        )
    with args.out.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
