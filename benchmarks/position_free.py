r"""Score one trained FEGAN checkpoint's F several ways, with and without knowing where things usually are.

0.3 scores F as the per-cell Mahalanobis distance of the residual θ*(x) − θ(x): its mean and variance are
estimated at every tap cell, so the score learns where things usually are, and a part that sits at another angle
or place than in training looks unusual everywhere. Every candidate here is measured on the same trained weights
(scoring only), beside R alone and the fusion S = λ·F + (1 − λ)·R (both standardised by their pixel mean and
std on the fitted images, as ``component_norm="train_stats"``):

- ``cell``: per-cell Mahalanobis with the ridge 0.3 (0.3's default);
- ``pooled``: the same statistics pooled over all cells (per channel, one mean and variance for the frame);
- ``l2``: Eq. 6, the plain L2 norm of the residual;
- ``nn ...``: the distance of each cell to its nearest neighbour in a memory of the fitted images' cells,
  whatever their position (PatchCore's idea on FEGAN's own signal): of the residual (``res``), of the FEN's
  features (``fen``, PatchCore on one layer), or of both side by side (``fen+res``); each channel z-scored with
  the pooled statistics first (``z``) or not, and averaged over each cell's 3×3 neighbourhood first (``3x3``,
  PatchCore's local aggregation) or not. The memory is every fitted cell up to ``--memory`` cells (4096, the
  model's default), else a k-center coreset of that size (the model's own ``memory.k_center_greedy``);
  ``--memory-study`` compares sizes and a random subset;
- ``cell + nn res, 3x3``: the model's default ``feature_distance="mahalanobis+nearest"``, (z_cell + z_nn)/√2, each
  distance z-scored on the fitted cells (the model standardises on the first 64 fitted images, for its cost).

Trained on one set, tested on another (``--test-category``, e.g. the aligned set's model on its unaligned copy).

    python benchmarks/position_free.py --root datasets --category magnetic_tile_unaligned --seed 42 \\
        --checkpoint runs/.../weights/lightning/model.ckpt --out position_free/r2_magnetic_tile_unaligned_s42.csv
    python benchmarks/position_table.py --rescored position_free --prefix r2_ --peers compare/s42 --sets ...

Image AUROC from the map's top 1 % (the model's image score), pixel AUROC on every second row and column, AUPRO.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from anomalib.data import MVTecAD
from anomalib.data.utils import random_split
from image_score import evaluate, image_scores, upsample  # the same metrics as the image-score benchmark
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader

from fegan_anomalib import Fegan
from fegan_anomalib.metrics import rank_auroc
from fegan_anomalib.models.fegan.memory import k_center_greedy

RIDGE = 0.3
LAMBDAS = (1.0, 0.8, 0.6, 0.0)


@torch.no_grad()
def signals(model: Fegan, loader: DataLoader) -> dict[str, torch.Tensor]:
    """FEN features θ*(x), residual θ*(x) − θ(x) (B, C, h, w), R (B, H, W), labels and masks of a loader."""
    out: dict[str, list[torch.Tensor]] = {"fen": [], "residual": [], "R": [], "label": [], "mask": []}
    net = model.model
    with net.evaluating():
        for batch in loader:
            images = model.pre_processor.transform(batch.image)
            encoder, reconstruction = net.generate(images)
            fen = net.fen_features(images).float()
            out["fen"].append(fen)
            out["residual"].append(fen - encoder.float())
            out["R"].append(torch.linalg.vector_norm(net.to_gan_range(images) - reconstruction.float(), dim=1))
            out["label"].append(batch.gt_label)
            if batch.gt_mask is not None:
                size = images.shape[-2:]
                out["mask"].append(F.interpolate(batch.gt_mask[:, None].float(), size=size, mode="nearest")[:, 0])
    return {key: torch.cat(values) for key, values in out.items() if values}


def pooled(cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and variance over every image and cell, (1, C, 1, 1) each."""
    flat = cells.double().transpose(0, 1).flatten(1)
    return flat.mean(1).float().view(1, -1, 1, 1), flat.var(1, unbiased=False).float().view(1, -1, 1, 1)


def nearest_distance(
    queries: torch.Tensor,
    memory: torch.Tensor,
    query_images: torch.Tensor | None = None,
    memory_images: torch.Tensor | None = None,
    chunk: int = 4096,
) -> torch.Tensor:
    """Euclidean distance of each query row to its nearest memory row; with image ids, of another image's rows.

    Leaving a query's own image out is how the fitted images' F is measured (for its standardisation): their cells
    are in the memory, and a cell's distance to itself is 0.
    """
    out = []
    memory_norm = memory.square().sum(1)
    for start in range(0, len(queries), chunk):
        part = queries[start : start + chunk]
        squared = part.square().sum(1, keepdim=True) - 2 * part @ memory.T + memory_norm
        if query_images is not None:
            own = query_images[start : start + chunk, None] == memory_images[None, :]
            squared = squared.masked_fill(own, float("inf"))
        out.append(squared.amin(1).clamp_min(0).sqrt())
    return torch.cat(out)


class Candidates:
    """Build each candidate's F map function from the fitted images' signals."""

    def __init__(self, fit: dict[str, torch.Tensor], memory: int, seed: int) -> None:
        self.fit, self.memory, self.seed = fit, memory, seed
        self.stats = {name: pooled(fit[name]) for name in ("fen", "residual")}
        residual = fit["residual"].double()
        self.cell_mean = residual.mean(0, keepdim=True).float()
        self.cell_var = residual.var(0, unbiased=False, keepdim=True).float()

    def cell(self, signal: dict[str, torch.Tensor]) -> torch.Tensor:
        """0.3's F: per-cell Mahalanobis with the ridge."""
        scale = (self.cell_var + RIDGE * self.cell_var.mean()).rsqrt()
        return torch.linalg.vector_norm((signal["residual"] - self.cell_mean) * scale, dim=1)

    def pooled(self, signal: dict[str, torch.Tensor], ridge: float = RIDGE) -> torch.Tensor:
        """Pool the same statistics over the frame."""
        mean, var = self.stats["residual"]
        return torch.linalg.vector_norm((signal["residual"] - mean) * (var + ridge * var.mean()).rsqrt(), dim=1)

    @staticmethod
    def l2(signal: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 6."""
        return torch.linalg.vector_norm(signal["residual"], dim=1)

    def embed(self, signal: dict[str, torch.Tensor], parts: tuple[str, ...], z: bool, aggregate: bool) -> torch.Tensor:
        """(N, D, h, w) cells of the named signals side by side, optionally z-scored and 3×3-averaged."""
        pieces = []
        for name in parts:
            cells = signal[name]
            if z:
                mean, var = self.stats[name]
                cells = (cells - mean) * (var + 1e-6 * var.mean()).rsqrt() / len(parts) ** 0.5
            pieces.append(cells)
        cells = torch.cat(pieces, 1)
        return F.avg_pool2d(cells, 3, 1, 1, count_include_pad=False) if aggregate else cells

    def nearest(
        self, parts: tuple[str, ...], z: bool, aggregate: bool, memory: int | None = None, sampling: str = "kcenter"
    ) -> Callable:
        """F = distance of each cell to the nearest fitted cell (any position).

        The memory: every fitted cell up to ``memory`` cells, else a k-center greedy coreset of ``memory`` of them (the
        model's own, ``memory.k_center_greedy``) or ``memory`` of them drawn at random (seeded).
        """
        memory = memory or self.memory
        bank = self.embed(self.fit, parts, z, aggregate)
        n, d, h, w = bank.shape
        bank = bank.permute(0, 2, 3, 1).reshape(-1, d)
        images = torch.arange(n).repeat_interleave(h * w)
        if len(bank) > memory:
            if sampling == "kcenter":
                start = time.perf_counter()
                keep = k_center_greedy(bank, memory, torch.Generator().manual_seed(self.seed))
                print(
                    f"k-center greedy, {len(bank)} cells -> {memory}: {time.perf_counter() - start:.1f} s", flush=True
                )
            else:
                keep = torch.randperm(len(bank), generator=torch.Generator().manual_seed(self.seed))[:memory]
            bank, images = bank[keep], images[keep]

        def apply(signal: dict[str, torch.Tensor]) -> torch.Tensor:
            cells = self.embed(signal, parts, z, aggregate)
            n, d, h, w = cells.shape
            own = torch.arange(n).repeat_interleave(h * w) if signal is self.fit else None
            flat = cells.permute(0, 2, 3, 1).reshape(-1, d)
            return nearest_distance(flat, bank, own, images if own is not None else None).view(n, h, w)

        return apply


def standardised(function: Callable, fit: dict[str, torch.Tensor]) -> Callable:
    """Z-score ``function`` by its mean and std over the fitted images' cells."""
    normal = function(fit)
    mean, std = normal.mean(), normal.std()
    return lambda signal: (function(signal) - mean) / std


def hybrid(first: Callable, second: Callable, fit: dict[str, torch.Tensor]) -> Callable:
    """Sum two F maps, each z-scored on the fitted images: where things usually are, and what they look like."""
    first, second = standardised(first, fit), standardised(second, fit)
    cache: dict[int, torch.Tensor] = {}

    def apply(signal: dict[str, torch.Tensor]) -> torch.Tensor:
        key = id(signal)
        if key not in cache:
            cache[key] = (first(signal) + second(signal)) / 2**0.5
        return cache[key]

    return apply


def memoised(function: Callable) -> Callable:
    """Compute ``function`` once per signal (the nearest-neighbour searches are the slow part)."""
    cache: dict[int, torch.Tensor] = {}

    def apply(signal: dict[str, torch.Tensor]) -> torch.Tensor:
        if id(signal) not in cache:
            cache[id(signal)] = function(signal)
        return cache[id(signal)]

    return apply


MEMORY_STUDY = (("kcenter", 16384), ("kcenter", 8192), ("kcenter", 4096), ("random", 16384))


def rows_for(
    fit: dict[str, torch.Tensor],
    test: dict[str, torch.Tensor],
    memory: int,
    seed: int,
    memory_study: bool = False,
    extended: bool = False,
) -> list[dict]:
    """Every candidate's F, R and S figures on the test set (with ``memory_study``: the memory's size and sampling)."""
    candidates = Candidates(fit, memory, seed)
    if memory_study:
        cells = len(fit["R"]) * fit["residual"].shape[-1] * fit["residual"].shape[-2]
        functions = {
            f"nn res, 3x3, {how} {size or cells}": candidates.nearest(("residual",), False, True, size or cells, how)
            for how, size in MEMORY_STUDY
        }
        return score_rows(functions, fit, test, lambdas=(1.0, 0.6))
    nearest = memoised(candidates.nearest(("residual",), False, True))
    functions: dict[str, Callable] = {
        "cell (0.3)": candidates.cell,
        "pooled": candidates.pooled,
        "l2 (Eq. 6)": candidates.l2,
        "nn res, 3x3": nearest,
        "cell + nn res, 3x3": hybrid(candidates.cell, nearest, fit),
    }
    if extended:  # the first round's further candidates (BENCHMARKS.md, "Unaligned parts")
        functions |= {
            "nn res": candidates.nearest(("residual",), False, False),
            "nn res, z, 3x3": candidates.nearest(("residual",), True, True),
            "nn fen, 3x3": candidates.nearest(("fen",), False, True),
            "nn fen+res, 3x3": candidates.nearest(("fen", "residual"), False, True),
        }
    return score_rows(functions, fit, test)


def score_rows(
    functions: dict[str, Callable],
    fit: dict[str, torch.Tensor],
    test: dict[str, torch.Tensor],
    lambdas: tuple[float, ...] = LAMBDAS,
) -> list[dict]:
    """Standardise each F and R on the fitted images, fuse at each λ, and evaluate S on the test set."""
    size = tuple(test["R"].shape[-2:])
    normal_r = fit["R"]
    z_r = (test["R"] - normal_r.mean()) / normal_r.std()
    rows = []
    for name, function in functions.items():
        normal_f = upsample(function(fit), size)
        z_f = (upsample(function(test), size) - normal_f.mean()) / normal_f.std()
        for lam in lambdas:
            if lam == 0.0 and name != "cell (0.3)":
                continue  # R alone once
            anomaly_map = lam * z_f + (1 - lam) * z_r
            row = {"F": name if lam > 0 else "-", "lambda": lam, "image_score": "top1pct"}
            row |= evaluate(anomaly_map, image_scores(anomaly_map, "top1pct"), test)
            # the image decided by F's map alone while S localises (R helps the map, not the decision)
            row["image_AUROC_from_F"] = rank_auroc(image_scores(z_f, "top1pct"), test["label"]) if lam > 0 else None
            rows.append(row)
            print(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()), flush=True)
    return rows


def main() -> None:
    """Split the training images as the run did, score the test set under every candidate, write the rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the run's PlantedValidation seed (its split)")
    parser.add_argument("--holdout-ratio", type=float, default=0.2)
    parser.add_argument(
        "--memory", type=int, default=4096, help="nearest-neighbour memory size in cells (the default's)"
    )
    parser.add_argument(
        "--test-category",
        help="score this category's test set instead (e.g. the unaligned copy of the set the model was trained on)",
    )
    parser.add_argument("--memory-study", action="store_true", help="only nn res 3x3, memory sizes and sampling")
    parser.add_argument("--extended", action="store_true", help="also the first round's nearest-neighbour variants")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = Fegan.load_from_checkpoint(args.checkpoint, map_location="cpu")
    datamodule = MVTecAD(root=args.root, category=args.category, eval_batch_size=16, train_batch_size=16)
    datamodule.num_workers = 0
    datamodule.setup("fit")
    datamodule.setup("test")
    fitted, _ = random_split(datamodule.train_data, args.holdout_ratio, seed=args.seed)
    fit = signals(model, DataLoader(fitted, batch_size=16, collate_fn=fitted.collate_fn))
    if args.test_category:
        datamodule = MVTecAD(root=args.root, category=args.test_category, eval_batch_size=16)
        datamodule.num_workers = 0
        datamodule.setup("test")
    test = signals(model, datamodule.test_dataloader())
    print(f"{args.category} seed {args.seed}: {len(fit['R'])} fitted images, {len(test['R'])} test images")
    rows = rows_for(fit, test, args.memory, args.seed, args.memory_study, args.extended)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
