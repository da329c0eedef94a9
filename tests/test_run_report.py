"""report.html: the page an inspection engineer opens after a test run."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fegan_anomalib.experiments.report import main as report_main
from fegan_anomalib.experiments.run_report import galleries, read_predictions, roc_pr, write_run_report


class Page(HTMLParser):
    """Collect <img> sources, <figure data-source> attributes and the section each figure is in."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.figures: dict[str, list[str]] = {}
        self.section = ""
        self.in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "h2":
            self.section = attributes.get("id") or ""
        elif tag == "img":
            self.images.append(attributes["src"] or "")
        elif tag == "figure":
            self.figures.setdefault(self.section, []).append(attributes["data-source"] or "")


def _fake_run(root: Path) -> Path:
    """A run folder with 4 normal and 4 defective test images; normal_3 is a planted false positive."""
    rows = []
    scores = {"normal_0": 0.1, "normal_1": 0.2, "normal_2": 0.3, "normal_3": 0.9,
              "defect_0": 0.95, "defect_1": 0.8, "defect_2": 0.45, "defect_3": 0.7}  # fmt: skip
    for name, score in scores.items():
        figure = Path("images") / f"{name}.png"
        (root / figure).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 64, 3), 200, np.uint8)).save(root / figure)
        rows.append(
            {
                "image": f"/data/tile/test/{'crack' if name.startswith('defect') else 'good'}/{name}.png",
                "gt_label": int(name.startswith("defect")),
                "pred_score": score,
                "pred_label": int(score > 0.5),
                "figure": str(figure),
            }
        )
    with (root / "test_predictions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    record = {"model": "Fegan", "data": "MVTecAD", "category": "tile", "epochs": 3, "root": "/data/synthetic_tiles",
              "model_args": {"image_size": 128, "backbone": "vgg16_bn", "tap": "relu5_2", "weights": "w.pth"},
              "metrics": {"image_AUROC": 0.875, "pixel_AUROC": 0.9}}  # fmt: skip
    (root / "test_metrics.json").write_text(json.dumps(record))
    return root


def test_galleries_hold_the_planted_false_positive_and_the_misses(tmp_path: Path) -> None:
    chosen = galleries(read_predictions(_fake_run(tmp_path)))
    assert [p.image.rsplit("/", 1)[-1] for p in chosen["false_positives"]] == ["normal_3.png"]
    assert [p.image.rsplit("/", 1)[-1] for p in chosen["false_negatives"]] == ["defect_2.png"]
    assert [p.pred_score for p in chosen["best_detections"]] == [0.95, 0.8, 0.7]
    assert [p.pred_score for p in chosen["normal_parts"]] == [0.3, 0.2, 0.1]  # what normal looks like, below 0.5


def test_roc_pr_known_answer() -> None:
    # two thresholds: scores 0 (1 negative, 0 positives) and 1 (0 negatives, 1 positive): a perfect split
    fpr, tpr, recall, precision = roc_pr(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert fpr.tolist() == [0.0, 0.0, 1.0] and tpr.tolist() == [0.0, 1.0, 1.0]
    assert precision.tolist() == [1.0, 1.0, 0.5] and recall.tolist() == tpr.tolist()


def test_report_html_embeds_every_image_and_names_the_setting(tmp_path: Path) -> None:
    path = write_run_report(_fake_run(tmp_path))
    html = path.read_text()
    page = Page()
    page.feed(html)
    # curves, histogram, (no learning curves), FP + FN + 3 detections + the 3 highest normal parts under the threshold
    assert len(page.images) == 3 + 1 + 0 + 3 + 3
    for source in page.images:  # self-contained: every image is a decodable embedded PNG
        kind, data = source.split(",", 1)
        assert kind == "data:image/png;base64"
        assert base64.b64decode(data).startswith(b"\x89PNG")
    for sources in page.figures.values():
        assert all((tmp_path / source).is_file() for source in sources)
    assert page.figures["false_positives"] == ["images/normal_3.png"]
    assert page.figures["false_negatives"] == ["images/defect_2.png"]
    assert "Image size 128" in html and "Epochs trained: 3" in html and "w.pth" in html
    assert "Data: synthetic_tiles/tile" in html  # the data set's folder, not only the datamodule's class
    assert "0.5 is chance" in html  # each metric says what it measures
    # by defect kind: 3 of the 4 cracks above the 0.5 threshold; 13 of 16 (crack, good) pairs ranked right
    assert re.search(r"<td>crack</td><td>4</td><td>3 of 4</td>\s*<td>0.812</td>", html), html
    assert "test/crack/defect_2.png &middot;" in html and "/data/tile/test/crack" not in html  # relative captions
    assert "http://" not in html and "https://" not in html  # nothing fetched from a network


def test_report_needs_a_predictions_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"test_predictions\.csv does not exist"):
        write_run_report(tmp_path)


def test_fegan_report_writes_report_html_for_a_real_run(trained: tuple[Path, str]) -> None:
    """After ``anomalib train`` (the CLI fixture), one command gives the run's report.html."""
    workdir, _ = trained
    run = workdir / "results" / "Fegan" / "MVTecAD" / "texture" / "v0"
    report_main([str(workdir / "results"), "--out", str(workdir / "tables")])
    html = (run / "report.html").read_text()
    page = Page()
    page.feed(html)
    with (run / "test_predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {row["gt_label"] for row in rows} == {"0", "1"}
    shown = [source for sources in page.figures.values() for source in sources]
    assert shown and all((run / source).is_file() for source in shown)  # the visualizer's own figures
    assert "learning curves" in html and re.search(r"Epochs trained: 1\b", html)
    histogram = np.loadtxt(run / "test_pixel_histogram.csv", delimiter=",", skiprows=1)
    assert histogram[:, 1].sum() > 0 and histogram[:, 2].sum() > 0  # normal and anomalous pixels


CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (scripts/install_chromium.sh installs Debian's)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    path = write_run_report(_fake_run(tmp_path))
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1200,3000", path.as_uri()],
        check=True, capture_output=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert image.size == (1200, 3000) and pixels.std() > 10  # a rendered page, not a blank one


def test_heat_maps_are_drawn_on_the_data_sets_scale_unless_asked_per_image() -> None:
    from anomalib.visualization.image.item_visualizer import visualize_image_item

    from fegan_anomalib.models.fegan.evaluation import FeganVisualizer

    def heat(visualizer: FeganVisualizer, level: float) -> np.ndarray:
        """Red minus blue of the heat-map panel for a flat post-processed map at ``level`` with one hot pixel."""
        import torch
        from anomalib.data import ImageItem

        anomaly_map = torch.full((32, 32), level)
        anomaly_map[0, 0] = 1.0
        item = ImageItem(image=torch.zeros(3, 32, 32), anomaly_map=anomaly_map, gt_mask=torch.zeros(32, 32).bool())
        panel = visualize_image_item(
            item,
            fields=[],
            overlay_fields=[("image", ["anomaly_map"])],
            overlay_fields_config=visualizer.overlay_fields_config,
        )
        pixels = np.asarray(panel.convert("RGB"), dtype=float)[8:24, 8:24]
        return pixels[..., 0].mean() - pixels[..., 2].mean()

    dataset, per_image = FeganVisualizer(), FeganVisualizer(heat_map="per_image")
    assert heat(dataset, 0.1) < 0 < heat(dataset, 0.9)  # a low (normal) map cool, a high one hot
    assert heat(per_image, 0.1) == pytest.approx(heat(per_image, 0.9), abs=1.0)  # min-max per image: the same
    with pytest.raises(ValueError, match="heat_map"):
        FeganVisualizer(heat_map="global")
