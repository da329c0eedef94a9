"""Mean ± sd over seeds of ``position_free.py``'s rows, beside PaDiM and PatchCore from ``fegan-compare`` runs.

    python benchmarks/position_table.py --rescored position_free --peers compare/s42 compare/s43 compare/s44 \
        --sets magnetic_tile magnetic_tile_unaligned hazelnut_mini hazelnut_mini_unaligned [--prefix r2_]

Reads ``RESCORED/{prefix}{set}_s{seed}.csv`` for every seed found and each peer folder's ``results.csv``; prints
one Markdown table per set (image / pixel AUROC and AUPRO of each F and λ; the peers below) and a summary of the
default beside the peers on every set.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

METRICS = ("image_AUROC", "pixel_AUROC", "AUPRO")
PEERS = {"BenchPadim": "PaDiM", "BenchPatchcore": "PatchCore"}
DEFAULT = ("cell + nn res, 3x3", 0.8)  # feature_distance="mahalanobis+nearest", feature_map_weight=0.8


def cell(values: pd.Series) -> str:
    """``mean ± sd`` (sample sd) over seeds; the mean alone for one seed."""
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std():.3f}"


def rescored(folder: Path, prefix: str, category: str) -> pd.DataFrame:
    """Every seed's rows for one set, with a ``seed`` column."""
    frames = []
    for path in sorted(folder.glob(f"{prefix}{category}_s*.csv")):
        seed = re.search(r"_s(\d+)\.csv$", path.name)
        frame = pd.read_csv(path)
        frame["seed"] = int(seed.group(1))
        frames.append(frame)
    return pd.concat(frames) if frames else pd.DataFrame()


def peers(folders: list[Path], category: str) -> pd.DataFrame:
    """Return the peers' test metrics of one set, a row per run."""
    frames = [pd.read_csv(folder / "results.csv") for folder in folders if (folder / "results.csv").is_file()]
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames)
    table = table[table.category == category].rename(columns={"pixel_AUPRO": "AUPRO"})
    return table[table.model.isin(PEERS)]


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rescored", type=Path, required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--peers", type=Path, nargs="*", default=[])
    parser.add_argument("--sets", nargs="+", required=True)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 0.8, 0.6])
    args = parser.parse_args()
    summary = []
    for category in args.sets:
        rows = rescored(args.rescored, args.prefix, category)
        if rows.empty:
            continue
        seeds = sorted(rows.seed.unique())
        print(f"\n### {category} (seeds {', '.join(map(str, seeds))})\n")
        print("| F | λ | image AUROC | pixel AUROC | AUPRO |\n|---|---|---|---|---|")
        for (name, lam), group in rows.groupby(["F", "lambda"], sort=False):
            if lam in args.lambdas or name == "-":
                label = "R alone" if name == "-" else name
                print(f"| {label} | {lam:g} | " + " | ".join(cell(group[m]) for m in METRICS) + " |")
        default = rows[(DEFAULT[0] == rows.F) & (rows["lambda"] == DEFAULT[1])]
        summary.append((category, "FEGAN default", [cell(default[m]) for m in METRICS]))
        for model, group in peers(args.peers, category).groupby("model"):
            line = [cell(group[m]) for m in METRICS]
            print(f"| {PEERS[model]} (same backbone) | – | " + " | ".join(line) + " |")
            summary.append((category, PEERS[model], line))
    print("\n| set | model | image AUROC | pixel AUROC | AUPRO |\n|---|---|---|---|---|")
    for category, model, line in summary:
        print(f"| {category} | {model} | " + " | ".join(line) + " |")


if __name__ == "__main__":
    main()
