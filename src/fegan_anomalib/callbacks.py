"""Callbacks FEGAN adds to every run: input checks and a metrics file for ``fegan-report``.

``ValidateData`` reads every image and mask of the datamodule's splits once, before the first
step, and stops with one error that lists each unreadable, empty or mismatched file and the fix:
anomalib would otherwise fail on the first bad file mid-epoch (or, for a mask of the wrong size,
crash in a metric) without saying which file.

``SaveTestMetrics`` writes a run's test metrics next to its results, for ``fegan-report``.

``anomalib train``/``test`` print their metrics but store them only through a logger, and the
stored layout differs per logger. This callback writes one small JSON per test run into the run
folder (``results/<Model>/<Data>/<category>/vN/test_metrics.json``) for any anomalib model::

    anomalib train --model Padim ... --trainer.callbacks+=fegan_anomalib.callbacks.SaveTestMetrics

FEGAN adds it by itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image, UnidentifiedImageError


def _open(path: str) -> tuple[int, int]:
    """Decode an image fully and return its (width, height); raise ``ValueError`` with the reason."""
    file = Path(path)
    if not file.is_file():
        msg = "file does not exist"
        raise ValueError(msg)
    if file.stat().st_size == 0:
        msg = "empty file (0 bytes)"
        raise ValueError(msg)
    try:
        with Image.open(file) as image:
            image.load()
            return image.size
    except (OSError, UnidentifiedImageError) as error:
        msg = f"unreadable image ({error})"
        raise ValueError(msg) from error


class ValidateData(Callback):
    """Check every image and mask of the datamodule before training or testing starts."""

    MAX_LISTED = 20

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Read each file of the splits this stage uses; raise one error listing all problems."""
        del pl_module
        datamodule = trainer.datamodule
        if datamodule is None:
            return
        splits = {"fit": ("train_data", "val_data"), "validate": ("val_data",), "test": ("test_data",)}
        problems: list[str] = []
        for attribute in splits.get(stage, ()):
            dataset = getattr(datamodule, attribute, None)
            samples = getattr(dataset, "samples", None)
            if samples is None:
                continue
            if attribute == "train_data" and len(samples) == 0:
                problems.append("the training split is empty: add normal images to the data set's train folder")
            problems += self._check(samples)
        if problems:
            listed = problems[: self.MAX_LISTED]
            more = f"\n  ... and {len(problems) - len(listed)} more" if len(problems) > len(listed) else ""
            msg = (
                f"{len(problems)} problem(s) in the input data:\n  " + "\n  ".join(listed) + more + "\n"
                "Fix: replace or remove the unreadable files; give every defective test image a mask of the "
                "same size (ground_truth/<defect>/NAME_mask.png), or remove ground_truth/ for image-level metrics."
            )
            raise ValueError(msg)

    @staticmethod
    def _check(samples: object) -> list[str]:
        problems = []
        has_masks = "mask_path" in samples.columns
        for row in samples.itertuples():
            try:
                size = _open(row.image_path)
            except ValueError as error:
                problems.append(f"{row.image_path}: {error}")
                continue
            mask = getattr(row, "mask_path", "") if has_masks else ""
            if mask:
                try:
                    mask_size = _open(mask)
                except ValueError as error:
                    problems.append(f"{mask} (mask of {row.image_path}): {error}")
                    continue
                if mask_size != size:
                    problems.append(
                        f"{mask}: mask is {mask_size[0]}x{mask_size[1]}, image {row.image_path} is {size[0]}x{size[1]}"
                    )
        return problems


class SaveTestMetrics(Callback):
    """Write ``test_metrics.json`` (model, data set, category, metrics) into the run's root folder."""

    FILENAME = "test_metrics.json"

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the metrics the Evaluator logged for this test run."""
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        record = {
            "model": getattr(pl_module, "name", type(pl_module).__name__),
            "data": getattr(datamodule, "name", None),
            "category": getattr(datamodule, "category", None),
            "metrics": {key: float(value) for key, value in trainer.callback_metrics.items()},
        }
        path = Path(trainer.default_root_dir) / self.FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
