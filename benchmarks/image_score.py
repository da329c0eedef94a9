"""Rescore one trained FEGAN checkpoint under candidate scoring settings, to find what lifts the image score.

Every candidate here changes scoring only (the weights stay), so all are measured on the same trained
encoder and decoder. The training images are split as the run's ``PlantedValidation(seed=SEED)`` split
them (``--seed``): statistics come from the images the generator was fitted to ("fit") or from the
held-out normal images it never saw ("held-out"), which is the comparison the image-score issue asks for.

Candidates, each fused with R at λ (Eq. 8) after ``train_stats`` standardisation:

- F distance: ``l2`` (Eq. 6), ``centred`` (the residual minus its per-cell mean on normal images, then L2),
  ``mahalanobis ε`` (centred, each channel at each cell divided by ``sqrt(var + ε·mean(var))``: ε = 1e-3 is
  ``mahalanobis_ridge: 0`` (its variance floor), ε = 0.3 the 0.3 default; as ε grows it tends to ``centred``).
- image score: the map's maximum (Eq. 10), the maximum of the σ = 4 smoothed map, the mean of its top 1 %.
- λ of Eq. 8 from 0.1 to 0.9 for the L2 distance (the paper's Fig. 10).

    python benchmarks/image_score.py --root datasets --category magnetic_tile --seed 42 \
        --checkpoint curves/magnetic_tile/s42/fegan/Fegan/MVTecAD/magnetic_tile/v0/weights/lightning/model.ckpt \
        --out image_score/magnetic_tile_s42.csv

Writes one CSV row per candidate (image / pixel AUROC, AUPRO) and prints them.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Callable
from pathlib import Path

import torch
from anomalib.data import MVTecAD
from anomalib.data.utils import random_split
from anomalib.metrics.aupro import _AUPRO
from anomalib.models.components import GaussianBlur2d
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader

from fegan_anomalib import Fegan
from fegan_anomalib.metrics import rank_auroc
from fegan_anomalib.models.fegan.anomaly_map import AnomalyMapGenerator

RIDGES = (1e-3, 0.03, 0.1, 0.3, 1.0)


@torch.no_grad()
def residuals(model: Fegan, loader: torch.utils.data.DataLoader) -> dict[str, torch.Tensor]:
    """Feature residual θ*(x) − θ(x) (B, C, h, w), reconstruction map R (B, H, W), labels and masks of a loader."""
    out: dict[str, list[torch.Tensor]] = {"residual": [], "R": [], "label": [], "mask": []}
    net = model.model
    with net.evaluating():
        for batch in loader:
            images = model.pre_processor.transform(batch.image)
            encoder, reconstruction = net.generate(images)
            out["residual"].append(net.fen_features(images).float() - encoder.float())
            out["R"].append(torch.linalg.vector_norm(net.to_gan_range(images) - reconstruction.float(), dim=1))
            out["label"].append(batch.gt_label)
            if batch.gt_mask is not None:
                size = images.shape[-2:]
                out["mask"].append(F.interpolate(batch.gt_mask[:, None].float(), size=size, mode="nearest")[:, 0])
    return {key: torch.cat(values) for key, values in out.items() if values}


def feature_map(distance: str, statistics: dict[str, torch.Tensor], ridge: float = 0.0) -> Callable:
    """F per tap cell under ``distance``, as a function of the residual; upsampled to the input size by the caller."""

    def apply(residual: torch.Tensor) -> torch.Tensor:
        if distance == "l2":
            return torch.linalg.vector_norm(residual, dim=1)
        centred = residual - statistics["mean"]
        if distance == "centred":
            return torch.linalg.vector_norm(centred, dim=1)
        variance = statistics["var"] + ridge * statistics["var"].mean()
        return torch.linalg.vector_norm(centred * variance.rsqrt(), dim=1)

    return apply


def upsample(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False), as the model's scoring step."""
    return F.interpolate(cells[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def image_scores(anomaly_map: torch.Tensor, how: str) -> torch.Tensor:
    """Image score of each map: its max (Eq. 10), the max of the σ = 4 smoothed map, or the mean of the top 1 %.

    The model's own ``AnomalyMapGenerator.image_score``, so the figures are what ``image_score_top_ratio`` gives.
    """
    if how == "max_sigma4":
        anomaly_map = GaussianBlur2d(sigma=4.0, channels=1)(anomaly_map[:, None])[:, 0]
    ratio = 0.01 if how == "top1pct" else 0.0
    return AnomalyMapGenerator(image_score_top_ratio=ratio).image_score(anomaly_map)


def evaluate(anomaly_map: torch.Tensor, scores: torch.Tensor, test: dict[str, torch.Tensor]) -> dict[str, float]:
    """Image AUROC of ``scores``, pixel AUROC (every 2nd row and column) and AUPRO of ``anomaly_map``."""
    mask = test["mask"].bool()
    aupro = _AUPRO()
    aupro.update(anomaly_map, mask.int())
    return {
        "image_AUROC": rank_auroc(scores, test["label"]),
        "pixel_AUROC": rank_auroc(anomaly_map[:, ::2, ::2], mask[:, ::2, ::2]),
        "AUPRO": float(aupro.compute()),
    }


class Rescorer:
    """Score the test set of ``sets`` under one candidate after another; keep a row per candidate."""

    def __init__(self, sets: dict[str, dict[str, torch.Tensor]]) -> None:
        self.sets, self.test = sets, sets["test"]
        self.size = tuple(self.test["R"].shape[-2:])
        self.rows: list[dict[str, object]] = []

    def standardised_f(self, distance: str, source: str, ridge: float) -> torch.Tensor:
        """F of the test images under ``distance``, standardised by its pixel mean/std on the ``source`` images."""
        reference = self.sets[source]["residual"].double()
        statistics = {"mean": reference.mean(0).float(), "var": reference.var(0, unbiased=False).float()}
        apply = feature_map(distance, statistics, ridge)
        normal_f = upsample(apply(self.sets[source]["residual"]), self.size)
        return (upsample(apply(self.test["residual"]), self.size) - normal_f.mean()) / normal_f.std()

    def candidate(
        self,
        name: str,
        distance: str,
        source: str,
        ridge: float = 0.0,
        lam: float = 0.6,
        how: str = "max",
        mix: float = 0.0,
    ) -> None:
        """Fuse F (blended with the L2 F by ``mix``) with R at ``lam``, score, evaluate and keep the row."""
        z_f = self.standardised_f(distance, source, ridge)
        if mix:  # the standardised Mahalanobis F blended into the standardised L2 F
            z_f = mix * z_f + (1 - mix) * self.standardised_f("l2", source, 0.0)
        normal_r = self.sets[source]["R"]
        z_r = (self.test["R"] - normal_r.mean()) / normal_r.std()
        anomaly_map = lam * z_f + (1 - lam) * z_r
        row = {"candidate": name, "distance": distance, "ridge": ridge, "mix": mix, "statistics": source, "lambda": lam}
        row |= {"image_score": how, **evaluate(anomaly_map, image_scores(anomaly_map, how), self.test)}
        self.rows.append(row)
        print(" | ".join(f"{value:.3f}" if isinstance(value, float) else str(value) for value in row.values()))


def run_candidates(rescorer: Rescorer) -> None:
    """Every candidate of the module docstring, in the order of BENCHMARKS.md's table."""
    candidate = rescorer.candidate
    candidate("L2 (default)", "l2", "fit")
    candidate("L2, stats held-out", "l2", "held-out")
    candidate("L2, max σ=4", "l2", "fit", how="max_sigma4")
    candidate("L2, top 1 %", "l2", "fit", how="top1pct")
    candidate("centred L2", "centred", "fit")
    for ridge in RIDGES:
        candidate(f"Mahalanobis ε={ridge:g}", "mahalanobis", "fit", ridge=ridge)
    if len(rescorer.sets["held-out"]["R"]) >= 20:  # per-cell variances from fewer images are noise
        candidate("Mahalanobis ε=0.001, stats held-out", "mahalanobis", "held-out", ridge=1e-3)
    candidate("Mahalanobis ε=0.001, top 1 %", "mahalanobis", "fit", ridge=1e-3, how="top1pct")
    candidate("Mahalanobis ε=0.3, top 1 %", "mahalanobis", "fit", ridge=0.3, how="top1pct")
    for mix in (0.25, 0.5, 0.75):
        candidate(f"L2 + Mahalanobis ε=0.001, α={mix:g}", "mahalanobis", "fit", ridge=1e-3, mix=mix)
        candidate(f"L2 + Mahalanobis ε=0.001, α={mix:g}, top 1 %", "mahalanobis", "fit", 1e-3, mix=mix, how="top1pct")
    for lam in (0.1, 0.3, 0.5, 0.7, 0.9):
        candidate(f"L2, λ={lam:g}", "l2", "fit", lam=lam)


def load_sets(args: argparse.Namespace) -> dict[str, dict[str, torch.Tensor]]:
    """Residuals of the fitted, held-out and test images (from ``--cache`` when it exists)."""
    if args.cache is not None and args.cache.is_file():
        return torch.load(args.cache)
    model = Fegan.load_from_checkpoint(args.checkpoint, map_location="cpu")
    datamodule = MVTecAD(root=args.root, category=args.category, eval_batch_size=16, train_batch_size=16)
    datamodule.num_workers = 0
    datamodule.setup("fit")
    datamodule.setup("test")
    fitted, held_out = random_split(datamodule.train_data, args.holdout_ratio, seed=args.seed)
    sets = {
        "fit": residuals(model, DataLoader(fitted, batch_size=16, collate_fn=fitted.collate_fn)),
        "held-out": residuals(model, DataLoader(held_out, batch_size=16, collate_fn=held_out.collate_fn)),
        "test": residuals(model, datamodule.test_dataloader()),
    }
    if args.cache is not None:
        torch.save(sets, args.cache)
    return sets


def main() -> None:
    """Split the training images as the run did, score the test set under every candidate, write the rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the run's PlantedValidation seed (its split)")
    parser.add_argument("--holdout-ratio", type=float, default=0.2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, help="keep the residuals here (a .pt file) and read them back next time")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sets = load_sets(args)
    print(f"{args.category} seed {args.seed}: {len(sets['fit']['R'])} fit / {len(sets['held-out']['R'])} held-out")
    rescorer = Rescorer(sets)
    run_candidates(rescorer)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rescorer.rows[0]))
        writer.writeheader()
        writer.writerows(rescorer.rows)


if __name__ == "__main__":
    main()
