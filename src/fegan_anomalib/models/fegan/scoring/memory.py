"""The nearest-neighbour memory of ``feature_distance="nearest"`` **[A7c]**: search and coreset.

F of a cell is the distance of its residual θ*(x) − θ(x) (averaged with its 3×3 neighbours) to the nearest
residual of any cell of the normal training images: no statistic belongs to a position, so a part turned or
shifted between images scores as it would in place (PatchCore's idea, on FEGAN's own signal). The memory holds
at most ``memory_size`` training cells, chosen by k-center greedy: each next cell is the one farthest from those
already kept, so rare normal patterns stay covered where a random subset drops them (measured in BENCHMARKS.md,
"The memory: size, coreset, cost").

Why not anomalib's ``KCenterGreedy`` (PatchCore's): it forms the full (cells × dims) difference for every centre it adds
(minutes for a 4,096-row memory on a 2-core CPU; ``benchmarks/kcenter_time.py``), prints a progress bar per call and
draws its first centre and projection from the global random state, which a validation inside a fit must not touch.
The same algorithm here keeps the squared norms and adds one matrix-vector product per centre, on a seeded Gaussian
projection to 128 dimensions.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812

# the nearest-neighbour search compares the cells with this many memory rows at a time: a fixed number of
# chunks whatever the batch (an exported graph keeps a dynamic batch), and (cells × 4096) floats at the peak
MEMORY_CHUNK = 4096
# k-center greedy measures distances in a random projection of this many dimensions (Johnson-Lindenstrauss)
PROJECTION_DIMS = 128
# ``density_reweighting``: a memory row's spacing is its mean distance to this many nearest other rows (PatchCore's
# b = 9 neighbourhood of a memory row, itself included)
SPACING_NEIGHBOURS = 8


def nearest_distance(
    cells: torch.Tensor,
    memory: torch.Tensor,
    cell_images: torch.Tensor | None = None,
    memory_images: torch.Tensor | None = None,
    spacing: torch.Tensor | None = None,
) -> torch.Tensor:
    """Euclidean distance of each row of ``cells`` (N, C) to its nearest row of ``memory`` (M, C).

    With image ids, rows of the same image are left out: a training image's own cells are in the memory, and
    its F must be measured as a new image's would be (for ``train_stats``). With ``spacing`` (M,), each distance is
    divided by its nearest row's (:func:`memory_spacing`). ``‖x‖² − 2x·m + ‖m‖²`` rather than
    ``torch.cdist``, which ONNX cannot export (as anomalib's PatchCore does). Always in float32: under bf16 or
    fp16 autocast the products would lose the small differences of large norms, or overflow fp16's 65504.
    """
    if torch.is_autocast_enabled(cells.device.type):  # never while exporting: the graph holds no autocast region
        with torch.autocast(cells.device.type, enabled=False):
            return nearest_distance(cells, memory, cell_images, memory_images, spacing)
    cells = cells.float()
    squared_cells = cells.square().sum(1, keepdim=True)
    nearest, index = None, None
    for start in range(0, memory.shape[0], MEMORY_CHUNK):
        chunk = memory[start : start + MEMORY_CHUNK].float()
        squared = squared_cells - 2 * cells @ chunk.T + chunk.square().sum(1)
        if cell_images is not None and memory_images is not None:
            own = cell_images[:, None] == memory_images[None, start : start + MEMORY_CHUNK]
            squared = squared.masked_fill(own, float("inf"))
        if spacing is None:
            least = squared.amin(1)
            nearest = least if nearest is None else torch.minimum(nearest, least)
            continue
        least, which = squared.min(1)
        which = which + start
        if nearest is None:
            nearest, index = least, which
        else:
            closer = least < nearest
            nearest, index = torch.where(closer, least, nearest), torch.where(closer, which, index)
    distance = nearest.clamp_min(0).sqrt()
    return distance if spacing is None else distance / spacing[index]


def memory_spacing(memory: torch.Tensor, neighbours: int = SPACING_NEIGHBOURS) -> torch.Tensor:
    """(M,) each memory row's mean distance to its ``neighbours`` nearest other rows: how densely normal cells lie.

    A cell's nearest distance divided by its nearest row's spacing (``density_reweighting``) is large where normal
    cells lie close together and the cell still stands off, small in a sparse region of the memory, where the
    coreset spaced its rows wide because normal cells vary there (PatchCore's density re-weighting of the nearest
    distance, read per cell as a local outlier factor). Floored at 1e-3 of the mean spacing: rows repeated in a memory
    kept whole (a flat background) would otherwise divide by the rounding of ``‖x‖² − 2x·m + ‖m‖²``. Over the whole
    memory, a training image's own rows included: the statistics leave an image's own rows out of its search, not out
    of the spacing of the row it finds, so its training distances can come out a little larger than a new image's.
    Always in float32, as :func:`nearest_distance`.
    """
    if torch.is_autocast_enabled(memory.device.type):
        with torch.autocast(memory.device.type, enabled=False):
            return memory_spacing(memory, neighbours)
    rows = memory.shape[0]
    if rows < 2:  # one row: no neighbour to measure a density by; every distance is divided by 1
        return memory.new_ones(rows)
    count = min(neighbours, rows - 1)
    memory = memory.float()
    squared_rows = memory.square().sum(1)
    spacing = []
    for start in range(0, rows, MEMORY_CHUNK):
        chunk = memory[start : start + MEMORY_CHUNK]
        squared = (squared_rows[start : start + MEMORY_CHUNK, None] - 2 * chunk @ memory.T + squared_rows).clamp_min(0)
        squared[torch.arange(chunk.shape[0]), torch.arange(start, start + chunk.shape[0])] = float("inf")  # itself
        spacing.append(squared.topk(count, dim=1, largest=False).values.sqrt().mean(1))
    spacing = torch.cat(spacing)
    return spacing.clamp_min(1e-3 * float(spacing.mean()) + 1e-12)


def neighbourhood(cells: torch.Tensor) -> torch.Tensor:
    """Average each (B, C, h, w) cell with its 3×3 neighbours (PatchCore's local aggregation, borders not padded)."""
    return F.avg_pool2d(cells, 3, stride=1, padding=1, count_include_pad=False)


@torch.no_grad()
def k_center_greedy(rows: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Choose ``size`` rows of ``rows`` (N, C), each next the farthest from those chosen; return their indices.

    All of them when N <= size; fewer than ``size`` when every row is already at distance 0 of a chosen one (fewer
    distinct rows than ``size``: a further pick would repeat a row).

    Distances in a seeded Gaussian projection to ``PROJECTION_DIMS`` dimensions; the first row is drawn from
    ``generator``. Sorted, so the memory keeps the rows' order.
    """
    count = rows.shape[0]
    if count <= size:
        return torch.arange(count)
    projection = torch.randn(rows.shape[1], PROJECTION_DIMS, generator=generator) / PROJECTION_DIMS**0.5
    points = rows.float() @ projection.to(rows.device)
    squared = points.square().sum(1)
    chosen = torch.empty(size, dtype=torch.long, device=rows.device)
    chosen[0] = int(torch.randint(count, (), generator=generator))
    nearest = torch.full((count,), float("inf"), device=rows.device)
    nearest[chosen[0]] = 0.0
    # ‖p‖² − 2p·c + ‖c‖² leaves a row equal to a chosen one at a rounding distance, not 0: below this, check exactly
    rounding = 1e-3 * float(squared.max())
    for index in range(1, size):
        centre = points[chosen[index - 1]]
        distance = squared - 2 * (points @ centre) + centre.square().sum()
        torch.minimum(nearest, distance, out=nearest)
        farthest = nearest.argmax()
        if nearest[farthest] <= rounding and (points[chosen[:index]] - points[farthest]).square().sum(1).min() == 0:
            return chosen[:index].sort().values.cpu()  # every row equals a chosen one: a further pick would repeat one
        chosen[index] = farthest
        nearest[farthest] = 0.0
    return chosen.sort().values.cpu()
