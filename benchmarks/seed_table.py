"""Mean ± sample sd over seeds of the last epoch of ``learning_curves.py`` runs, one table row per setting.

    python benchmarks/seed_table.py "fp32=curves/s42,curves/s43,curves/s44" "bf16=curves/b42,curves/b43,curves/b44"

Each argument is ``LABEL=RUN_DIR,RUN_DIR,...`` (one run per seed); prints a Markdown table of the
test image / pixel AUROC of the fused map S (λ = 0.6), F alone and R alone at the last epoch, the
per-seed values, S smoothed with σ = 4, and the mean training + validation seconds per epoch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

COLUMNS = {
    "S image": "image_AUROC_lambda0.6_sigma0",
    "S pixel": "pixel_AUROC_lambda0.6_sigma0",
    "F image": "image_AUROC_lambda1_sigma0",
    "F pixel": "pixel_AUROC_lambda1_sigma0",
    "R image": "image_AUROC_lambda0_sigma0",
    "R pixel": "pixel_AUROC_lambda0_sigma0",
    "S σ=4 image": "image_AUROC_lambda0.6_sigma4",
    "S σ=4 pixel": "pixel_AUROC_lambda0.6_sigma4",
}


def last_epochs(folders: list[Path]) -> pd.DataFrame:
    """Return the last row of each run's ``test_curve.csv``, with the seconds per epoch."""
    rows = []
    for folder in folders:
        curve = pd.read_csv(folder / "test_curve.csv")
        row = curve.iloc[-1].to_dict()
        row["seconds_per_epoch"] = row["train_seconds"] / len(curve)
        row["run"] = folder.name
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="+", help="LABEL=RUN_DIR,RUN_DIR,...")
    args = parser.parse_args()
    print("| setting | seeds | epochs | " + " | ".join(f"{name} AUROC" for name in COLUMNS) + " | s/epoch |")
    print("|---" * (len(COLUMNS) + 4) + "|")
    details = []
    for setting in args.settings:
        label, _, runs = setting.partition("=")
        table = last_epochs([Path(run) for run in runs.split(",")])
        cells = [f"{table[c].mean():.3f} ± {table[c].std():.3f}" for c in COLUMNS.values()]
        epochs = int(table["epoch"].iloc[0]) + 1
        seconds = table.seconds_per_epoch.mean()
        print(f"| {label} | {len(table)} | {epochs} | " + " | ".join(cells) + f" | {seconds:.0f} |")
        for _, row in table.iterrows():
            values = ", ".join(f"{name} {row[c]:.3f}" for name, c in COLUMNS.items())
            details.append(f"- {label}, {row['run']}: {values}")
    print("\n" + "\n".join(details))


if __name__ == "__main__":
    main()
