"""One self-contained ``report.html`` per run: what an inspection engineer looks at after a test.

Reads what ``SaveTestMetrics`` leaves in a run folder (``test_metrics.json``,
``test_predictions.csv``, ``test_pixel_histogram.csv``), the visualizer's four-panel figures
(image, ground truth, heat map, segmentation) and, when the run has them, its learning curves, and
writes one HTML file with every image embedded (readable offline, no server, no network):

- the metrics with the data, image size, epochs and weights that produced them;
- image and pixel ROC and PR curves;
- the score histogram of normal and defective test images with the decision threshold;
- the learning curves;
- galleries: the worst false positives (normal images scored highest above the threshold), the worst
  false negatives (defective images scored lowest below it) and the best detections.

anomalib has metrics and per-image figures but no page that puts them together or that says which
images the model gets wrong; matplotlib and Jinja2 come with anomalib.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

THRESHOLD = 0.5  # anomalib's post-processor puts the validation threshold at 0.5 of the normalised score
GALLERY_SIZE = 6


@dataclass
class Prediction:
    """One test image as the run scored it."""

    image: str
    gt_label: int
    pred_score: float
    pred_label: int
    figure: str


def read_predictions(run_dir: Path) -> list[Prediction]:
    """Read ``test_predictions.csv``; raise naming the file and the fix when it is missing."""
    path = run_dir / "test_predictions.csv"
    if not path.is_file():
        msg = (
            f"{path} does not exist: report.html needs a test run with fegan_anomalib.callbacks.SaveTestMetrics "
            f"(FEGAN adds it; other models: --trainer.callbacks+=fegan_anomalib.callbacks.SaveTestMetrics)."
        )
        raise FileNotFoundError(msg)
    with path.open() as handle:
        return [
            Prediction(
                row["image"],
                int(row["gt_label"]),
                float(row["pred_score"]),
                int(row["pred_label"]),
                row["figure"],
            )
            for row in csv.DictReader(handle)
        ]


def galleries(predictions: list[Prediction], size: int = GALLERY_SIZE) -> dict[str, list[Prediction]]:
    """Worst false positives, worst false negatives, best detections and the highest-scored normal parts.

    The last shows what a normal part looks like on the heat map's scale, also when none crossed the threshold.
    """
    normal = [p for p in predictions if p.gt_label == 0]
    defective = [p for p in predictions if p.gt_label == 1]
    return {
        "false_positives": sorted((p for p in normal if p.pred_label == 1), key=lambda p: -p.pred_score)[:size],
        "normal_parts": sorted((p for p in normal if p.pred_label == 0), key=lambda p: -p.pred_score)[: size // 2],
        "false_negatives": sorted((p for p in defective if p.pred_label == 0), key=lambda p: p.pred_score)[:size],
        "best_detections": sorted((p for p in defective if p.pred_label == 1), key=lambda p: -p.pred_score)[:size],
    }


def roc_pr(negatives: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, ...]:
    """ROC (fpr, tpr) and PR (recall, precision) from per-threshold counts, highest threshold first."""
    tp, fp = np.cumsum(positives[::-1]), np.cumsum(negatives[::-1])
    tpr, fpr = tp / max(tp[-1], 1), fp / max(fp[-1], 1)
    precision = tp / np.maximum(tp + fp, 1)
    return np.r_[0, fpr], np.r_[0, tpr], np.r_[0, tpr], np.r_[1, precision]


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _file_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def curves_figure(predictions: list[Prediction], histogram: np.ndarray | None) -> str:
    """Image and pixel ROC and PR curves, one figure."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4))
    scores = np.array([p.pred_score for p in predictions])
    labels = np.array([p.gt_label for p in predictions])
    order = np.sort(np.unique(scores))
    negatives = np.array([np.sum((scores == s) & (labels == 0)) for s in order], dtype=float)
    positives = np.array([np.sum((scores == s) & (labels == 1)) for s in order], dtype=float)
    sets = [("image", negatives, positives)]
    if histogram is not None:
        sets.append(("pixel", histogram[:, 1], histogram[:, 2]))
    for name, neg, pos in sets:
        fpr, tpr, recall, precision = roc_pr(neg, pos)
        roc_axis.plot(fpr, tpr, label=f"{name} (AUROC {_auc(fpr, tpr):.3f})")
        pr_axis.plot(recall, precision, label=f"{name} (AUPR {_auc(recall, precision):.3f})")
    roc_axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr_axis.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    for axis in (roc_axis, pr_axis):
        axis.legend(loc="lower right" if axis is roc_axis else "lower left")
        axis.grid(alpha=0.3)
    return _png(figure)


def histogram_figure(predictions: list[Prediction]) -> str:
    """Score histogram of normal vs defective test images, with the decision threshold."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axis = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(0, 1, 41)
    for label, name, colour in ((0, "normal", "tab:green"), (1, "defective", "tab:red")):
        values = [p.pred_score for p in predictions if p.gt_label == label]
        axis.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{name} ({len(values)})")
    axis.axvline(THRESHOLD, color="black", linestyle="--", label=f"threshold ({THRESHOLD})")
    axis.set(xlabel="image score (normalised; the validation threshold at 0.5)", ylabel="images")
    axis.legend()
    return _png(figure)


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
figure { display: inline-block; margin: 6px; vertical-align: top; }
figure img { max-width: 560px; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; max-width: 560px; overflow-wrap: anywhere; }
.note { color: #666; font-size: 0.9em; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="note">{{ setting }}</p>
<h2>Metrics</h2>
<table><tr><th>metric</th><th>value</th><th>what it measures</th></tr>
{% for name, value, meaning in metrics %}<tr><td>{{ name }}</td><td>{{ "%.3f" | format(value) }}</td>
<td class="note">{{ meaning }}</td></tr>
{% endfor %}</table>
<h2>By defect kind</h2>
<table><tr><th>kind</th><th>images</th><th>flagged at the threshold</th>
<th>image AUROC against the good images</th></tr>
{% for kind in kinds %}<tr><td>{{ kind.name }}</td><td>{{ kind.count }}</td><td>{{ kind.flagged }}</td>
<td>{{ kind.auroc }}</td></tr>
{% endfor %}</table>
<h2>ROC and precision-recall</h2>
<img alt="ROC and PR curves" src="{{ curves }}">
<h2>Score histogram</h2>
<p class="note">Normal and defective test images by image score; right of the dashed line the model says
"defective". Overlap is where it errs.</p>
<img alt="score histogram" src="{{ histogram }}">
<h2>Learning curves</h2>
{% if learning_curves %}<img alt="learning curves" src="{{ learning_curves }}" style="max-width: 100%">
{% else %}<p class="note">This run has no learning_curves.png.</p>{% endif %}
{% for key, title, empty in sections %}
<h2 id="{{ key }}">{{ title }}</h2>
{% if not galleries[key] %}<p class="note">{{ empty }}</p>{% endif %}
{% for item in galleries[key] %}<figure data-source="{{ item.figure }}">
{% if item.uri %}<img alt="{{ item.caption }}" src="{{ item.uri }}">{% else %}<p class="note">no figure:
{{ item.figure }} is missing (visualizer off?)</p>{% endif %}
<figcaption>{{ item.caption }} &middot; score {{ "%.3f" | format(item.pred_score) }}</figcaption></figure>
{% endfor %}{% endfor %}
<p class="note">Figures: image, ground truth, heat map (on the data set's scale: the post-processed map, the
threshold at 0.5, so normal parts look cool), predicted region (red) with the true boundary (green). Image
paths relative to {{ data_root }}. Written by fegan-report.</p>
</body></html>
"""

# one line per metric for the report: what it measures and what chance gives
MEANINGS = {
    "image_AUROC": "chance that a random defective image scores above a random good one; 0.5 is chance, 1 perfect",
    "image_F1Score": "harmonic mean of precision and recall of the OK / not-OK decision at the threshold",
    "pixel_AUROC": "the same ranking over pixels (defect pixels above good ones); 0.5 is chance",
    "pixel_AUPRO": "mean overlap with each defect region, up to 30 % false-positive rate; favours small defects",
    "pixel_F1Score": "pixel F1 of the predicted mask at the threshold; chance is about the defect-pixel share",
    "pixel_BestIoU": "mean IoU at the best of 5000 thresholds, chosen with the test masks: an oracle (paper, Table 3)",
    "pixel_ThresholdIoU": "mean IoU of the predicted mask at the threshold learnt on validation: deployable",
}

SECTIONS = (
    ("false_positives", "Worst false positives", "No normal test image crossed the threshold."),
    ("false_negatives", "Worst false negatives", "Every defective test image crossed the threshold."),
    ("best_detections", "Best detections", "No defective test image crossed the threshold."),
    ("normal_parts", "Normal parts, highest scores under the threshold", "Every normal test image crossed it."),
)


def by_defect_kind(predictions: list[Prediction]) -> list[dict[str, Any]]:
    """Per defect kind (the image's folder): count, flagged at the threshold, image AUROC against the good images."""
    good = np.array([p.pred_score for p in predictions if p.gt_label == 0])
    kinds: dict[str, list[Prediction]] = {}
    for prediction in predictions:
        if prediction.gt_label == 1:
            kinds.setdefault(Path(prediction.image).parent.name, []).append(prediction)
    rows = []
    for name, items in sorted(kinds.items()):
        defective = np.array([p.pred_score for p in items])[:, None]
        # AUROC as the share of (defective, good) pairs ranked right, ties counted half
        auroc = float(((defective > good) + 0.5 * (defective == good)).mean()) if good.size else float("nan")
        rows.append(
            {
                "name": name,
                "count": len(items),
                "flagged": f"{sum(p.pred_label == 1 for p in items)} of {len(items)}",
                "auroc": f"{auroc:.3f}",
            }
        )
    return rows


def _setting(record: dict[str, Any]) -> str:
    args = record.get("model_args", {})
    size = args.get("image_size", "?")
    weights = args.get("weights") or ("ImageNet (torchvision)" if args.get("pre_trained") else "random init")
    backbone = f"{args.get('backbone', '?')} to {args.get('tap', '?')}" if "backbone" in args else "?"
    data = f"{Path(record['root']).name}/{record.get('category')}" if record.get("root") else record.get("category")
    return (
        f"Data: {data} (read by anomalib's {record.get('data')} datamodule). Image size {size}. Epochs trained: "
        f"{record.get('epochs') or 'not recorded'}. Backbone {backbone}, weights: {weights}."
    )


def write_run_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` for one run folder (default: into it); return its path."""
    from jinja2 import Environment  # noqa: PLC0415

    run_dir = Path(run_dir)
    predictions = read_predictions(run_dir)
    record = json.loads((run_dir / "test_metrics.json").read_text())
    histogram_path = run_dir / "test_pixel_histogram.csv"
    histogram = np.loadtxt(histogram_path, delimiter=",", skiprows=1, ndmin=2) if histogram_path.is_file() else None
    chosen = galleries(predictions)
    paths = [p.image for p in predictions if p.image]
    data_root = Path(os.path.commonpath(paths)).parent if len(paths) > 1 else Path()
    items = {
        key: [
            {
                **vars(p),
                "caption": os.path.relpath(p.image, data_root) if p.image else "",
                "uri": _file_uri(run_dir / p.figure) if (run_dir / p.figure).is_file() else None,
            }
            for p in values
        ]
        for key, values in chosen.items()
    }
    curves_png = run_dir / "learning_curves.png"
    html = (
        Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            title=f"{record.get('model')} on {record.get('category')}: test report",
            setting=_setting(record),
            metrics=[(k, v, MEANINGS.get(k, "")) for k, v in sorted(record.get("metrics", {}).items())],
            kinds=by_defect_kind(predictions),
            data_root=data_root,
            curves=curves_figure(predictions, histogram),
            histogram=histogram_figure(predictions),
            learning_curves=_file_uri(curves_png) if curves_png.is_file() else None,
            sections=SECTIONS,
            galleries=items,
        )
    )
    path = Path(out) if out else run_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html)
    return path
