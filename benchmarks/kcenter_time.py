"""Time the memory's k-center coreset: the model's ``memory.k_center_greedy`` beside anomalib's ``KCenterGreedy``.

    python benchmarks/kcenter_time.py [--cells 81920] [--dims 512] [--sizes 1024 4096 16384]

The default ``feature_distance="mahalanobis+nearest"`` [A7c] chooses its memory from the fitted training cells
(magnetic_tile at 128², relu4_3: 320 images x 256 cells = 81,920 rows of 512 channels) at every measurement of
the statistics. The search does not depend on the values, only on the shapes, so random rows time it as the
real residuals would. anomalib's sampler (PatchCore's) is timed on its first ``--anomalib-centres`` centres and
its per-centre cost extrapolated: it forms the full (cells x dims) difference for each centre.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from anomalib.models.components.sampling import KCenterGreedy

from fegan_anomalib.models.fegan.scoring.memory import k_center_greedy


def main() -> None:
    """Print seconds per coreset size, for this CPU and thread count."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=81920)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--anomalib-centres", type=int, default=200)
    args = parser.parse_args()
    rows = torch.randn(args.cells, args.dims, generator=torch.Generator().manual_seed(0))
    print(f"{args.cells} rows x {args.dims} dims, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    for size in args.sizes:
        start = time.perf_counter()
        chosen = k_center_greedy(rows, size, torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
        assert chosen.numel() == size
        print(f"memory.k_center_greedy -> {size:>6}: {seconds:8.2f} s ({1000 * seconds / size:.2f} ms per centre)")

    sampler = KCenterGreedy(embedding=rows, sampling_ratio=args.anomalib_centres / args.cells)
    start = time.perf_counter()
    sampler.select_coreset_idxs()
    per_centre = (time.perf_counter() - start) / sampler.coreset_size
    print(
        f"anomalib KCenterGreedy, {sampler.coreset_size} centres: {1000 * per_centre:.1f} ms per centre "
        f"(-> {', '.join(f'{size}: ~{per_centre * size:.0f} s' for size in args.sizes)}, extrapolated)"
    )


if __name__ == "__main__":
    main()
