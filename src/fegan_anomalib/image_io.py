"""Image files, read one way everywhere: the extensions FEGAN accepts and the 8/16-bit rule.

Used by the data checks, the Bottle-Cap datamodule, the input check callback, ``fegan-compare`` and
the edge tool ``fegan-infer``; needs NumPy and Pillow only (no torch), so the edge box can import it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# anomalib's Folder datamodule reads these too (anomalib.data.utils.path.IMG_EXTENSIONS is a superset)
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    """Return the image files of ``folder`` (by extension, case-insensitive), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def load_rgb(path: Path) -> np.ndarray:
    """Read any 8/16-bit grey, RGB or RGBA image as float32 RGB in [0, 1] (H, W, 3).

    16-bit images are scaled by their full range, not clipped at 255 as ``Image.convert("RGB")`` does.
    """
    if Path(path).stat().st_size == 0:
        msg = "empty file (0 bytes)"
        raise ValueError(msg)
    with Image.open(path) as image:
        image.load()
        if image.mode in {"I;16", "I;16B", "I;16L", "I"}:
            array = np.asarray(image, dtype=np.float32)
            array = array / (65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0)
            return np.repeat(array[..., None], 3, axis=2)
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
