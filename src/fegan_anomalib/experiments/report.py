"""``fegan-report RUNS_DIR``: per-category tables in the shape of FEGAN's Tables 1-4.

Gathers anomalib test results found under ``RUNS_DIR``:

- ``test_metrics.json`` files that ``SaveTestMetrics`` writes into each ``anomalib train``/``test``
  run folder (FEGAN always; other models with ``--trainer.callbacks+=fegan_anomalib.callbacks.SaveTestMetrics``);
- ``results.csv`` files of anomalib's benchmark pipeline (``anomalib benchmark``).

and writes, for each metric, a table with one row per category, a mean row and one column per
model, as ``report.md`` and ``report.csv``, plus a grouped bar chart ``report.png``. When a
model/category pair was run more than once, the newest result counts.

For every run folder that holds ``test_predictions.csv`` (FEGAN's test runs) it also writes a
self-contained ``report.html`` into that folder (``fegan_anomalib.experiments.run_report``): metrics with the
setting, ROC/PR curves, score histogram with the threshold, learning curves and galleries of the
worst false positives, worst false negatives and best detections. ``--no-html`` skips it.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

from fegan_anomalib.experiments.tables import grouped_bars, markdown_table, new_figure, save_figure, write_csv

METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "pixel_BestIoU", "pixel_ThresholdIoU", "image_F1Score")

Results = dict[tuple[str, str], dict[str, float]]  # (model, category) -> metric -> value


def _short(name: str) -> str:
    return str(name).rsplit(".", 1)[-1]


def _from_json(path: Path) -> tuple[str, str, dict[str, float]]:
    record = json.loads(path.read_text())
    return _short(record["model"]), str(record.get("category") or record.get("data") or "?"), record["metrics"]


def _from_benchmark_csv(path: Path) -> list[tuple[str, str, dict[str, float]]]:
    rows = []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            model = next((v for k, v in row.items() if k in {"model.class_path", "model", "model.name"}), None)
            category = next((v for k, v in row.items() if k.endswith("category")), None)
            if model is None or category is None:
                msg = f"{path}: no model or category column; is it an anomalib benchmark results.csv?"
                raise ValueError(msg)
            metrics = {k: float(v) for k, v in row.items() if k in METRICS and v not in {"", None}}
            rows.append((_short(model), category, metrics))
    return rows


def collect(runs_dir: str | Path) -> Results:
    """Read every result under ``runs_dir``, newest last so it wins."""
    runs_dir = Path(runs_dir)
    files = sorted(
        [*runs_dir.rglob("test_metrics.json"), *runs_dir.rglob("results.csv")],
        key=lambda p: p.stat().st_mtime,
    )
    results: Results = {}
    for path in files:
        records = [_from_json(path)] if path.suffix == ".json" else _from_benchmark_csv(path)
        for model, category, metrics in records:
            results[model, category] = metrics
    if not results:
        msg = f"No test_metrics.json or benchmark results.csv under {runs_dir}."
        raise FileNotFoundError(msg)
    return results


def tables(results: Results) -> dict[str, dict[str, dict[str, float | None]]]:
    """Metric -> category (plus 'mean') -> model -> value."""
    models = sorted({model for model, _ in results})
    categories = sorted({category for _, category in results})
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for metric in METRICS:
        if not any(metric in values for values in results.values()):
            continue
        table: dict[str, dict[str, float | None]] = defaultdict(dict)
        for category in categories:
            for model in models:
                table[category][model] = results.get((model, category), {}).get(metric)
        for model in models:
            values = [table[c][model] for c in categories if table[c][model] is not None]
            table["mean"][model] = sum(values) / len(values) if values else None
        out[metric] = dict(table)
    return out


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def write_report(results: Results, out_dir: str | Path) -> list[Path]:
    """Write report.md, report.csv and report.png into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_tables = tables(results)
    models = sorted({model for model, _ in results})
    lines = ["# Per-category results", ""]
    csv_rows = []
    for metric, table in all_tables.items():
        cells = []
        for category, row in table.items():
            cells.append([f"**{category}**" if category == "mean" else category, *(_fmt(row[m]) for m in models)])
            csv_rows.append({"metric": metric, "category": category, **{m: row[m] for m in models}})
        lines += [f"## {metric}", "", markdown_table(["category", *models], cells), ""]
    write_csv(csv_rows, out_dir / "report.csv", ["metric", "category", *models])
    (out_dir / "report.md").write_text("\n".join(lines))
    shown = [m for m in ("image_AUROC", "pixel_AUROC", "pixel_BestIoU") if m in all_tables]
    figure, axes = new_figure(len(shown), (5.0, 4.0))
    for axis, metric in zip(axes, shown, strict=True):
        categories = list(all_tables[metric])
        series = {model: [all_tables[metric][c][model] or 0.0 for c in categories] for model in models}
        grouped_bars(axis, categories, series, metric)
        axis.set_ylim(0, 1)
    axes[0].legend()
    save_figure(figure, out_dir / "report.png", dpi=100)
    return [out_dir / "report.md", out_dir / "report.csv", out_dir / "report.png"]


def main(argv: list[str] | None = None) -> None:
    """``fegan-report RUNS_DIR [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path, help="folder holding anomalib run folders or benchmark CSVs")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RUNS_DIR)")
    parser.add_argument("--no-html", action="store_true", help="skip report.html in each run folder")
    args = parser.parse_args(argv)
    paths = write_report(collect(args.runs_dir), args.out or args.runs_dir)
    print(paths[0].read_text())
    print("written: " + ", ".join(str(p) for p in paths))
    if not args.no_html:
        from fegan_anomalib.experiments.run_report import write_run_report  # noqa: PLC0415

        for predictions in sorted(Path(args.runs_dir).rglob("test_predictions.csv")):
            print(f"run report: {write_run_report(predictions.parent)}")


if __name__ == "__main__":
    main()
