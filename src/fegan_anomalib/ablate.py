"""``fegan-ablate``: rerun FEGAN's ablations (paper Tables 5-7) on your own data with one command.

    fegan-ablate --tables 7 5 6 --root ../shared/data --categories magnetic_tile \
        [--weights standin_vgg16bn.pth] [--max-epochs 1] [--image-size 128] --out ablation_results [--resume]

Each row of a table is a config file in ``configs/ablation/table<N>/`` that overrides
``configs/ablation/base.yaml`` (the same pair ``anomalib train --config base --config row`` takes).
Every row is trained and tested in its own process (``fegan_anomalib.runs``); rows whose merged
arguments are identical (the full model is a row of all three tables) run once. Output, per
table: ``table<N>.md`` and ``table<N>.csv`` in the paper's shape (a row per variant, a column per
metric, categories side by side) and, for the M-SE area sweep, ``table5.png``; plus
``ablations.md`` with all tables and the budget. ``--paper FILE`` (CSV: table,row,metric,value)
adds the paper's numbers beside each measured one.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import yaml

from fegan_anomalib.runs import run_in_subprocess

TABLES: dict[int, tuple[str, list[tuple[str, str]]]] = {
    7: (
        "Table 7: contribution of each component",
        [
            ("g", "G"),
            ("g_mse", "G + M-SE"),
            ("g_d_mse", "G + D + M-SE"),
            ("g_fen_mse", "G + FEN + M-SE"),
            ("full", "FEGAN (G + FEN + D + M-SE)"),
        ],
    ),
    5: (
        "Table 5: M-SE area ratio",
        [(f"area_{area:03d}", f"{area} %") for area in (1, 5, 10, 20, 30, 50, 70, 100)],
    ),
    6: (
        "Table 6: augmentation strategy (20 % of the image altered)",
        [
            ("cutout", "Cutout"),
            ("cutout_colour", "Cutout-colour"),
            ("riad", "RIAD"),
            ("scadn", "SCADN"),
            ("m_se", "M-SE"),
        ],
    ),
}
METRICS = (("image_AUROC", "image AUROC"), ("pixel_AUROC", "pixel AUROC"), ("pixel_AUPRO", "AUPRO"))
DEFAULT_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ablation"


def load_config(path: Path) -> dict[str, Any]:
    """Read one YAML config; raise naming the file when it is missing or not a mapping."""
    if not path.is_file():
        msg = f"Ablation config {path} does not exist. Pass --configs pointing at the repository's configs/ablation."
        raise FileNotFoundError(msg)
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        msg = f"{path} is not a YAML mapping."
        raise ValueError(msg)
    return config


def row_init_args(base: dict[str, Any], row: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge the model arguments: base config, then the row's file, then the command line."""
    base_model, row_model = base.get("model", {}), row.get("model", {})
    if row_model.get("class_path", base_model.get("class_path")) not in {"Fegan", "FEGAN", "fegan_anomalib.Fegan"}:
        msg = "Ablation configs must configure the Fegan model."
        raise ValueError(msg)
    return {**base_model.get("init_args", {}), **row_model.get("init_args", {}), **overrides}


def read_paper(path: Path | None) -> dict[tuple[int, str, str], float]:
    """Read the paper's numbers (CSV: table,row,metric,value), if given."""
    if path is None:
        return {}
    with path.open() as handle:
        return {(int(r["table"]), r["row"], r["metric"]): float(r["value"]) for r in csv.DictReader(handle)}


def table_markdown(
    table: int,
    results: dict[tuple[str, str], dict[str, Any]],
    categories: list[str],
    paper: dict[tuple[int, str, str], float],
) -> str:
    """Render one table: a row per variant, measured metrics per category (and the paper's, if given)."""
    title, rows = TABLES[table]
    header = ["variant"]
    for category in categories:
        header += [f"{label} ({category})" for _, label in METRICS]
    if paper:
        header += [f"paper {label}" for _, label in METRICS]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for key, label in rows:
        cells = [label]
        for category in categories:
            result = results.get((key, category), {})
            cells += [f"{result[m]:.3f}" if m in result else "failed" for m, _ in METRICS]
        if paper:
            cells += [f"{paper[(table, key, m)]:.3f}" if (table, key, m) in paper else "–" for m, _ in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_area_chart(results: dict[tuple[str, str], dict[str, Any]], categories: list[str], out: Path) -> None:
    """Line chart of the Table 5 sweep: AUROC against the M-SE area ratio."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for category in categories:
        for metric, label in METRICS[:2]:
            points = [
                (int(key.split("_")[1]), results[(key, category)][metric])
                for key, _ in TABLES[5][1]
                if metric in results.get((key, category), {})
            ]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=f"{label}, {category}")
    axis.set_xlabel("M-SE area ratio (% of the image)")
    axis.set_ylabel("AUROC")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "table5.png", dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:  # noqa: PLR0915 - one flat script
    """Run the chosen tables and write their Markdown, CSV and chart."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", type=int, default=[7, 5, 6], choices=sorted(TABLES))
    parser.add_argument("--root", type=Path, default=None, help="MVTec-layout data root (default: the base config's)")
    parser.add_argument("--categories", nargs="+", default=None, help="default: the base config's category")
    parser.add_argument("--configs", type=Path, default=DEFAULT_CONFIGS, help="folder with base.yaml and table<N>/")
    parser.add_argument("--weights", type=Path, default=None, help="VGG16-BN state dict: FEN = it, cut at relu5_2")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--paper", type=Path, default=None, help="CSV table,row,metric,value of the paper's numbers")
    parser.add_argument("--out", type=Path, default=Path("ablation_results"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse rows already finished in --out/runs with the same arguments (a stopped sweep goes on)",
    )
    args = parser.parse_args(argv)
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} does not exist")

    base = load_config(args.configs / "base.yaml")
    data_args = base.get("data", {}).get("init_args", {})
    root = args.root or Path(data_args.get("root", "."))
    categories = args.categories or [data_args.get("category")]
    overrides: dict[str, Any] = {}
    if args.weights is not None:
        overrides |= {"backbone": "vgg16_bn", "tap": "relu5_2", "weights": str(args.weights.resolve())}
    if args.max_epochs is not None:
        overrides["max_epochs"] = args.max_epochs
    if args.image_size is not None:
        overrides["image_size"] = args.image_size
    paper = read_paper(args.paper)
    args.out.mkdir(parents=True, exist_ok=True)

    done: dict[str, dict[str, Any]] = {}  # merged arguments + category -> result: identical rows run once
    sections = []
    for table in args.tables:
        results: dict[tuple[str, str], dict[str, Any]] = {}
        csv_rows = []
        for key, label in TABLES[table][1]:
            init_args = row_init_args(base, load_config(args.configs / f"table{table}" / f"{key}.yaml"), overrides)
            for category in categories:
                identity = json.dumps([init_args, category], sort_keys=True)
                if identity not in done:
                    job = {
                        "model": {"class_path": "Fegan", "init_args": init_args},
                        "data": {**data_args, "root": str(root), "category": category},
                        "seed": base.get("seed_everything", 42),
                        "measure_speed": False,
                    }
                    print(f"[fegan-ablate] table {table}, {label}, {category} ...", flush=True)
                    try:
                        folder = args.out / "runs" / f"table{table}" / key / category
                        done[identity] = run_in_subprocess(job, folder, reuse=args.resume)
                    except RuntimeError as error:  # a failed row says so in the table; the others still run
                        print(error, flush=True)
                        done[identity] = {}
                results[(key, category)] = done[identity]
                metrics = {m: done[identity].get(m) for m, _ in METRICS}
                csv_rows.append({"table": table, "row": key, "variant": label, "category": category, **metrics})
                print(f"[fegan-ablate]   {label}, {category}: {metrics}", flush=True)
        with (args.out / f"table{table}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(csv_rows[0]))
            writer.writeheader()
            writer.writerows(csv_rows)
        sections.append(table_markdown(table, results, categories, paper))
        (args.out / f"table{table}.md").write_text(sections[-1])
        if table == 5:
            write_area_chart(results, categories, args.out)
    budget = {k: v for k, v in row_init_args(base, {}, overrides).items() if k in {"image_size", "max_epochs"}}
    weights = f"stand-in VGG16-BN ({args.weights}) cut at relu5_2" if args.weights else "random-init VGG19"
    header = (
        f"Data: {root} {', '.join(categories)}. Budget: {budget}, batch {data_args.get('train_batch_size')}, "
        f"seed {base.get('seed_everything', 42)}, CPU. Weights: {weights}.\n"
    )
    (args.out / "ablations.md").write_text(header + "\n" + "\n".join(sections))
    print(f"[fegan-ablate] wrote {args.out / 'ablations.md'}")


if __name__ == "__main__":
    main()
