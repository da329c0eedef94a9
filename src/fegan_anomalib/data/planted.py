"""Label-free validation: held-out normal images, some with planted M-SE anomalies.

A user with only normal images has no defect to validate on, and anomalib's default validation
split for MVTec-layout data (``same_as_test``) is the test set itself, so its curve and its
thresholds are an oracle. anomalib's ``ValSplitMode.SYNTHETIC`` holds out normal training images
and plants Perlin-noise anomalies, but writes them to a temporary folder and draws them from the
global RNG. ``PlantedAnomalyDataset`` plants with FEGAN's own augmentation (M-SE by default) in
memory, seeded per image, so every epoch validates on the same images with the planted region as
the ground-truth mask.
"""

from __future__ import annotations

import torch
from anomalib.data import ImageItem
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import read_image
from torch import nn
from torchvision.tv_tensors import Mask


class PlantedAnomalyDataset(AnomalibDataset):
    """Normal images of ``normal``; a seeded ``anomalous_ratio`` of them carry a planted anomaly.

    Args:
        normal: data set of normal images (e.g. images held out of the training split).
        augmentation: ``(images, generator) -> (augmented, mask)``, as FEGAN's training augmentations.
        anomalous_ratio: share of the images that get a planted anomaly. Defaults to ``0.5``.
        seed: seeds which images are planted and each image's anomaly. Defaults to ``0``.

    """

    def __init__(
        self,
        normal: AnomalibDataset,
        augmentation: nn.Module,
        anomalous_ratio: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__(augmentations=normal.augmentations)
        samples = normal.samples.reset_index(drop=True)
        if len(samples) < 2:
            msg = (
                f"Planted validation needs at least 2 held-out normal images, got {len(samples)}: add training "
                "images or raise the hold-out ratio."
            )
            raise ValueError(msg)
        if (samples.label_index != 0).any():
            msg = "Planted validation takes normal images only; the data set given holds anomalous ones."
            raise ValueError(msg)
        count = min(len(samples) - 1, max(1, round(anomalous_ratio * len(samples))))
        planted = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:count]
        samples = samples.copy()
        samples["mask_path"] = ""
        samples.loc[planted.tolist(), "label_index"] = 1
        samples.loc[planted.tolist(), "label"] = "abnormal"
        samples["split"] = "val"
        samples.attrs["task"] = "segmentation"
        self.samples = samples
        self.augmentation = augmentation
        self.seed = seed

    def __getitem__(self, index: int) -> ImageItem:
        """Return the image, planted or not, with its label and the planted region as mask."""
        row = self.samples.iloc[index]
        image = read_image(row.image_path, as_tensor=True)
        mask = torch.zeros(image.shape[-2:])
        if row.label_index == 1:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            with torch.no_grad():
                augmented, planted = self.augmentation(image.unsqueeze(0), generator=generator)
            image, mask = augmented[0].clamp(0, 1), planted[0, 0]
        gt_mask = Mask((mask > 0).to(torch.uint8))
        if self.augmentations:
            image, gt_mask = self.augmentations(image, gt_mask)
        return ImageItem(
            image=image,
            gt_mask=gt_mask,
            gt_label=torch.tensor(int(row.label_index)),
            image_path=f"{row.image_path}",
            mask_path="",
        )
