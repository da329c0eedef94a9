"""The statistics FEGAN's score is standardised by, measured on the normal training images.

:func:`measure_statistics` takes the torch model and the clean (un-augmented) training images, batch by batch, each
image with an id that is the same on every process; it never sees a trainer. Who calls it and when (before a fit's
validation, at the end of a fit, when a test or predict starts with statistics a new setting needs) is the Lightning
module's business; it supplies the batches (``lightning_model.Fegan.statistics_batches``) and, under DDP, a
:class:`Reduce` over the ranks. What is measured, per option:

- ``feature_distance`` with ``"mahalanobis"`` **[A7b]**: per tap cell and channel, the mean and variance of the raw
  residual θ*(x) − θ(x) (a pass of its own: the next one needs them);
- with ``"nearest"`` **[A7c]**: the memory, a k-center coreset of at most ``memory_size`` training cells (3×3-averaged
  residuals). The cells it chooses from are all of them up to ``RESERVOIR_FACTOR × memory_size``, else a uniform subset
  by a random key per cell drawn from the image's id, so host memory stays bounded and every process, whatever images
  it saw, keeps the same cells; they are gathered and put in id order before the coreset, so the memory is the same on
  every process and equals one process's;
- ``component_norm="train_stats"`` **[A7]**: the pixel mean and std of R (every image) and F (the first
  ``STATS_IMAGES`` ids when F has a memory: each cell's search against the whole memory is the slow part), and for
  ``"mahalanobis+nearest"`` each half's mean and std, by which it is standardised before the sum.

F's statistics are measured as a new image's F would be: each image left out of what it is compared with. Its own
cells are masked in the memory (a cell's distance to itself is 0), and the per-cell mean and variance it is
standardised by are the other images' (exact, from the sums), so both halves of the hybrid are on the same footing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

import torch

from .anomaly_map import floored_variance, residual_map
from .memory import nearest_distance

if TYPE_CHECKING:
    from ..torch_model import FeganModel

logger = logging.getLogger(__name__)

# images whose F the train_stats of a model with a memory are measured on (by id): 64 × 256 cells at 128²
# (1M pixels) pin a mean and std, and each cell's search against the whole memory is the slow part on CPU
STATS_IMAGES = 64
MEMORY_SEED = 0  # the cells' random keys and the coreset's start: the same training images give the same memory
RESERVOIR_FACTOR = 16  # cells offered to the coreset: 16 × 4,096 × 512 channels × 4 bytes = 128 MB at the default


class CleanBatch(NamedTuple):
    """Pre-processed clean training images in [0, 1], their FEN tap features (or ``None``: computed here), their ids.

    ``ids`` (B,) are the images' places in the pass's order over the whole training set: the same image has the same
    id on every process, and each image comes once, on one process.
    """

    images: torch.Tensor
    fen_features: torch.Tensor | None
    ids: torch.Tensor


class Reduce:
    """Combine what each process measured; one process: the identity. ``Fegan`` gives one over its DDP strategy."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return the sum over processes."""
        return tensor

    def cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return the processes' rows (first dimension) one after the other; their numbers of rows may differ."""
        return tensor


def measure_statistics(
    model: FeganModel, batches: Iterable[CleanBatch], reduce: Reduce | None = None, *, leave_out: bool = True
) -> None:
    """Measure every statistic the model's score needs on ``batches`` (iterated once per pass), in eval mode.

    ``leave_out=False`` standardises the per-cell half in-sample (each image inside its own mean and variance), as
    0.3.0.dev0 did; it exists so ``benchmarks/rescore.py`` can measure the difference (BENCHMARKS.md).
    """
    generator = model.anomaly_map_generator
    if not generator.measures_train_stats:
        return
    reduce = reduce or Reduce()
    with model.evaluating(), torch.no_grad():
        sums = _per_cell_statistics(model, batches, reduce) if generator.per_cell else None
        if generator.position_free or generator.component_norm == "train_stats":
            _measure_pass(model, batches, reduce, sums if leave_out else None)


def _per_cell_statistics(model: FeganModel, batches: Iterable[CleanBatch], reduce: Reduce) -> _Sums:
    """Store the per-cell mean and variance of the raw residual over every image; return its sums (leave-one-out)."""
    generator = model.anomaly_map_generator
    sums, count = None, 0
    for batch in batches:
        fen, encoder_features, _ = model.scored_features(batch.images, batch.fen_features, reconstruct=False)
        moments = generator.feature_residual_moments(fen, encoder_features)
        sums = moments if sums is None else sums + moments
        count += batch.images.shape[0]
    device = model.mean.device
    sums = sums if sums is not None else torch.zeros(2, *generator.feature_shape, dtype=torch.float64, device=device)
    sums = reduce.sum(sums)
    count = int(reduce.sum(torch.tensor(float(count), device=device)))
    if count < 2:
        msg = (
            f"FEGAN's per-cell score (feature_distance={generator.feature_distance!r}) needs at least 2 normal "
            f"training images, so that each is measured against the others as a new image would be; got {count}. "
            "Add normal images to the training set, or use feature_distance='nearest' or 'l2'."
        )
        raise ValueError(msg)
    generator.set_feature_residual_stats(sums, count)
    return _Sums(sums, count)


class _Sums(NamedTuple):
    """(sum, sum of squares) of the raw residual per cell and channel, (2, C, h, w) float64, over ``count`` images."""

    moments: torch.Tensor
    count: int


def _cell_halves(
    model: FeganModel, fen: torch.Tensor, encoder_features: torch.Tensor, sums: _Sums | None
) -> dict[str, torch.Tensor]:
    """Return the distances F is built from, per cell, but the memory: each image left out of the per-cell statistics.

    With ``sums``, image i is standardised by the others' mean and variance, ``(S − r_i) / (n − 1)``: exact, and what a
    new image meets. Without, by the stored statistics (in-sample).
    """
    generator = model.anomaly_map_generator
    if not generator.per_cell:
        if generator.feature_distance == "l2":
            return generator.cell_distances(fen, encoder_features)
        return {}
    residual = fen.double() - encoder_features.double()
    if sums is None:
        mean, variance = generator.feature_residual_mean.double(), generator.feature_residual_inv_std.double().pow(-2)
    else:
        others = sums.count - 1
        mean = (sums.moments[0] - residual) / others
        variance = floored_variance(((sums.moments[1] - residual.square()) / others - mean.square()).clamp_min(0.0))
    return {"mahalanobis": generator.mahalanobis(residual, mean, variance).float()}


def _measure_pass(model: FeganModel, batches: Iterable[CleanBatch], reduce: Reduce, sums: _Sums | None) -> None:
    """R's moments over every image, the memory, and F's statistics on the images they are measured on."""
    generator = model.anomaly_map_generator
    reservoir = _Reservoir(RESERVOIR_FACTOR * generator.memory_size) if generator.position_free else None
    needs_f = generator.component_norm == "train_stats" or (generator.per_cell and generator.position_free)
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (fen, encoder, ids) searched after the pass
    distances: list[dict[str, torch.Tensor]] = []
    r_moments = torch.zeros(3, dtype=torch.float64)
    for batch in batches:
        fen, encoder_features, reconstruction = model.scored_features(batch.images, batch.fen_features)
        r_moments += pixel_moments(residual_map(batch.images, reconstruction)).cpu()
        if fen is None:
            continue
        if reservoir is None:
            distances.append(_cell_halves(model, fen, encoder_features, sums))
            continue
        reservoir.offer(generator.memory_cells(fen, encoder_features), batch.ids)
        chosen = batch.ids < STATS_IMAGES
        if needs_f and bool(chosen.any()):
            kept.append((fen[chosen].float(), encoder_features[chosen].float(), batch.ids[chosen]))
    if reservoir is not None:
        rows, memory_ids = reservoir.gathered(reduce, generator.feature_shape)
        keep = generator.set_memory(rows, torch.Generator().manual_seed(MEMORY_SEED))
        memory_ids = memory_ids[keep].to(rows.device)
        distances += [_with_nearest(model, *images, memory_ids, sums) for images in kept]
        distances = [d for d in distances if d]  # images with no other image's cell in the memory
        if needs_f and int(reduce.sum(torch.tensor(float(len(distances)), device=rows.device))) == 0:
            msg = (
                f"FEGAN's memory (memory_size={generator.memory_size}) holds the cells of one training image only, "
                "so no image could be measured against the others as a new image would be. Add normal training "
                "images, or raise memory_size."
            )
            raise ValueError(msg)
    if generator.per_cell and generator.position_free:
        _store_distance_statistics(model, distances, reduce)
    if generator.component_norm == "train_stats":
        feature = torch.zeros(3, dtype=torch.float64)
        for halves in distances:
            cell_map = generator.combine(halves)
            feature += pixel_moments(generator.upsample(cell_map, model.image_size)).cpu()
        device = model.mean.device
        r_stats = mean_std(reduce.sum(r_moments.to(device)).cpu())
        f_stats = mean_std(reduce.sum(feature.to(device)).cpu()) if model.use_fen else None
        generator.set_train_stats(r_stats, f_stats)


def _with_nearest(
    model: FeganModel,
    fen: torch.Tensor,
    encoder_features: torch.Tensor,
    ids: torch.Tensor,
    memory_ids: torch.Tensor,
    sums: _Sums | None,
) -> dict[str, torch.Tensor]:
    """Both halves of F for images kept during the pass, each image's own cells masked in the memory.

    Images none of whose neighbours is another image's (a memory of one image's cells) have no new-image distance:
    they are dropped, and :func:`_store_distance_statistics` refuses if none is left.
    """
    generator = model.anomaly_map_generator
    batch, _, height, width = encoder_features.shape
    cells = generator.memory_cells(fen, encoder_features)
    own = ids.to(cells.device).repeat_interleave(height * width)
    nearest = nearest_distance(cells, generator.memory_bank, own, memory_ids, generator.spacing)
    nearest = nearest.view(batch, 1, height, width)
    finite = torch.isfinite(nearest).flatten(1).all(1)
    if not bool(finite.any()):
        return {}
    halves = _cell_halves(model, fen[finite], encoder_features[finite], sums)
    return {**halves, "nearest": nearest[finite]}


def _store_distance_statistics(model: FeganModel, distances: list[dict[str, torch.Tensor]], reduce: Reduce) -> None:
    """Each half's (mean, std) over the measured images' cells, summed over processes (``"mahalanobis+nearest"``)."""
    generator = model.anomaly_map_generator
    moments = torch.zeros(2, 3, dtype=torch.float64)
    for halves in distances:
        moments += torch.stack([pixel_moments(halves[name]).cpu() for name in ("mahalanobis", "nearest")])
    moments = reduce.sum(moments.to(model.mean.device)).cpu()
    generator.distance_stats.copy_(torch.tensor([mean_std(row) for row in moments]))


def pixel_moments(values: torch.Tensor) -> torch.Tensor:
    """(sum, sum of squares, count) in float64."""
    values = values.double()
    count = torch.tensor(values.numel(), dtype=torch.float64, device=values.device)
    return torch.stack([values.sum(), values.square().sum(), count])


def mean_std(moments: torch.Tensor) -> tuple[float, float]:
    """(mean, population std) from :func:`pixel_moments` summed."""
    mean = moments[0] / moments[2]
    return float(mean), float((moments[1] / moments[2] - mean.square()).clamp_min(1e-12).sqrt())


class _Reservoir:
    """A uniform random subset of at most ``size`` memory cells of everything offered, by the smallest random keys.

    A cell's key is drawn from its image's id (``MEMORY_SEED``), not from the order of the pass, so every process keeps
    the cells that one process would keep of the same images.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.keys = torch.empty(0, dtype=torch.float64)
        self.cells = torch.empty(0, dtype=torch.long)  # global cell index: image id × cells per image + cell
        self.rows: torch.Tensor | None = None

    def offer(self, rows: torch.Tensor, ids: torch.Tensor) -> None:
        """Add one batch's (B·h·w, C) rows of the images ``ids``."""
        per_image = rows.shape[0] // ids.shape[0]
        seeds = (MEMORY_SEED * 1_000_003 + int(i) for i in ids)
        keys = [torch.rand(per_image, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
        cells = (ids.cpu()[:, None] * per_image + torch.arange(per_image)).flatten()
        self.keys, self.cells = torch.cat([self.keys, *keys]), torch.cat([self.cells, cells])
        self.rows = rows if self.rows is None else torch.cat([self.rows, rows])
        if self.keys.shape[0] > self.size:
            self._keep(self.keys.topk(self.size, largest=False).indices)

    def _keep(self, index: torch.Tensor) -> None:
        self.keys, self.cells = self.keys[index], self.cells[index]
        self.rows = self.rows[index.to(self.rows.device)]

    def gathered(self, reduce: Reduce, feature_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every process's cells merged by key, in global cell order: (rows (N, C), their image ids (N,))."""
        channels, height, width = feature_shape
        rows = self.rows if self.rows is not None else torch.empty(0, channels)
        device = rows.device
        self.keys, self.cells = reduce.cat(self.keys.to(device)).cpu(), reduce.cat(self.cells.to(device)).cpu()
        self.rows = reduce.cat(rows)
        if self.keys.shape[0] > self.size:
            self._keep(self.keys.topk(self.size, largest=False).indices)
        self._keep(self.cells.argsort())
        return self.rows, self.cells // (height * width)
