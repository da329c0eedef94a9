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

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _require_images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        msg = (
            f"Data layout: missing folder {folder} ({what}). "
            f"Expected ROOT/train/good, ROOT/test/good, ROOT/test/<defect>."
        )
        raise FileNotFoundError(msg)
    images = _images(folder)
    if not images:
        msg = f"Data layout: {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); add {what} there."
        raise FileNotFoundError(msg)
    return images


def match_masks(root: str | Path, layout: str = "Bottle-Cap") -> dict[Path, Path] | None:
    """Map every defective test image under ``root`` to its mask, or ``None`` without ``ground_truth/``.

    Raises:
        FileNotFoundError: a required folder is missing or empty.
        ValueError: an image has no mask or a mask no image; the message lists them.

    """
    root = Path(root)
    _require_images(root / "train" / "good", "normal training images")
    _require_images(root / "test" / "good", "normal test images")
    defects = sorted(p for p in (root / "test").iterdir() if p.is_dir() and p.name != "good")
    if not defects:
        msg = f"Data layout: no defect folder in {root / 'test'}; add ROOT/test/<defect>/ with defective images."
        raise FileNotFoundError(msg)
    if not (root / "ground_truth").is_dir():
        for defect in defects:
            _require_images(defect, "defective test images")
        return None
    pairs: dict[Path, Path] = {}
    unmatched_images: list[str] = []
    unmatched_masks: list[str] = []
    for defect in defects:
        mask_dir = root / "ground_truth" / defect.name
        masks = {p.stem.removesuffix("_mask"): p for p in (_images(mask_dir) if mask_dir.is_dir() else [])}
        images = _require_images(defect, "defective test images")
        for image in images:
            if image.stem in masks:
                pairs[image] = masks.pop(image.stem)
            else:
                unmatched_images.append(str(image))
        unmatched_masks += [str(p) for p in masks.values()]
    if unmatched_images or unmatched_masks:
        lines = [f"  image without mask: {p}" for p in unmatched_images]
        lines += [f"  mask without image: {p}" for p in unmatched_masks]
        msg = (
            f"{layout} masks do not match the defective images (a mask for test/<defect>/NAME.<ext> is "
            "ground_truth/<defect>/NAME.<ext> or NAME_mask.<ext>):\n"
            + "\n".join(lines)
            + "\n"
            + (
                "Add or rename the masks, or remove ground_truth/ for image-level evaluation only."
                if layout == "Bottle-Cap"
                else "Add or rename the masks (anomalib's MVTecAD needs one per defective image)."
            )
        )
        raise ValueError(msg)
    return pairs


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
            extensions=IMAGE_EXTENSIONS,
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


__all__ = ["BottleCap", "match_masks"]
