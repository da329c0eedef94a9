"""``fegan-ablate``: rerun FEGAN's ablations (paper Tables 5-7) on your own data with one command.

    fegan-ablate --tables 7 5 6 --root DATA --categories magnetic_tile --seeds 42 43 44 \
        [--weights VGG16BN.pth] [--max-epochs 1] [--image-size 128] [--precision bf16-mixed] \
        --out ablation_results [--resume]

Each row of a table is a config file in ``configs/ablation/table<N>/`` that overrides
``configs/ablation/base.yaml`` (the same pair ``anomalib train --config base --config row`` takes).
Every row is trained and tested in its own process (``fegan_anomalib.experiments.runs``); rows whose merged
arguments are identical (the full model is a row of all three tables) run once. Output, per
table: ``table<N>.md`` and ``table<N>.csv`` in the paper's shape (a row per variant, a column per
metric, categories side by side) and, for the M-SE area sweep, ``table5.png``; ``--tables 9`` is the paper's
Fig. 9 (λ_fea, λ_con, λ_adv each at 1, 10, 30, 90, one varied at a time; ``fig9.png``); plus
``ablations.md`` with all tables and the budget. With several ``--seeds`` each cell is the mean ±
sample standard deviation over seeds. The paper's own image/pixel AUROC stand beside each row, from
the project's copy of its tables (``fegan_anomalib/experiments/paper_tables.csv``; ``--paper none`` drops them).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from fegan_anomalib.experiments.runs import run_in_subprocess
from fegan_anomalib.experiments.tables import markdown_table, new_figure, save_figure, write_csv
from fegan_anomalib.experiments.weights import STANDIN_FEN

AREAS = (1, 5, 10, 20, 30, 50, 70, 100)  # Table 5's M-SE area ratios, % of the image
# Fig. 9's sweep: each loss weight over the paper's range, the other two at their defaults (30 / 30 / 1)
WEIGHTS = ("lambda_fea", "lambda_con", "lambda_adv")
WEIGHT_VALUES = (1, 10, 30, 90)
FIGURE9 = 9  # fegan-ablate's "table" number of the paper's Fig. 9
# Fegan's loss-weight defaults, filled in before rows are compared: a row that sets one to its default is the full model
LOSS_WEIGHT_DEFAULTS = {"lambda_fea": 30.0, "lambda_con": 30.0, "lambda_adv": 1.0}
# the shape of the paper's Fig. 9 (its text; the figure's values are not in its tables), drawn as each panel's title
PAPER_FIG9_SHAPE = {
    "lambda_fea": "rises, then falls",
    "lambda_con": "rises, then falls",
    "lambda_adv": "falls steeply (~0.95 to 0.63)",
}


def run_identity(init_args: dict[str, Any], category: str, seed: int) -> str:
    """Return what makes two rows the same run: merged arguments (loss-weight defaults filled in), data, seed."""
    return json.dumps([{**LOSS_WEIGHT_DEFAULTS, **init_args}, category, seed], sort_keys=True)


def run_folder(out: Path, table: int, key: str, category: str, seed: int) -> Path:
    """Return one run's folder. The seed is always in the path, so a sweep run one seed per sitting resumes.

    (0.3.0.dev0 left it out when one seed was asked: ``--seeds 42`` and a later ``--seeds 42 43 44 --resume``
    named seed 42's run differently, and it was trained again.)
    """
    return out / "runs" / f"table{table}" / key / category / f"seed{seed}"


def area_row(area: int) -> str:
    """Table 5's row key (and config stem, ``configs/ablation/table5/<key>.yaml``) of an area ratio in %."""
    return f"area_{area:03d}"


def weight_row(weight: str, value: int) -> str:
    """Fig. 9's row key (and config stem, ``configs/ablation/table9/<key>.yaml``) of one loss weight's value."""
    return f"{weight}_{value:02d}"


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
        [(area_row(area), f"{area} %") for area in AREAS],
    ),
    FIGURE9: (
        "Fig. 9: loss weights (one varied at a time, the others at 30 / 30 / 1)",
        [(weight_row(weight, value), f"{weight} = {value}") for weight in WEIGHTS for value in WEIGHT_VALUES],
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

PAPER_TABLES = Path(__file__).resolve().parent / "paper_tables.csv"
# the paper's row name (paper_tables.csv) of each ablation row
PAPER_ROWS = {
    (7, "g"): "G (L_con)",
    (7, "g_mse"): "G + M-SE (L_con)",
    (7, "g_d_mse"): "G + D + M-SE (L_con L_adv)",
    (7, "g_fen_mse"): "G + FEN + M-SE (L_con L_fea)",
    (7, "full"): "G + D + FEN + M-SE (all)",
    **{(5, area_row(area)): f"area {area}%" for area in AREAS},
    (6, "cutout"): "Cutout",
    (6, "cutout_colour"): "Cutout (colour)",
    (6, "riad"): "RIAD",
    (6, "scadn"): "SCADN",
    (6, "m_se"): "M-SE",
}


def default_configs() -> Path:
    """Return the Tables 5-7 configs folder: in an installed wheel (force-included), else the clone's ``configs/``."""
    packaged = Path(__file__).resolve().parent / "ablation"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "configs" / "ablation"


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


def read_paper(path: Path | None = PAPER_TABLES) -> dict[tuple[int, str, str], float]:
    """Return the paper's Table 5-7 numbers by (table, ablation row, metric), from ``paper_tables.csv``.

    The file (``table,row,image_AUROC,pixel_AUROC,IoU``, ``#`` comment lines) is the project's copy
    of the paper's figures; ``None`` gives no paper column.
    """
    if path is None:
        return {}
    if not path.is_file():
        msg = f"Paper table {path} does not exist (expected the layout of fegan_anomalib/experiments/paper_tables.csv)."
        raise FileNotFoundError(msg)
    with path.open() as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    by_name = {(r["table"], r["row"]): r for r in rows}
    paper = {}
    for (table, key), name in PAPER_ROWS.items():
        row = by_name.get((str(table), name), {})
        for metric, _ in METRICS:
            if row.get(metric):
                paper[(table, key, metric)] = float(row[metric])
    return paper


def mean_sd(values: list[float]) -> str:
    """``0.650`` for one value, ``0.650 ± 0.030`` (sample standard deviation) for several."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table_markdown(
    table: int,
    results: dict[tuple[str, str], list[dict[str, Any]]],
    categories: list[str],
    paper: dict[tuple[int, str, str], float],
    keys: set[str] | None = None,
) -> str:
    """Render one table: a row per variant (``keys``: only those), metrics per category (mean ± sd), the paper's."""
    title, rows = TABLES[table]
    header = ["variant"]
    for category in categories:
        header += [f"{label} ({category})" for _, label in METRICS]
    if paper:
        header += [f"paper {label}" for _, label in METRICS[:2]]
    table_rows = []
    for key, label in rows:
        if keys is not None and key not in keys:
            continue  # not selected (--rows); a selected row without a result shows "failed"
        cells = [label]
        for category in categories:
            runs = results.get((key, category), [])
            for metric, _ in METRICS:
                values = [run[metric] for run in runs if metric in run]
                cells.append(
                    mean_sd(values) + (" (failed runs)" if len(values) < len(runs) else "") if values else "failed"
                )
        if paper:
            cells += [f"{paper[(table, key, m)]:.3f}" if (table, key, m) in paper else "–" for m, _ in METRICS[:2]]
        table_rows.append(cells)
    return f"### {title}\n\n{markdown_table(header, table_rows)}\n"


def sweep_points(
    results: dict[tuple[str, str], list[dict[str, Any]]], rows: dict[int, str], category: str, metric: str
) -> list[tuple[int, float, float]]:
    """``(x, mean, sample sd)`` of each swept row (``rows``: x -> key) of ``category`` with results (sd 0: one run)."""
    points = []
    for x, key in rows.items():
        values = [run[metric] for run in results.get((key, category), []) if metric in run]
        if values:
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            points.append((x, statistics.mean(values), spread))
    return points


def area_points(
    results: dict[tuple[str, str], list[dict[str, Any]]], category: str, metric: str
) -> list[tuple[int, float, float]]:
    """``(area %, mean, sample sd)`` of each Table 5 row of ``category`` with results; sd 0 for a single run."""
    return sweep_points(results, {area: area_row(area) for area in AREAS}, category, metric)


def write_weight_chart(results: dict[tuple[str, str], list[dict[str, Any]]], categories: list[str], out: Path) -> None:
    """Fig. 9's chart: image and pixel AUROC against each loss weight (log scale), mean ± sd over seeds."""
    figure, axes = new_figure(len(WEIGHTS), (4.0, 3.5), sharey=True)  # one scale: the panels' effects compare
    for axis, weight in zip(axes, WEIGHTS, strict=True):
        for category in categories:
            for metric, label in METRICS[:2]:
                rows = {value: weight_row(weight, value) for value in WEIGHT_VALUES}
                if points := sweep_points(results, rows, category, metric):
                    xs, means, spreads = zip(*points, strict=True)
                    axis.errorbar(xs, means, yerr=spreads, marker="o", capsize=3, label=f"{label}, {category}")
        axis.set_xscale("log")
        axis.set_xticks(WEIGHT_VALUES, labels=[str(value) for value in WEIGHT_VALUES])
        axis.minorticks_off()
        axis.set_xlabel(f"{weight} (log scale; the others at their defaults)")
        axis.set_title(f"paper's Fig. 9: {PAPER_FIG9_SHAPE[weight]}", fontsize=9)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("AUROC (mean ± sd over seeds)")
    if axes[0].get_legend_handles_labels()[0]:  # no point measured yet: nothing to name
        axes[0].legend(fontsize=7)
    save_figure(figure, out / "fig9.png")


def write_area_chart(results: dict[tuple[str, str], list[dict[str, Any]]], categories: list[str], out: Path) -> None:
    """Line chart of the Table 5 sweep: AUROC against the M-SE area ratio, mean with the seeds' sd as error bars."""
    figure, (axis,) = new_figure(1, (5.0, 3.5))
    for category in categories:
        for metric, label in METRICS[:2]:
            if points := area_points(results, category, metric):
                areas, means, spreads = zip(*points, strict=True)
                axis.errorbar(areas, means, yerr=spreads, marker="o", capsize=3, label=f"{label}, {category}")
    axis.set_xscale("log")  # 1, 5 and 10 % would crowd a linear axis
    axis.set_xticks(AREAS, labels=[str(area) for area in AREAS])
    axis.minorticks_off()
    axis.set_xlabel("M-SE area ratio (% of the image, log scale)")
    axis.set_ylabel("AUROC (mean ± sd over seeds)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    save_figure(figure, out / "table5.png")


def main(argv: list[str] | None = None) -> None:  # noqa: PLR0912, PLR0915 - one flat script
    """Run the chosen tables and write their Markdown, CSV and chart."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", type=int, default=[7, 5, 6], choices=sorted(TABLES))
    parser.add_argument("--rows", nargs="+", default=None, help="only these rows (config stems, e.g. full g_mse)")
    parser.add_argument("--root", type=Path, default=None, help="MVTec-layout data root (default: the base config's)")
    parser.add_argument("--categories", nargs="+", default=None, help="default: the base config's category")
    parser.add_argument("--configs", type=Path, default=default_configs(), help="folder with base.yaml and table<N>/")
    parser.add_argument("--weights", type=Path, default=None, help="VGG16-BN state dict: FEN = it, cut at relu4_3")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="one run per seed (default: the base's)")
    parser.add_argument("--precision", default=None, help="Lightning precision of every run (default: the base's)")
    parser.add_argument(
        "--paper",
        type=Path,
        default=PAPER_TABLES,
        help="the paper's figures (layout of experiments/paper_tables.csv, the default); 'none' for no column",
    )
    parser.add_argument("--out", type=Path, default=Path("ablation_results"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse rows already finished in --out/runs with the same arguments (a stopped sweep goes on)",
    )
    args = parser.parse_args(argv)
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} does not exist")
    known = {key for table in args.tables for key, _ in TABLES[table][1]}
    if args.rows is not None and set(args.rows) - known:
        parser.error(f"--rows {sorted(set(args.rows) - known)} are not rows of tables {args.tables}: {sorted(known)}")

    base = load_config(args.configs / "base.yaml")
    data_args = base.get("data", {}).get("init_args", {})
    root = args.root or Path(data_args.get("root", "."))
    categories = args.categories or [data_args.get("category")]
    overrides: dict[str, Any] = {}
    if args.weights is not None:
        overrides |= {**STANDIN_FEN, "weights": str(args.weights.resolve())}
    if args.max_epochs is not None:
        overrides["max_epochs"] = args.max_epochs
    if args.image_size is not None:
        overrides["image_size"] = args.image_size
    paper = read_paper(None if str(args.paper) == "none" else args.paper)
    seeds = args.seeds or [base.get("seed_everything", 42)]
    precision = args.precision or base.get("trainer", {}).get("precision", "32-true")
    args.out.mkdir(parents=True, exist_ok=True)

    done: dict[str, dict[str, Any]] = {}  # merged arguments + category + seed -> result: identical rows run once
    sections = []
    for table in args.tables:
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        csv_rows = []
        selected = [(key, label) for key, label in TABLES[table][1] if args.rows is None or key in args.rows]
        if not selected:
            continue
        for key, label in selected:
            init_args = row_init_args(base, load_config(args.configs / f"table{table}" / f"{key}.yaml"), overrides)
            for category in categories:
                results[(key, category)] = []
                for seed in seeds:
                    identity = run_identity(init_args, category, seed)
                    if identity not in done:
                        job = {
                            "model": {"class_path": "Fegan", "init_args": init_args},
                            "data": {**data_args, "root": str(root), "category": category},
                            "seed": seed,
                            "precision": precision,
                            "measure_speed": False,
                        }
                        print(f"[fegan-ablate] table {table}, {label}, {category}, seed {seed} ...", flush=True)
                        folder = run_folder(args.out, table, key, category, seed)
                        try:
                            done[identity] = run_in_subprocess(job, folder, reuse=args.resume)
                        except RuntimeError as error:  # a failed row says so in the table; the others still run
                            print(error, flush=True)
                            done[identity] = {}
                    results[(key, category)].append(done[identity])
                    metrics = {m: done[identity].get(m) for m, _ in METRICS}
                    row = {"table": table, "row": key, "variant": label, "category": category, "seed": seed}
                    csv_rows.append({**row, **metrics})
                    print(f"[fegan-ablate]   {label}, {category}, seed {seed}: {metrics}", flush=True)
        write_csv(csv_rows, args.out / f"table{table}.csv")
        sections.append(table_markdown(table, results, categories, paper, {key for key, _ in selected}))
        (args.out / f"table{table}.md").write_text(sections[-1])
        if table == 5:
            write_area_chart(results, categories, args.out)
        if table == FIGURE9:
            write_weight_chart(results, categories, args.out)
    base_args = row_init_args(base, {}, overrides)
    budget = {k: v for k, v in base_args.items() if k in {"image_size", "max_epochs"}}
    tap = base_args.get("tap", "relu4_4")
    weights = f"stand-in VGG16-BN ({args.weights}) cut at {tap}" if args.weights else f"random-init VGG19 cut at {tap}"
    header = (
        f"Data: {root} {', '.join(categories)}. Budget: {budget}, batch {data_args.get('train_batch_size')}, "
        f"seeds {', '.join(map(str, seeds))} (mean ± sample sd over seeds), precision {precision}, CPU. "
        f"Weights: {weights}.\n"
    )
    (args.out / "ablations.md").write_text(header + "\n" + "\n".join(sections))
    print(f"[fegan-ablate] wrote {args.out / 'ablations.md'}")


if __name__ == "__main__":
    main()
