"""Callbacks FEGAN adds to every run: input checks and a metrics file for ``fegan-report``.

``ValidateData`` reads every image and mask of the datamodule's splits once, before the first
step, and stops with one error that lists each unreadable, empty or mismatched file and the fix:
anomalib would otherwise fail on the first bad file mid-epoch (or, for a mask of the wrong size,
crash in a metric) without saying which file.

``SaveTestMetrics`` writes a run's test metrics, per-image predictions and a pixel-score histogram
next to its results, for ``fegan-report`` (tables across runs, ``report.html`` per run).

``anomalib train``/``test`` print their metrics but store them only through a logger, and the
stored layout differs per logger. This callback writes one small JSON per test run into the run
folder (``results/<Model>/<Data>/<category>/vN/test_metrics.json``) for any anomalib model::

    anomalib train --model Padim ... --trainer.callbacks+=fegan_anomalib.callbacks.SaveTestMetrics

FEGAN adds it by itself.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
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


class ResumableTrainLoader(Callback):
    """Serve the datamodule's training set through torchdata's ``StatefulDataLoader``, which Lightning resumes.

    anomalib's ``train_dataloader`` is a plain shuffled ``DataLoader``: its order comes from the global
    RNG at each epoch and it keeps no position, so a run resumed from a mid-epoch checkpoint sees another
    order and starts its epoch over (Lightning warns "your dataloader is not resumable"); a 200-epoch GAN
    run interrupted on a shared GPU would then not end where the uninterrupted run ends. For ``fit``,
    this returns a ``StatefulDataLoader`` (Lightning stores its ``state_dict`` in checkpoints and
    restores it) over the same dataset, batch size, workers and collate function, with a
    ``StatefulDistributedSampler`` seeded by the run's seed (Lightning sets its epoch): epoch ``e``'s order is a
    permutation seeded by ``(seed, e)``, a resumed epoch skips the samples already trained on when it
    starts (after Lightning has set the epoch), and under DDP each rank reads its own shard.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Wrap ``train_dataloader`` of the datamodule this fit uses."""
        del pl_module
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None:
            return
        from torch.utils.data import DataLoader  # noqa: PLC0415
        from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: PLC0415
        from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler  # noqa: PLC0415

        # wrap anomalib's method, not a wrapper bound to an earlier trainer of the same datamodule
        original = getattr(datamodule, "_fegan_train_dataloader", datamodule.train_dataloader)
        seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**31))

        def train_dataloader() -> object:
            loader = original()
            if not isinstance(loader, DataLoader) or isinstance(loader, StatefulDataLoader):
                return loader
            sampler = StatefulDistributedSampler(
                loader.dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=True, seed=seed
            )
            return StatefulDataLoader(
                loader.dataset,
                batch_size=loader.batch_size,
                sampler=sampler,
                num_workers=loader.num_workers,
                collate_fn=loader.collate_fn,
            )

        datamodule._fegan_train_dataloader = original
        datamodule.train_dataloader = train_dataloader


class BroadcastBuffers(Callback):
    """Under DDP, give every rank rank 0's buffers (BatchNorm statistics) at the end of each training epoch.

    DDP syncs BatchNorm statistics only at each forward and SyncBatchNorm would need GPUs; without
    the broadcast, ranks end an epoch with statistics that differ by their last local batch, so
    validation and checkpoints would depend on the rank. Lightning runs checkpointing after this.
    """

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Broadcast every buffer of the torch model from rank 0."""
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            for buffer in pl_module.model.buffers():
                torch.distributed.broadcast(buffer, src=0)


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


class PlantedValidation(Callback):
    """Validate on held-out normal training images, some with planted anomalies (label-free validation).

    For ``fit``, ``holdout_ratio`` of the training images leave the training split (anomalib's
    seeded ``random_split``) and become the validation set, ``anomalous_ratio`` of them with an
    anomaly planted by FEGAN's augmentation (M-SE by default; the planted region is the mask). The
    validation curves and the PostProcessor's thresholds then never see a test image: a user with
    normal images only can watch the curve and pick an epoch, and F1/ThresholdIoU/INT8 calibration
    are not test-set oracles. The planted anomalies are of the kind FEGAN trains against, so the
    curve is a proxy: BENCHMARKS.md reports how well it tracks the real test AUROC.

    Use::

        anomalib train ... --trainer.callbacks+=fegan_anomalib.callbacks.PlantedValidation

    Args:
        holdout_ratio: share of the training images held out. Defaults to ``0.2``.
        anomalous_ratio: share of the held-out images that get a planted anomaly. Defaults to ``0.5``.
        augmentation: name or class path of the planting augmentation (as ``Fegan(augmenter=...)``).
            Defaults to ``"MultiScaleSelfEnhancement"``.
        area_ratio: planted area / image area. Defaults to ``0.2``.
        max_patch_ratio: largest M-SE patch / image area. Defaults to ``0.01``.
        seed: seeds the hold-out and the planting. Defaults to ``0``.

    """

    def __init__(
        self,
        holdout_ratio: float = 0.2,
        anomalous_ratio: float = 0.5,
        augmentation: str = "MultiScaleSelfEnhancement",
        area_ratio: float = 0.2,
        max_patch_ratio: float = 0.01,
        seed: int = 0,
    ) -> None:
        if not 0.0 < holdout_ratio < 1.0 or not 0.0 < anomalous_ratio < 1.0:
            msg = f"holdout_ratio and anomalous_ratio must lie in (0, 1), got {holdout_ratio}, {anomalous_ratio}."
            raise ValueError(msg)
        self.holdout_ratio = holdout_ratio
        self.anomalous_ratio = anomalous_ratio
        self.augmentation = augmentation
        self.area_ratio = area_ratio
        self.max_patch_ratio = max_patch_ratio
        self.seed = seed

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Replace the datamodule's validation set (once per datamodule) with the planted one."""
        del pl_module
        datamodule = trainer.datamodule
        if stage != "fit":
            return
        if datamodule is None or not hasattr(datamodule, "train_data"):
            msg = "PlantedValidation needs an anomalib datamodule (it splits the datamodule's train_data)."
            raise ValueError(msg)
        if getattr(datamodule, "_fegan_planted_validation", False):
            return  # a second fit on the same datamodule keeps the first split
        from anomalib.data.utils import random_split  # noqa: PLC0415

        from fegan_anomalib.data.planted import PlantedAnomalyDataset  # noqa: PLC0415
        from fegan_anomalib.models.fegan.augmentation import build_augmentation  # noqa: PLC0415

        train, held_out = random_split(datamodule.train_data, self.holdout_ratio, seed=self.seed)
        augmentation = build_augmentation(self.augmentation, self.area_ratio, self.max_patch_ratio)
        datamodule.train_data = train
        datamodule.val_data = PlantedAnomalyDataset(held_out, augmentation, self.anomalous_ratio, self.seed)
        datamodule._fegan_planted_validation = True
        logger.info(
            "Planted validation: %d training images, %d held out (%d with planted anomalies).",
            len(train),
            len(held_out),
            int((datamodule.val_data.samples.label_index == 1).sum()),
        )


class LearningCurves(Callback):
    """Write a fit's per-epoch losses, gradient norms and validation metrics as CSV and a figure.

    ``learning_curves.csv`` and ``learning_curves.png`` go into the run folder and are rewritten
    after every epoch, so a stopped run keeps its curve. Every logger also records the same
    values (FEGAN logs them with ``self.log``); this file is the logger-independent copy.
    """

    CSV = "learning_curves.csv"
    FIGURE = "learning_curves.png"

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._validation: dict[str, float] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a fresh record for this fit."""
        del trainer, pl_module
        self.rows, self._validation = [], {}

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keep this validation's metrics for the epoch's row (after every epoch-end hook logged)."""
        del pl_module
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._validation = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Add the epoch's row and rewrite the files."""
        del pl_module
        if not trainer.is_global_zero:
            return
        row = {"epoch": float(trainer.current_epoch)}
        for key, value in trainer.callback_metrics.items():
            if not key.startswith("val_") and value.numel() == 1:
                row[key] = float(value)
        row |= self._validation
        self._validation = {}
        self.rows.append(row)
        self.write(Path(trainer.default_root_dir))

    def write(self, folder: Path) -> None:
        """Write the CSV and the figure (losses, gradient norms, validation metrics) into ``folder``."""
        import pandas as pd  # noqa: PLC0415

        folder.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame(self.rows)
        table.to_csv(folder / self.CSV, index=False)
        plot_learning_curves(table, folder / self.FIGURE)


def plot_learning_curves(table: object, path: Path) -> None:
    """Three panels over epochs: loss terms, generator gradient norms, validation AUROC/AUPRO."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    panels = [
        ("losses", [c for c in table.columns if c.endswith("_loss")], "log"),
        ("share of the generator's update", [c for c in table.columns if c.startswith("grad_share/")], "linear"),
        ("validation", [c for c in table.columns if c.startswith("val_")], "linear"),
    ]
    panels = [panel for panel in panels if panel[1]]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4), squeeze=False)
    for axis, (title, columns, scale) in zip(axes[0], panels, strict=False):
        for column in columns:
            values = table[["epoch", column]].dropna()
            if scale == "log":
                values = values[values[column] > 0]
            label = column.removeprefix("grad_share/")
            axis.plot(values["epoch"], values[column], marker="o", markersize=3, label=label)
        axis.set_yscale(scale)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


class TrainingImages(Callback):
    """Every ``every_n_epochs``, show a fixed batch: input, augmented input, reconstruction, F and R maps.

    The first thing a GAN user looks at. Rows are images; columns the clean input, its augmented
    copy (fixed seed, so the same patches every time), the reconstruction G(x̃), and the F and R
    maps of x̃ in eval mode (one colour scale per column across the grid). Written to
    ``training_images/epoch_NNN.png`` in the run folder and, with a TensorBoard logger
    (``--logger TensorBoardLogger``), as the image ``fegan/training_images``.

    Args:
        every_n_epochs: how often. Defaults to ``5`` (and always after the first and the last epoch).
        num_images: rows of the grid. Defaults to ``4``.

    """

    def __init__(self, every_n_epochs: int = 5, num_images: int = 4) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self._images: torch.Tensor | None = None

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        """Keep the first training batch (already pre-processed) of the fit."""
        del trainer, pl_module, outputs, batch_idx
        if self._images is None and hasattr(batch, "image"):
            self._images = batch.image[: self.num_images].detach().clone()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Render and write the grid when this epoch is due."""
        if self._images is None or not trainer.is_global_zero or self.every_n_epochs <= 0:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if epoch != 0 and (epoch + 1) % self.every_n_epochs != 0 and not last:
            return
        grid = self.render(pl_module)
        folder = Path(trainer.default_root_dir) / "training_images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
            folder / f"epoch_{epoch:03d}.png"
        )
        for experiment_logger in trainer.loggers:
            experiment = getattr(experiment_logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("fegan/training_images", grid, global_step=epoch)

    @torch.no_grad()
    def render(self, pl_module: LightningModule) -> torch.Tensor:
        """(3, H', W') grid in [0, 1]: one row per image, columns input/augmented/reconstruction/F/R."""
        import matplotlib as mpl  # noqa: PLC0415
        from torchvision.utils import make_grid  # noqa: PLC0415

        model = pl_module.model
        images = self._images.to(pl_module.device)
        augmented, _ = pl_module.augmenter(images, generator=torch.Generator().manual_seed(0))
        with model.evaluating():
            residual, feature, reconstruction = model.component_maps(augmented)
        colormap = mpl.colormaps["jet"]

        def coloured(maps: torch.Tensor) -> torch.Tensor:
            low, high = maps.min(), maps.max()
            scaled = ((maps - low) / (high - low).clamp_min(1e-12)).cpu().numpy()
            return torch.from_numpy(colormap(scaled)[..., :3]).permute(0, 3, 1, 2).float()

        columns = [images.cpu(), augmented.cpu(), model.from_gan_range(reconstruction).cpu()]
        columns.append(coloured(feature if feature is not None else torch.zeros_like(residual)))
        columns.append(coloured(residual))
        tiles = torch.stack(columns, dim=1).flatten(0, 1)  # image-major: one row per image
        return make_grid(tiles, nrow=len(columns), padding=2, pad_value=1.0)
