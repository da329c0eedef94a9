"""Overlay the test curves of several ``learning_curves.py`` runs (one variant each) in one figure.

    python benchmarks/plot_curves.py OUT.png RUN_DIR[=LABEL] [RUN_DIR[=LABEL] ...] [--column-suffix lambda1_sigma0]

Each RUN_DIR holds ``test_curve.csv`` (and ``summary.json``; the first one with PaDiM's metrics
draws PaDiM's line). Plots image and pixel AUROC of the fused map S (λ=0.6, σ=0) by default, dashed
F alone, and prints a Markdown table of the last epoch of each run.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib as mpl
import pandas as pd

mpl.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def main() -> None:
    """Draw the overlay and print the last-epoch table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    figure, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    padim = None
    print(
        "| run | epochs | image AUROC S | pixel AUROC S | image AUROC F | pixel AUROC F | image AUROC R | "
        "pixel AUROC R | S σ=4 image / pixel | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for index, spec in enumerate(args.runs):
        folder, _, label = spec.partition("=")
        folder = Path(folder)
        label = label or folder.name
        table = pd.read_csv(folder / "test_curve.csv")
        summary_path = folder / "summary.json"
        if padim is None and summary_path.is_file():
            padim = json.loads(summary_path.read_text()).get("padim")
        colour = f"C{index}"
        for axis, level in zip(axes, ("image", "pixel"), strict=True):
            epochs = table["epoch"] + 1
            axis.plot(epochs, table[f"{level}_AUROC_lambda0.6_sigma0"], marker="o", color=colour, label=f"{label}: S")
            axis.plot(epochs, table[f"{level}_AUROC_lambda1_sigma0"], ls="--", color=colour, label=f"{label}: F only")
        last = table.iloc[-1]
        print(
            f"| {label} | {int(last['epoch']) + 1} | {last['image_AUROC_lambda0.6_sigma0']:.3f} | "
            f"{last['pixel_AUROC_lambda0.6_sigma0']:.3f} | {last['image_AUROC_lambda1_sigma0']:.3f} | "
            f"{last['pixel_AUROC_lambda1_sigma0']:.3f} | {last['image_AUROC_lambda0_sigma0']:.3f} | "
            f"{last['pixel_AUROC_lambda0_sigma0']:.3f} | {last['image_AUROC_lambda0.6_sigma4']:.3f} / "
            f"{last['pixel_AUROC_lambda0.6_sigma4']:.3f} | {last['train_seconds']:.0f} |"
        )
    for axis, level in zip(axes, ("image", "pixel"), strict=True):
        if padim:
            axis.axhline(padim[f"{level}_AUROC"], color="k", ls="-.", label="PaDiM, same backbone")
        axis.set_title(f"{args.title}: test {level} AUROC" if args.title else f"test {level} AUROC")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    # one legend below both panels, where it hides no curve
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(labels) / 3), 1, 1))
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
