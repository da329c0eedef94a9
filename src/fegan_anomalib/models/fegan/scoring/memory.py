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


def nearest_distance(
    cells: torch.Tensor,
    memory: torch.Tensor,
    cell_images: torch.Tensor | None = None,
    memory_images: torch.Tensor | None = None,
) -> torch.Tensor:
    """Euclidean distance of each row of ``cells`` (N, C) to its nearest row of ``memory`` (M, C).

    With image ids, rows of the same image are left out: a training image's own cells are in the memory, and
    its F must be measured as a new image's would be (for ``train_stats``). ``‖x‖² − 2x·m + ‖m‖²`` rather than
    ``torch.cdist``, which ONNX cannot export (as anomalib's PatchCore does). Always in float32: under bf16 or
    fp16 autocast the products would lose the small differences of large norms, or overflow fp16's 65504.
    """
    if torch.is_autocast_enabled(cells.device.type):  # never while exporting: the graph holds no autocast region
        with torch.autocast(cells.device.type, enabled=False):
            return nearest_distance(cells, memory, cell_images, memory_images)
    cells = cells.float()
    squared_cells = cells.square().sum(1, keepdim=True)
    nearest = None
    for start in range(0, memory.shape[0], MEMORY_CHUNK):
        chunk = memory[start : start + MEMORY_CHUNK].float()
        squared = squared_cells - 2 * cells @ chunk.T + chunk.square().sum(1)
        if cell_images is not None and memory_images is not None:
            own = cell_images[:, None] == memory_images[None, start : start + MEMORY_CHUNK]
            squared = squared.masked_fill(own, float("inf"))
        least = squared.amin(1)
        nearest = least if nearest is None else torch.minimum(nearest, least)
    return nearest.clamp_min(0).sqrt()


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
