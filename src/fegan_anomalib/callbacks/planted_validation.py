"""``PlantedValidation``: label-free validation on held-out normal images, some with planted anomalies."""

from __future__ import annotations

import logging

from lightning.pytorch import Callback, LightningModule, Trainer

logger = logging.getLogger(__name__)


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

    # under this many images per class (normal / planted) the curve is too coarse to pick an epoch by
    MIN_IMAGES_PER_CLASS = 20

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
        planted = int((datamodule.val_data.samples.label_index == 1).sum())
        logger.info(
            "Planted validation: %d training images, %d held out (%d with planted anomalies).",
            len(train),
            len(held_out),
            planted,
        )
        smallest = min(planted, len(held_out) - planted)
        if smallest < self.MIN_IMAGES_PER_CLASS:  # logged: a warning would point into Lightning's hook caller
            logger.warning(
                "Planted validation has %d normal and %d planted images: with fewer than %d per class its AUROC moves "
                "in steps of 1/%d and can read 1.0 while the test set says chance. Do not pick an epoch by it; add "
                "normal training images or raise holdout_ratio.",
                len(held_out) - planted,
                planted,
                self.MIN_IMAGES_PER_CLASS,
                planted * (len(held_out) - planted),
            )
