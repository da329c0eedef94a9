"""The statistics FEGAN's score is standardised by, measured on the normal training images during fit.

Scoring's business, not the recipe's: ``Fegan`` calls :func:`measure_scoring_statistics` before a validation of a
fit when the weights have changed since the last measurement, and at the end of a fit whose last steps no
validation saw, so the thresholds validation learns are on the final scale and the final weights are never scored
with an earlier epoch's statistics. Over the clean (un-augmented) training images, FEN features from the cache,
sums reduced over DDP ranks:

- ``feature_distance="mahalanobis"`` or ``"mahalanobis+nearest"`` **[A7b]**: per tap cell and channel, the mean and
  std of θ*(x) − θ(x) (a pass of its own, before the next one needs them);
- ``feature_distance="nearest"`` or ``"mahalanobis+nearest"`` **[A7c]**: the memory, a k-center coreset of at most
  ``memory_size`` of the training cells' 3×3-averaged residuals (``memory.k_center_greedy``). The cells it chooses
  from are all of them up to ``RESERVOIR_FACTOR × memory_size``, else a uniform subset of that many drawn with a
  seeded key per cell (a reservoir, so host memory stays bounded; under DDP the ranks' reservoirs are gathered
  and the smallest keys kept, and every rank computes the same coreset);
- ``component_norm="train_stats"`` **[A7]**: the pixel mean and std of R and F (after the above, so F's moments
  are in its final units). With the memory, F is measured on the first ``NEAREST_STATS_IMAGES`` images of the pass,
  each against the memory without its own cells (a training cell's distance to itself is 0, a new image's is not),
  and so are the hybrid's two distances' means and stds, by which it standardises each before their sum.

Which images: those the generator is fitted to. ``benchmarks/image_score.py`` measured the held-out
alternative (the ``PlantedValidation`` hold-out) on magnetic_tile and hazelnut_mini; it did not help
(BENCHMARKS.md, "Image score").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader, RandomSampler

from .memory import nearest_distance

# images whose F the "nearest" distance's train_stats are measured on: 64 × 256 cells at 128² (1M pixels) pin a
# mean and std, and the search of each cell against the whole memory is the slow part of a measurement on CPU
NEAREST_STATS_IMAGES = 64
MEMORY_SEED = 0  # the memory's random keys and coreset start: the same training images give the same memory
RESERVOIR_FACTOR = 16  # cells offered to the coreset: 16 × 4,096 × 512 channels × 4 bytes = 128 MB at the default


def seeded_order(loader: Any) -> Any:
    """Give the training loader's images in a fixed shuffled order (``MEMORY_SEED``), not the global RNG's.

    The statistics are sums and a coreset: their float rounding follows the order of the pass. Drawn from the
    global RNG, that order would differ between a run and the same run resumed, and the pass would consume the
    global RNG, so whether a validation ran would change the next epoch's shuffle.
    """
    if not isinstance(loader, DataLoader) or not isinstance(loader.sampler, RandomSampler) or not loader.batch_size:
        return loader
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(MEMORY_SEED),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )


def clean_training_batches(module: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Pre-processed clean training images with their FEN features (from the cache), batch by batch."""
    trainer = module.trainer
    datamodule = trainer.datamodule
    for batch in seeded_order(datamodule.train_dataloader() if datamodule else trainer.train_dataloader):
        images = batch.image.to(module.device)
        images = module.pre_processor.transform(images) if module.pre_processor is not None else images
        features = (
            module.fen_cache(images, module.model.fen_features, batch.image_path) if module.model.use_fen else None
        )
        yield images, features


@torch.no_grad()
def measure_feature_residual_stats(module: Any) -> None:
    """Per-cell, per-channel mean and std of θ*(x) − θ(x) over the clean training images (``"mahalanobis"``)."""
    generator, strategy = module.model.anomaly_map_generator, module.trainer.strategy
    sums, count = None, 0
    for images, fen_features in clean_training_batches(module):
        moments = generator.feature_residual_moments(fen_features, module.model.encode(images))
        sums = moments if sums is None else sums + moments
        count += images.shape[0]
    sums = strategy.reduce(sums.to(module.device), reduce_op="sum").cpu()  # over DDP ranks
    count = int(strategy.reduce(torch.tensor(float(count), device=module.device), reduce_op="sum"))
    generator.set_feature_residual_stats(sums.to(module.device), count)


def _pixel_moments(values: torch.Tensor) -> torch.Tensor:
    """(sum, sum of squares, count) in float64."""
    values = values.double()
    count = torch.tensor(values.numel(), dtype=torch.float64, device=values.device)
    return torch.stack([values.sum(), values.square().sum(), count])


def _mean_std(moments: torch.Tensor) -> tuple[float, float]:
    mean = moments[0] / moments[2]
    return float(mean), float((moments[1] / moments[2] - mean.square()).clamp_min(1e-12).sqrt())


class _Reservoir:
    """A uniform random subset of at most ``size`` rows of everything offered, by the smallest random keys."""

    def __init__(self, size: int, seed: int, rank: int) -> None:
        self.size = size
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + rank)
        self.keys = torch.empty(0)
        self.rows: torch.Tensor | None = None
        self.images = torch.empty(0, dtype=torch.long)

    def offer(self, rows: torch.Tensor, images: torch.Tensor) -> None:
        keys = torch.rand(rows.shape[0], generator=self.generator, dtype=torch.float64)
        self.keys = torch.cat([self.keys, keys])
        self.rows = rows if self.rows is None else torch.cat([self.rows, rows])
        self.images = torch.cat([self.images, images])
        if self.keys.shape[0] > self.size:
            keep = self.keys.topk(self.size, largest=False).indices.sort().values
            self.keys, self.images = self.keys[keep], self.images[keep]
            self.rows = self.rows[keep.to(self.rows.device)]


def _gather_memory(module: Any, reservoir: _Reservoir) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the ranks' reservoirs by their keys (one process: the reservoir itself)."""
    if module.trainer.world_size == 1:
        return reservoir.rows, reservoir.images
    size, channels = reservoir.size, reservoir.rows.shape[1]
    padding = size - reservoir.keys.shape[0]  # all_gather needs one shape: pad with keys that never win
    keys = torch.cat([reservoir.keys, torch.full((padding,), 2.0, dtype=torch.float64)]).to(module.device)
    rows = torch.cat([reservoir.rows, reservoir.rows.new_zeros(padding, channels)])
    images = torch.cat([reservoir.images, torch.full((padding,), -1, dtype=torch.long)]).to(module.device)
    keys, rows, images = (module.all_gather(t).flatten(0, 1) for t in (keys, rows, images))
    keep = keys.topk(min(size, int((keys < 2).sum())), largest=False).indices.sort().values
    return rows[keep], images[keep].cpu()


@torch.no_grad()
def measure_nearest(module: Any) -> None:
    """One pass: the memory, R's moments, and F on the first images (the hybrid's distance statistics from them)."""
    model, generator = module.model, module.model.anomaly_map_generator
    rank, world = module.trainer.global_rank, module.trainer.world_size
    reservoir = _Reservoir(RESERVOIR_FACTOR * generator.memory_size, MEMORY_SEED, rank)
    kept: dict[str, list[torch.Tensor]] = {"fen": [], "encoder": [], "images": []}
    r_moments, seen = torch.zeros(3, dtype=torch.float64), 0
    for images, fen_features in clean_training_batches(module):
        encoder_features, reconstruction = model.generate(images)
        cells = generator.memory_cells(fen_features, encoder_features)
        per_image = cells.shape[0] // images.shape[0]
        ids = (torch.arange(images.shape[0]) + seen) * world + rank  # unique over ranks
        reservoir.offer(cells, ids.repeat_interleave(per_image))
        if sum(len(t) for t in kept["images"]) < NEAREST_STATS_IMAGES:
            kept["fen"].append(fen_features.float())
            kept["encoder"].append(encoder_features.float())
            kept["images"].append(ids)
        residual = torch.linalg.vector_norm(model.to_gan_range(images).float() - reconstruction.float(), dim=1)
        r_moments += _pixel_moments(residual).cpu()
        seen += images.shape[0]
    cells_offered, offered_images = _gather_memory(module, reservoir)
    keep = generator.set_memory(cells_offered, torch.Generator().manual_seed(MEMORY_SEED))
    memory_images = offered_images[keep]
    # F of the first images, each against the memory without its own cells (a new image's cells are not in it)
    fen, encoder, images = (torch.cat(kept[key]) for key in ("fen", "encoder", "images"))
    distances = generator.cell_distances(fen, encoder)
    per_image = distances["nearest"][0].numel()
    cells_images = images.repeat_interleave(per_image).to(fen.device)
    nearest = nearest_distance(
        generator.memory_cells(fen, encoder), generator.memory_bank, cells_images, memory_images.to(fen.device)
    )
    distances["nearest"] = nearest.view_as(distances["nearest"])
    strategy = module.trainer.strategy
    if generator.per_cell:  # the hybrid: each distance's mean and std over these cells, reduced over ranks
        moments = torch.stack([_pixel_moments(distances[name]) for name in ("mahalanobis", "nearest")])
        moments = strategy.reduce(moments.to(module.device), reduce_op="sum").cpu()
        generator.distance_stats.copy_(torch.tensor([_mean_std(row) for row in moments]))
    if generator.component_norm != "train_stats":
        return
    feature = F.interpolate(generator.combine(distances), size=model.image_size, mode="bilinear", align_corners=False)
    r_moments = strategy.reduce(r_moments.to(module.device), reduce_op="sum").cpu()
    f_moments = strategy.reduce(_pixel_moments(feature).to(module.device), reduce_op="sum").cpu()
    generator.set_train_stats(_mean_std(r_moments), _mean_std(f_moments))


@torch.no_grad()
def measure_train_stats(module: Any) -> None:
    """Pixel mean and std of R and F over the clean training images (FEN features from the cache)."""
    moments = torch.zeros(5, dtype=torch.float64)
    for images, fen_features in clean_training_batches(module):
        residual, feature, _ = module.model.component_maps(images, fen_features)
        moments += module.model.anomaly_map_generator.moments(residual, feature)
    moments = module.trainer.strategy.reduce(moments.to(module.device), reduce_op="sum").cpu()  # over DDP ranks
    module.model.anomaly_map_generator.set_train_stats_from_moments(moments, module.model.use_fen)


def measure_scoring_statistics(module: Any) -> None:
    """Measure what the score's options need, F's own statistics first (``train_stats`` then sees F's units)."""
    generator = module.model.anomaly_map_generator
    if generator.per_cell:
        measure_feature_residual_stats(module)
    if generator.position_free:
        measure_nearest(module)  # the hybrid's distance statistics and train_stats in the same pass
    elif generator.component_norm == "train_stats":
        measure_train_stats(module)
