"""Bottle-Cap, the paper's second data set, as an anomalib Folder datamodule.

FEGAN's Table 4 evaluates on a single-product data set of bottle caps. This module reads any such
one-product folder::

    ROOT/train/good/*.png|jpg|bmp          normal training images
    ROOT/test/good/*                       normal test images
    ROOT/test/<defect>/*                   defective test images, one folder per defect kind
    ROOT/ground_truth/<defect>/*           optional masks: <stem>.<ext> or <stem>_mask.<ext>

anomalib's ``Folder`` pairs masks with images by sorted position and reports a mismatch without
naming files; here every mask is matched to its image by name first, and any image without a
mask, or mask without an image, is named in the error. Without a ``ground_truth`` folder the data
set is image-level only (image metrics; pixel metrics are skipped).
"""

from __future__ import annotations

from pathlib import Path

from anomalib.data import Folder

from fegan_anomalib.image_io import EXTENSIONS

from .checks import match_masks


class BottleCap(Folder):
    """One-product folder data set in the Bottle-Cap layout (FEGAN, Table 4).

    Args:
        root: data set folder (see the module docstring for its layout). Defaults to ``./datasets/bottle_cap``.
        name: data set name used for the results folder. Defaults to ``"bottle_cap"``.
        train_batch_size, eval_batch_size, num_workers: as for anomalib's ``Folder``.
        val_split_mode, val_split_ratio, seed: as for anomalib's ``Folder``.

    Example:
        >>> datamodule = BottleCap(root="datasets/bottle_cap")  # doctest: +SKIP

    """

    def __init__(
        self,
        root: str | Path = "./datasets/bottle_cap",
        name: str = "bottle_cap",
        train_batch_size: int = 16,
        eval_batch_size: int = 16,
        num_workers: int = 4,
        val_split_mode: str = "from_test",
        val_split_ratio: float = 0.5,
        seed: int | None = None,
    ) -> None:
        root = Path(root)
        self.mask_pairs = match_masks(root)
        defects = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name != "good")
        super().__init__(
            name=name,
            root=root,
            normal_dir="train/good",
            normal_test_dir="test/good",
            abnormal_dir=[f"test/{defect}" for defect in defects],
            mask_dir=None,
            extensions=EXTENSIONS,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
        )

    def _setup(self, _stage: str | None = None) -> None:
        """Build the splits with anomalib's Folder, then attach the masks matched by name."""
        super()._setup(_stage)
        if self.mask_pairs is None:
            return
        by_path = {str(image.resolve()): str(mask.resolve()) for image, mask in self.mask_pairs.items()}
        for dataset in (self.train_data, self.test_data):
            samples = dataset.samples.copy()
            samples["mask_path"] = [by_path.get(str(Path(p).resolve()), "") for p in samples.image_path]
            samples.attrs["task"] = "segmentation"
            dataset.samples = samples


__all__ = ["BottleCap"]
