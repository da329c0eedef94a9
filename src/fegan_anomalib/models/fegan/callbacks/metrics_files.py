"""``SaveTestMetrics``: a run's test metrics, per-image predictions and pixel histogram, next to its results.

``anomalib train``/``test`` print their metrics but store them only through a logger, and the stored layout
differs per logger. This callback writes one small JSON per test run into the run folder
(``results/<Model>/<Data>/<category>/vN/test_metrics.json``) for any anomalib model, for ``fegan-report``::

    anomalib train --model Padim ... --trainer.callbacks+=fegan_anomalib.callbacks.SaveTestMetrics

FEGAN adds it by itself.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

logger = logging.getLogger(__name__)


class SaveTestMetrics(Callback):
    """Write a test run's metrics, per-image predictions and pixel-score histogram into the run folder.

    ``test_metrics.json``: model, data set, category, metrics, the epochs trained and the model's
    arguments (size, backbone, weights), for ``fegan-report``'s tables. ``test_predictions.csv``: one
    row per test image (path, ground truth, post-processed score and label, the visualizer's figure).
    ``test_pixel_histogram.csv``: counts of normal and anomalous pixels per bin of the post-processed
    map, from which ``report.html`` draws the pixel ROC and PR curves without storing every map.
    Scores are anomalib's normalised ones (the validation threshold at 0.5), as the exported model gives.
    """

    FILENAME = "test_metrics.json"
    PREDICTIONS = "test_predictions.csv"
    PIXEL_HISTOGRAM = "test_pixel_histogram.csv"
    PIXEL_BINS = 1000

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start with no predictions."""
        del trainer, pl_module
        self.rows: list[dict[str, object]] = []
        self.pixel_counts = torch.zeros(2, self.PIXEL_BINS, dtype=torch.float64)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Record each image's post-processed score and label, and bin its pixels by score and truth."""
        del pl_module, batch, batch_idx, dataloader_idx
        from anomalib.utils.path import generate_output_filename  # noqa: PLC0415

        datamodule = trainer.datamodule
        images_dir = Path(trainer.default_root_dir) / "images"  # where anomalib's ImageVisualizer writes
        paths = outputs.image_path or [""] * len(outputs.pred_score)
        for index, path in enumerate(paths):
            figure = generate_output_filename(
                path, images_dir, getattr(datamodule, "name", None), getattr(datamodule, "category", None), mkdir=False
            )
            self.rows.append(
                {
                    "image": path,
                    "gt_label": int(outputs.gt_label[index]) if outputs.gt_label is not None else "",
                    "pred_score": f"{float(outputs.pred_score[index]):.6f}",
                    "pred_label": int(outputs.pred_label[index]) if outputs.pred_label is not None else "",
                    "figure": os.path.relpath(figure, trainer.default_root_dir),
                }
            )
        if outputs.anomaly_map is not None and outputs.gt_mask is not None:
            maps = outputs.anomaly_map.detach().float().cpu().reshape(len(paths), -1)
            masks = outputs.gt_mask.detach().cpu().reshape(len(paths), -1).bool()
            if maps.shape == masks.shape:
                bins = (maps.clamp(0, 1) * (self.PIXEL_BINS - 1)).round().long()
                for truth in (0, 1):
                    selected = bins[masks == bool(truth)]
                    self.pixel_counts[truth] += torch.bincount(selected, minlength=self.PIXEL_BINS).double()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the metrics the Evaluator logged, the predictions and the pixel histogram."""
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        hparams = {k: v for k, v in dict(getattr(pl_module, "hparams", {})).items() if _json_safe(v)}
        record = {
            "model": getattr(pl_module, "name", type(pl_module).__name__),
            "data": getattr(datamodule, "name", None),
            "category": getattr(datamodule, "category", None),
            "root": str(getattr(datamodule, "root", "")) or None,  # the data set's own folder name, for the report
            # a test after fit in the same trainer counts its epochs; a test of a loaded checkpoint has the
            # epoch Lightning stored in it (Fegan.trained_epochs); None when neither says
            "epochs": trainer.current_epoch or getattr(pl_module, "trained_epochs", None),
            "model_args": hparams,
            "metrics": {key: float(value) for key, value in trainer.callback_metrics.items()},
        }
        root = Path(trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        (root / self.FILENAME).write_text(json.dumps(record, indent=2))
        rows = getattr(self, "rows", [])
        if rows:
            with (root / self.PREDICTIONS).open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        if rows and self.pixel_counts.sum() > 0:
            with (root / self.PIXEL_HISTOGRAM).open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["score", "normal_pixels", "anomalous_pixels"])
                for index in range(self.PIXEL_BINS):
                    normal, anomalous = self.pixel_counts[:, index].tolist()
                    writer.writerow([f"{index / (self.PIXEL_BINS - 1):.4f}", int(normal), int(anomalous)])


def _json_safe(value: object) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True
