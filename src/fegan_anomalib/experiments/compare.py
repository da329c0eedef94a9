"""``fegan-compare``: FEGAN beside PaDiM, PatchCore and DRAEM under one stated budget, quality and cost.

    fegan-compare --root DATA --categories hazelnut_mini magnetic_tile \
        --weights standin_vgg16bn.pth --image-size 128 --out compare_results

For every category it trains and tests FEGAN, PaDiM, PatchCore and DRAEM, each in its own process (see
``fegan_anomalib.experiments.runs``), and writes ``results.csv``, ``results.md`` and ``results.png``: image and
pixel AUROC, AUPRO, both IoUs, training seconds per image, inference ms per image (torch and
OpenVINO FP32, batch 1, whole pipeline), peak RSS, model size, and the weights each model ran with.

The epoch budget is given in training images seen (``--fegan-images``, ``--draem-images``), turned
into whole epochs per category (at least one), so a small set gets more epochs than a large one.
PaDiM and PatchCore always fit in one epoch. With ``--weights`` (a torchvision VGG16-BN state dict, e.g.
the stand-in from ``fegan-build-weights``) FEGAN uses it as FEN cut at ``relu4_3`` and PaDiM and PatchCore
use the same network as their backbone; without it all three start from random weights. DRAEM trains from scratch,
with DTD textures when ``--dtd-dir`` is given, else anomalib's Perlin-noise sources.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path
from typing import Any

from fegan_anomalib.experiments.runs import run_in_subprocess
from fegan_anomalib.experiments.tables import grouped_bars, markdown_table, new_figure, save_figure, write_csv
from fegan_anomalib.experiments.weights import STANDIN_FEN
from fegan_anomalib.image_io import list_images

MODELS = ("Fegan", "BenchPadim", "BenchPatchcore", "BenchDraem")
LABELS = {"Fegan": "FEGAN", "BenchPadim": "PaDiM", "BenchPatchcore": "PatchCore", "BenchDraem": "DRAEM"}
COLUMNS = (
    ("image_AUROC", "image AUROC", ".3f"),
    ("pixel_AUROC", "pixel AUROC", ".3f"),
    ("pixel_AUPRO", "AUPRO", ".3f"),
    ("pixel_BestIoU", "BestIoU (oracle)", ".3f"),
    ("pixel_ThresholdIoU", "ThresholdIoU (threshold from validation = test set: oracle)", ".3f"),
    ("epochs", "epochs", "d"),
    ("train_seconds_per_image", "train s/img", ".3f"),
    ("fit_seconds", "fit s", ".0f"),
    ("torch_ms_per_image", "torch ms/img", ".0f"),
    ("openvino_ms_per_image", "OpenVINO ms/img", ".0f"),
    ("peak_rss_mb", "peak RSS MB", ".0f"),
    ("torch_weights_mb", "torch weights MB", ".1f"),
    ("openvino_ir_mb", "IR MB", ".1f"),
)


def count_train_images(root: Path, category: str) -> int:
    """Count the normal training images of an MVTec-layout category; raise if there are none."""
    folder = root / category / "train" / "good"
    images = list_images(folder) if folder.is_dir() else []
    if not images:
        msg = f"No training images in {folder}. Point --root at an MVTec-layout folder (<root>/<category>/train/good)."
        raise FileNotFoundError(msg)
    return len(images)


def epochs_for(images_budget: int, train_images: int) -> int:
    """Whole epochs that see at least ``images_budget`` training images (never fewer than one)."""
    return max(1, math.ceil(images_budget / train_images))


def model_specs(args: argparse.Namespace, train_images: int) -> dict[str, dict[str, Any]]:
    """Build the three models' ``get_model`` specs and the weights condition each runs with."""
    size = args.image_size
    if args.weights:
        fegan_weights = {**STANDIN_FEN, "weights": str(args.weights)}
        fegan_condition = padim_condition = patchcore_condition = "stand-in VGG16-BN"
    else:
        fegan_weights = {"pre_trained": False}
        fegan_condition, padim_condition, patchcore_condition = "random VGG19", "random ResNet-18", "random WRN-50-2"
    return {
        "Fegan": {
            "class_path": "Fegan",
            "init_args": {
                "image_size": size,
                "max_epochs": epochs_for(args.fegan_images, train_images),
                "visualizer": False,
                **fegan_weights,
                **args.fegan_args,
            },
            "condition": ", ".join([fegan_condition, *(f"{key}={value}" for key, value in args.fegan_args.items())]),
        },
        "BenchPadim": {
            "class_path": "BenchPadim",
            "init_args": {
                "image_size": size,
                "pre_trained": False,
                "weights": str(args.weights) if args.weights else None,
                "visualizer": False,
            },
            "condition": padim_condition,
        },
        "BenchPatchcore": {
            "class_path": "BenchPatchcore",
            "init_args": {
                "image_size": size,
                "pre_trained": False,
                "weights": str(args.weights) if args.weights else None,
                "visualizer": False,
                **args.patchcore_args,
            },
            "condition": ", ".join(
                [patchcore_condition, *(f"{key}={value}" for key, value in args.patchcore_args.items())]
            ),
        },
        "BenchDraem": {
            "class_path": "BenchDraem",
            "init_args": {
                "image_size": size,
                "max_epochs": epochs_for(args.draem_images, train_images),
                "dtd_dir": str(args.dtd_dir) if args.dtd_dir else None,
                "visualizer": False,
            },
            "condition": "from scratch, " + ("DTD sources" if args.dtd_dir else "Perlin-noise sources (no DTD)"),
        },
    }


def _format(value: Any, spec: str) -> str:
    if value is None or value == "":
        return "–"
    return format(int(value), spec) if spec == "d" else format(float(value), spec)


def write_tables(rows: list[dict[str, Any]], out: Path, header: str) -> None:
    """Write results.csv (every field) and results.md (one table per category, ratios to DRAEM)."""
    fields = sorted({key for row in rows for key in row}, key=lambda k: (k not in {"category", "model"}, k))
    write_csv(rows, out / "results.csv", fields)
    lines = [header, ""]
    for category in dict.fromkeys(row["category"] for row in rows):
        group = [row for row in rows if row["category"] == category]
        cells = [
            [LABELS[row["model"]], row["condition"], f"failed: {row['error']}"]
            if "error" in row
            else [LABELS[row["model"]], row["condition"], *(_format(row.get(key), spec) for key, _, spec in COLUMNS)]
            for row in group
        ]
        lines += [f"### {category}", "", markdown_table(["model", "weights", *(c[1] for c in COLUMNS)], cells)]
        by_model = {row["model"]: row for row in group if "error" not in row}
        fegan, draem = by_model.get("Fegan"), by_model.get("BenchDraem")
        if fegan and draem:
            lines += [
                "",
                f"FEGAN vs DRAEM: training {draem['train_seconds_per_image'] / fegan['train_seconds_per_image']:.1f}x "
                f"faster per image; inference {draem['torch_ms_per_image'] / fegan['torch_ms_per_image']:.1f}x faster "
                f"(torch), {draem['openvino_ms_per_image'] / fegan['openvino_ms_per_image']:.1f}x (OpenVINO).",
            ]
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))


def write_chart(rows: list[dict[str, Any]], out: Path) -> None:
    """Draw grouped bars per category: pixel AUROC, image AUROC, training s/img, OpenVINO ms/img (no bar: no result)."""
    good = [row for row in rows if "error" not in row]
    categories = list(dict.fromkeys(row["category"] for row in good))
    panels = [
        ("pixel_AUROC", "pixel AUROC"),
        ("image_AUROC", "image AUROC"),
        ("train_seconds_per_image", "training s/image"),
        ("openvino_ms_per_image", "OpenVINO ms/image"),
    ]
    figure, axes = new_figure(len(panels))
    for axis, (key, title) in zip(axes, panels, strict=True):
        series = {
            LABELS[model]: [
                next(
                    (float(r.get(key, "nan")) for r in good if r["model"] == model and r["category"] == c), float("nan")
                )
                for c in categories
            ]
            for model in MODELS
            if any(row["model"] == model for row in good)  # only the models this run compared
        }
        grouped_bars(axis, categories, series, title)
    axes[0].legend(fontsize=8)
    save_figure(figure, out / "results.png")


def main(argv: list[str] | None = None) -> None:
    """Parse the budget, run every (category, model), write the tables and the chart."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="MVTec-layout data root")
    parser.add_argument("--categories", nargs="+", required=True)
    parser.add_argument("--weights", type=Path, default=None, help="torchvision VGG16-BN state dict (stand-in)")
    parser.add_argument("--dtd-dir", type=Path, default=None, help="DTD images for DRAEM (default: noise sources)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8, help="training batch; DRAEM needs <= 8 on 24 GiB")
    parser.add_argument("--fegan-images", type=int, default=1000, help="training images FEGAN sees per category")
    parser.add_argument("--draem-images", type=int, default=250, help="training images DRAEM sees per category")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--fegan-args",
        type=json.loads,
        default={},
        help="JSON of further Fegan arguments (named in the condition column), "
        """e.g. '{"feature_distance": "mahalanobis"}'""",
    )
    parser.add_argument(
        "--patchcore-args",
        type=json.loads,
        default={},
        help="JSON of further BenchPatchcore arguments (named in the condition column), "
        """e.g. '{"coreset_sampling_ratio": 0.01, "vgg16_bn_stages": "late"}'""",
    )
    parser.add_argument("--out", type=Path, default=Path("compare_results"))
    args = parser.parse_args(argv)
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} does not exist (build it with fegan-build-weights, or omit it)")
    if args.dtd_dir is not None and not args.dtd_dir.is_dir():
        parser.error(f"--dtd-dir {args.dtd_dir} does not exist (omit it to use noise sources)")

    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for category in args.categories:
        specs = model_specs(args, count_train_images(args.root, category))
        for name in args.models:
            spec = specs[name]
            job = {
                "model": {"class_path": spec["class_path"], "init_args": spec["init_args"]},
                "data": {
                    "root": str(args.root),
                    "category": category,
                    "train_batch_size": args.batch_size,
                    "eval_batch_size": args.batch_size,
                },
                "seed": args.seed,
                "measure_speed": True,
            }
            print(f"[fegan-compare] {category}: {LABELS[name]} ({spec['condition']}) ...", flush=True)
            try:
                result = run_in_subprocess(job, args.out / "runs" / category / name)
            except RuntimeError as error:  # a failed model is a row that says so, the others still run
                print(error, flush=True)
                result = {"model": name, "category": category, "error": str(error).splitlines()[0]}
            rows.append({**result, "model": name, "condition": spec["condition"]})
            print(f"[fegan-compare]   { ({k: rows[-1].get(k) for k in ('pixel_AUROC', 'fit_seconds')}) }", flush=True)
            write_tables(rows, args.out, _header(args))
    write_chart(rows, args.out)
    print(f"[fegan-compare] wrote {args.out / 'results.md'}, results.csv, results.png")


def cpu_name() -> str:
    """Return the CPU's model name (Linux), else what the platform says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _header(args: argparse.Namespace) -> str:
    import os  # noqa: PLC0415

    import torch  # noqa: PLC0415

    return (
        f"Budget: {args.image_size}x{args.image_size}, batch {args.batch_size}, FEGAN {args.fegan_images} / DRAEM "
        f"{args.draem_images} training images per category (whole epochs), PaDiM and PatchCore one epoch, "
        f"seed {args.seed}. "
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, no GPU. "
        "Inference: batch 1, whole pipeline (resize, model, post-processing), median; OpenVINO FP32 (f32 hint)."
    )


if __name__ == "__main__":
    main()
