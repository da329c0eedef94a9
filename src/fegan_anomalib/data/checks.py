"""Data checks that name the file: masks matched to defective images by name, before anomalib reads them.

anomalib's ``MVTecAD`` and ``Folder`` pair masks with defective images by sorted position: a missing
mask fails inside pandas ("Must have equal len keys and value") without naming a file, and a
missing ``ground_truth`` folder the same way. These checks name every image without a mask and
every mask without an image, and say how to fix the layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fegan_anomalib.image_io import EXTENSIONS, list_images


def _require_images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        msg = (
            f"Data layout: missing folder {folder} ({what}). "
            f"Expected ROOT/train/good, ROOT/test/good, ROOT/test/<defect>."
        )
        raise FileNotFoundError(msg)
    images = list_images(folder)
    if not images:
        msg = f"Data layout: {folder} holds no images ({', '.join(EXTENSIONS)}); add {what} there."
        raise FileNotFoundError(msg)
    return images


def masks_by_stem(folder: Path) -> dict[str, Path]:
    """Return the masks of ``folder`` by the stem of their image (``NAME.<ext>`` or ``NAME_mask.<ext>``)."""
    return {p.stem.removesuffix("_mask"): p for p in list_images(folder)} if folder.is_dir() else {}


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
        masks = masks_by_stem(mask_dir)
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


def check_mvtec_masks(datamodule: Any) -> None:
    """For an anomalib ``MVTecAD`` datamodule on a local folder, check its masks by name (``match_masks``).

    Called from ``Fegan.prepare_data``, which Lightning runs before the datamodule's ``setup``. Any
    other datamodule, or a category not on disk yet (anomalib's own ``prepare_data`` downloads it or
    says it cannot), passes unchecked.
    """
    from anomalib.data import MVTecAD  # noqa: PLC0415 - anomalib is loaded whenever a datamodule exists

    if not isinstance(datamodule, MVTecAD):
        return
    folder = Path(datamodule.root) / datamodule.category
    if not folder.is_dir():
        return
    if match_masks(folder, layout="MVTec AD") is None:
        msg = (
            f"{folder} has defective test images but no ground_truth/ folder. anomalib's MVTecAD needs a "
            f"mask per defective image (ground_truth/<defect>/NAME_mask.png); for image-level data use "
            f"fegan_anomalib.data.BottleCap, which accepts a folder without masks."
        )
        raise FileNotFoundError(msg)
