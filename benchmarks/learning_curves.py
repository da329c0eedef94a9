"""Learning curves of FEGAN on a real MVTec-layout category, with PaDiM on the same backbone as the bar.

Trains FEGAN through anomalib's Engine (the real Lightning loop) with label-free validation
(``PlantedValidation``: held-out normal training images, half with planted M-SE anomalies) and,
after every epoch, scores the whole **test set** outside the Lightning loop, recording the image AUROC and the
pixel AUROC of the fused map S for several scoring settings (λ, σ) and of F and R alone. S is the model's own
fusion (its ``feature_map_weight``, 0.8 by default); the paper's λ 0.6 is recorded beside it. Each image AUROC is
the model's own image score for that λ and σ: read from F before the fusion and the blur with the default
``image_score_from: feature_map`` (so the same for every λ and σ but R alone), from S with ``anomaly_map``. The test
set never reaches training or the PostProcessor: it is read here to draw the curve and to measure
how well the planted-validation proxy tracks it (Spearman rank correlation across epochs).

    python benchmarks/learning_curves.py --root datasets --category magnetic_tile \
        --weights weights/standin_vgg16bn.pth --epochs 20 --out curves/magnetic_tile

Writes ``test_curve.csv`` (one row per epoch), the run's own ``learning_curves.csv/png``,
``curves.png`` (test image/pixel AUROC vs epoch, PaDiM as a horizontal line) and ``summary.json``.
Any further ``--model-args`` JSON goes to ``Fegan`` (e.g. ``'{"adversarial_loss": "feature_matching"}'``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch.nn import functional as F  # noqa: N812

from fegan_anomalib import Fegan
from fegan_anomalib.callbacks import PlantedValidation
from fegan_anomalib.experiments.weights import STANDIN_FEN
from fegan_anomalib.metrics import map_aurocs, rank_auroc

LAMBDAS = (1.0, 0.6, 0.0)  # F only, the paper's fusion, R only; TestSetCurve adds the model's own λ
SIGMAS = (0.0, 4.0)


class TestSetCurve(Callback):
    """After every training epoch, score the test set and append image/pixel AUROCs to a CSV."""

    def __init__(self, datamodule: MVTecAD, path: Path, model_lambda: float, pixel_stride: int = 2) -> None:
        self.datamodule = datamodule
        self.path = path
        self.pixel_stride = pixel_stride
        self.rows: list[dict[str, float]] = []
        self.epoch_start = time.perf_counter()
        self.train_seconds = 0.0
        self.lambdas = tuple(dict.fromkeys((1.0, model_lambda, *LAMBDAS)))  # S at the model's own λ too

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the epoch's clock."""
        del trainer, pl_module
        self.epoch_start = time.perf_counter()

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score the test set with this epoch's weights and append the row."""
        self.train_seconds += time.perf_counter() - self.epoch_start  # training + validation, not this scoring
        model = pl_module.model
        residuals, features, labels, masks = [], [], [], []
        with model.evaluating():
            for batch in self.datamodule.test_dataloader():
                images = pl_module.pre_processor.transform(batch.image.to(pl_module.device))
                residual, feature, _ = model.component_maps(images)
                mask = F.interpolate(batch.gt_mask.float().unsqueeze(1), size=residual.shape[-2:], mode="nearest")
                residuals.append(residual.cpu())
                features.append(feature.cpu())
                labels.append(batch.gt_label.cpu())
                masks.append(mask[:, 0].bool().cpu())
        residual, feature, label, mask = (torch.cat(x) for x in (residuals, features, labels, masks))
        generator = model.anomaly_map_generator
        row: dict[str, float] = {"epoch": trainer.current_epoch, "train_seconds": round(self.train_seconds, 1)}
        for lam in self.lambdas:
            for sigma in SIGMAS:
                fused, image_score = _score(generator, residual, feature if lam > 0.0 else None, lam, sigma)
                name = f"lambda{lam:g}_sigma{sigma:g}"
                row[f"pixel_AUROC_{name}"] = map_aurocs(fused, label, mask, self.pixel_stride)[1]
                row[f"image_AUROC_{name}"] = rank_auroc(image_score, label)  # the model's own [A8c]; λ 0: R's
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val_") or key.endswith("_loss") or key.startswith(("grad_share/", "grad_cos/")):
                row[key] = float(value)
        self.rows.append(row)
        import pandas as pd  # noqa: PLC0415

        pd.DataFrame(self.rows).to_csv(self.path, index=False)
        print(json.dumps({k: round(v, 4) for k, v in row.items() if "AUROC" in k or k == "epoch"}), flush=True)


def _score(
    generator: Any, residual: torch.Tensor, feature: torch.Tensor | None, lam: float, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """S and the image scores with another λ and σ from the same components: the model's own scoring, statistics copied.

    F arrives already measured with the model's feature distance (and ridge); only λ and σ change here. The image
    score is read as the model reads it (``image_score_from``); with λ 0 (R alone) F is left out, so it is R's.
    """
    from fegan_anomalib.models.fegan.scoring.anomaly_map import AnomalyMapGenerator  # noqa: PLC0415

    variant = AnomalyMapGenerator(
        feature_map_weight=lam,
        component_norm=generator.component_norm,
        sigma=sigma,
        feature_distance=generator.feature_distance,
        feature_shape=generator.feature_shape,
        image_score_top_ratio=generator.image_score_top_ratio,
        image_score_from=generator.image_score_from,
        mahalanobis_ridge=generator.mahalanobis_ridge,
        memory_size=generator.memory_size,
    )
    variant.load_state_dict(generator.state_dict())
    return variant.score(residual, feature)


def _padim(args: argparse.Namespace, out: Path) -> dict[str, float]:
    """PaDiM on the same backbone and data (anomalib's, via the benchmark peer), test metrics."""
    from fegan_anomalib.experiments.peers import BenchPadim  # noqa: PLC0415

    seed_everything(args.seed)
    model = BenchPadim(image_size=args.image_size, weights=args.weights, pre_trained=False, visualizer=False)
    datamodule = _datamodule(args)
    engine = Engine(default_root_dir=out / "padim", logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    (metrics,) = engine.test(model, datamodule=datamodule, verbose=False)
    return {key: float(value) for key, value in metrics.items()}


def _datamodule(args: argparse.Namespace) -> MVTecAD:
    return MVTecAD(
        root=args.root,
        category=args.category,
        train_batch_size=args.batch_size,
        eval_batch_size=16,
        num_workers=0,
        seed=args.seed,
    )


def _spearman(a: list[float], b: list[float]) -> float | None:
    """Rank correlation across epochs; None where it is undefined (under 3 epochs, or a constant series).

    None, not NaN: summary.json stays valid JSON and a reader sees "no figure" rather than a number.
    """
    from scipy.stats import spearmanr  # noqa: PLC0415

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def main() -> None:
    """Train with the test curve recorded, optionally PaDiM first; write the CSV, figure and summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder of MVTec-layout categories")
    parser.add_argument("--category", required=True)
    parser.add_argument("--weights", help="torchvision-keyed VGG16-BN state dict (stand-in); random FEN without")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model-args", default="{}", help="JSON of further Fegan arguments")
    parser.add_argument(
        "--precision", default="32-true", help="Lightning precision of FEGAN's training, e.g. bf16-mixed"
    )
    parser.add_argument("--padim", action="store_true", help="also train and test PaDiM on the same backbone")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if args.padim:
        summary["padim"] = _padim(args, args.out)
        print("PaDiM", json.dumps(summary["padim"]), flush=True)
    seed_everything(args.seed)
    backbone = {**STANDIN_FEN, "weights": args.weights} if args.weights else {"pre_trained": False}
    model_args = {
        "image_size": args.image_size,
        "max_epochs": args.epochs,
        "visualizer": False,
        **backbone,
        **json.loads(args.model_args),
    }
    model = Fegan(**model_args)
    datamodule = _datamodule(args)
    own = float(model.model.anomaly_map_generator.feature_map_weight)  # S as the model (and its validation) scores
    curve = TestSetCurve(_datamodule(args), args.out / "test_curve.csv", own)
    datamodule_test = curve.datamodule
    datamodule_test.setup("test")
    engine = Engine(
        default_root_dir=args.out / "fegan",
        callbacks=[PlantedValidation(seed=args.seed), curve],
        logger=False,
        enable_progress_bar=False,
        precision=args.precision,
    )
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    summary["fit_seconds"] = round(time.perf_counter() - start, 1)
    summary["model_args"] = {k: str(v) for k, v in model_args.items()}
    rows = curve.rows
    summary["last_epoch"] = rows[-1]
    summary["model_lambda"] = own
    if all("val_image_AUROC" in row for row in rows):
        summary["spearman_val_vs_test_image_AUROC"] = _spearman(
            [row["val_image_AUROC"] for row in rows], [row[f"image_AUROC_lambda{own:g}_sigma0"] for row in rows]
        )
        summary["spearman_val_vs_test_pixel_AUROC"] = _spearman(
            [row["val_pixel_AUROC"] for row in rows], [row[f"pixel_AUROC_lambda{own:g}_sigma0"] for row in rows]
        )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    from_f = model.model.anomaly_map_generator.image_score_from == "feature_map"
    plot(rows, summary.get("padim"), args.out / "curves.png", f"{args.category}, {args.image_size}²", own, from_f)
    print(json.dumps(summary, indent=2))


def plot(
    rows: list[dict[str, float]],
    padim: dict[str, float] | None,
    path: Path,
    title: str,
    lam: float,
    from_f: bool = True,
) -> None:
    """Test image and pixel AUROC per epoch (S at the model's λ, F only, R only), PaDiM as a horizontal line.

    The image AUROC is the model's own score, as is the planted validation's. ``from_f``: it is read from F (the
    default ``image_score_from``), the same for every λ and σ, so the image panel draws it once beside R's.
    """
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [row["epoch"] + 1 for row in rows]
    for axis, level in zip(axes, ("image", "pixel"), strict=True):
        if level == "image" and from_f:
            lines = ((lam, "FEGAN's own score (F)", "C0"), (0.0, "R only", "C2"))
        else:
            lines = ((lam, f"FEGAN S (λ={lam:g})", "C0"), (1.0, "F only", "C1"), (0.0, "R only", "C2"))
        for weight, label, color in lines:  # one colour per line in both panels
            values = [row[f"{level}_AUROC_lambda{weight:g}_sigma0"] for row in rows]
            axis.plot(epochs, values, marker="o", color=color, label=label)
        if level == "pixel" or not from_f:
            values = [row[f"{level}_AUROC_lambda{lam:g}_sigma4"] for row in rows]
            axis.plot(epochs, values, ls="--", color="C3", label="S, σ=4")
        if any(f"val_{level}_AUROC" in row for row in rows):
            validation = [row.get(f"val_{level}_AUROC", float("nan")) for row in rows]
            axis.plot(epochs, validation, ls=":", color="C4", label="planted val (own score)")
        if padim and f"{level}_AUROC" in padim:
            axis.axhline(padim[f"{level}_AUROC"], color="k", ls="-.", label="PaDiM (same backbone)")
        axis.set_title(f"{title}: test {level} AUROC")
        axis.set_xlabel("epoch")
        axis.set_ylim(0.3, 1.0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
