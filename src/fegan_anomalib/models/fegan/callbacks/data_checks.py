"""``ValidateData``: read every image and mask of a run once, before its first step.

It stops with one error that lists each unreadable, empty or mismatched file and the fix: anomalib would
otherwise fail on the first bad file mid-epoch (or, for a mask of the wrong size, crash in a metric) without
saying which file.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image, UnidentifiedImageError

from fegan_anomalib.image_io import load_rgb

logger = logging.getLogger(__name__)


HIGH_BIT_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I"}


def _open(path: str) -> tuple[tuple[int, int], str]:
    """Decode an image fully and return its (width, height) and PIL mode; raise ``ValueError`` with the reason."""
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
            return image.size, image.mode
    except (OSError, UnidentifiedImageError) as error:
        msg = f"unreadable image ({error})"
        raise ValueError(msg) from error


class ValidateData(Callback):
    """Check every image and mask of the datamodule before training or testing starts."""

    MAX_LISTED = 20

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Read each file of the splits this stage uses; raise one error listing all problems."""
        del pl_module
        if stage == "predict":
            self._drop_unreadable_predict_images(trainer)
            return
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
            found, high_bit_depth = self._check(samples)
            problems += found
            if high_bit_depth and not found:
                self._convert_high_bit_depth(dataset, high_bit_depth, Path(trainer.default_root_dir))
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
    def _check(samples: object) -> tuple[list[str], list[str]]:
        """Return the problems found and the images with more than 8 bits per channel."""
        problems, high_bit_depth = [], []
        has_masks = "mask_path" in samples.columns
        for row in samples.itertuples():
            try:
                size, mode = _open(row.image_path)
            except ValueError as error:
                problems.append(f"{row.image_path}: {error}")
                continue
            if mode in HIGH_BIT_DEPTH_MODES:
                high_bit_depth.append(row.image_path)
            mask = getattr(row, "mask_path", "") if has_masks else ""
            if mask:
                try:
                    mask_size, _ = _open(mask)
                except ValueError as error:
                    problems.append(f"{mask} (mask of {row.image_path}): {error}")
                    continue
                if mask_size != size:
                    problems.append(
                        f"{mask}: mask is {mask_size[0]}x{mask_size[1]}, image {row.image_path} is {size[0]}x{size[1]}"
                    )
        return problems, high_bit_depth

    @staticmethod
    def _drop_unreadable_predict_images(trainer: Trainer) -> None:
        """Predict on the readable images; list each unreadable one with its reason, in the log and a file.

        ``anomalib predict --data FOLDER`` would stop at the first broken file. Here the run goes on
        with the others, and ``<default_root_dir>/unreadable_images.csv`` names every skipped file.
        """
        # At ``setup`` the loop has not built its loaders yet (and it prefetches before any later hook),
        # so read the dataloaders given to ``trainer.predict`` from the loop's data source.
        loaders = trainer.predict_dataloaders or trainer.predict_loop._data_source.instance
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        failed: list[tuple[str, str]] = []
        for loader in loaders:
            dataset = getattr(loader, "dataset", None)
            filenames = getattr(dataset, "image_filenames", None)
            if filenames is None:
                continue
            readable = []
            for filename in filenames:
                try:
                    _open(str(filename))
                    readable.append(filename)
                except ValueError as error:
                    failed.append((str(filename), str(error)))
            dataset.image_filenames = readable
        if failed:
            report = Path(trainer.default_root_dir) / "unreadable_images.csv"
            report.parent.mkdir(parents=True, exist_ok=True)
            with report.open("w", newline="") as handle:  # reasons quote file names: let csv escape them
                writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n")
                writer.writerow(["image_path", "reason"])
                writer.writerows(failed)
            for path, reason in failed:
                logger.error("Not predicted: %s: %s", path, reason)
            logger.error("%d unreadable image(s) were not predicted; listed in %s", len(failed), report)

    @staticmethod
    def _convert_high_bit_depth(dataset: object, paths: list[str], root: Path) -> None:
        """Read 16-bit images through 8-bit copies scaled by their full range, and say so.

        anomalib reads every image with PIL's ``convert("RGB")``, which clips 16-bit values at 255:
        a 16-bit camera image would train as an almost white frame. The copies go to
        ``<default_root_dir>/converted_8bit/``; the data set itself is not touched.
        """
        folder = root / "converted_8bit"
        folder.mkdir(parents=True, exist_ok=True)
        renamed = {}
        for path in paths:
            digest = hashlib.sha1(str(Path(path).resolve()).encode(), usedforsecurity=False).hexdigest()[:10]
            target = folder / f"{Path(path).stem}_{digest}.png"
            rgb = load_rgb(Path(path))
            Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(target)
            renamed[path] = str(target)
        samples = dataset.samples.copy()
        samples["image_path"] = [renamed.get(path, path) for path in samples.image_path]
        dataset.samples = samples
        logger.warning(
            "%d image(s) with 16 bits per channel (e.g. %s) are read through 8-bit copies scaled by their full "
            "range, in %s: anomalib's reader would clip them at 255.",
            len(paths),
            paths[0],
            folder,
        )
