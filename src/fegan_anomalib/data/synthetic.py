"""A seeded synthetic data set in MVTec AD layout, so FEGAN runs end to end with no download.

anomalib ships no data set that works offline, and MVTec AD is a 5 GB download. This generator
paints two small categories — ``texture`` (a woven surface) and ``object`` (a disc on a plain
background) — with two defect kinds each, ``scratch`` and ``stain``, and writes their masks where
anomalib's ``MVTecAD`` datamodule expects them::

    ROOT/<category>/train/good/000.png
    ROOT/<category>/test/good/000.png
    ROOT/<category>/test/<defect>/000.png
    ROOT/<category>/ground_truth/<defect>/000_mask.png

The same seed always gives the same files. Run it as ``fegan-synthetic ROOT``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = ("texture", "object")
DEFECTS = ("scratch", "stain")


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Paint a woven surface: crossed sinusoids with a random phase, slight tint and sensor noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / 12
    phase = rng.uniform(0, 2 * np.pi, 2)
    weave = 0.5 + 0.25 * np.sin(2 * np.pi * xx / period + phase[0]) * np.sin(2 * np.pi * yy / period + phase[1])
    tint = np.array([0.75, 0.6, 0.45]) + rng.normal(0, 0.02, 3)
    image = weave[..., None] * tint[None, None, :] + rng.normal(0, 0.03, (size, size, 3))
    return np.clip(image, 0, 1)


def _object(rng: np.random.Generator, size: int) -> np.ndarray:
    """Paint a grey disc with a darker rim on a light background, slightly displaced each time."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = size / 2 + rng.normal(0, size * 0.02, 2)
    radius = size * (0.32 + rng.normal(0, 0.005))
    distance = np.hypot(yy - centre[0], xx - centre[1])
    image = np.full((size, size, 3), 0.85, dtype=np.float32)
    image[distance < radius] = (0.45, 0.47, 0.5)
    image[(distance >= radius * 0.85) & (distance < radius)] = (0.3, 0.3, 0.32)
    image += rng.normal(0, 0.02, (size, size, 3))
    return np.clip(image, 0, 1)


def _defect_mask(rng: np.random.Generator, size: int, defect: str) -> np.ndarray:
    """Draw a boolean defect mask: a thick random line (scratch) or an irregular blob (stain), anywhere in the frame.

    Anywhere, not in a central box: a map that only says "the centre" (no model) would otherwise score a
    high pixel AUROC (0.94 with defects in the central 30-70 % box), and the demo prints that baseline.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    lo, hi = size * 0.05, size * 0.95
    if defect == "scratch":
        start, end = rng.uniform(lo, hi, 2), rng.uniform(lo, hi, 2)
        while np.hypot(*(end - start)) < size * 0.2:
            end = rng.uniform(lo, hi, 2)
        direction = (end - start) / np.hypot(*(end - start))
        rel = np.stack([yy - start[0], xx - start[1]], -1)
        along = np.clip(rel @ direction, 0, np.hypot(*(end - start)))
        closest = start[None, None, :] + along[..., None] * direction[None, None, :]
        return np.hypot(yy - closest[..., 0], xx - closest[..., 1]) < size * 0.02
    centre = rng.uniform(lo, hi, 2)
    angle = np.arctan2(yy - centre[0], xx - centre[1])
    wobble = 1 + 0.25 * np.sin(3 * angle + rng.uniform(0, 2 * np.pi))
    return np.hypot(yy - centre[0], xx - centre[1]) < size * 0.07 * wobble


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, defect: str) -> np.ndarray:
    colour = np.array([0.1, 0.1, 0.1]) if defect == "scratch" else np.array([0.55, 0.2, 0.15])
    colour = colour + rng.normal(0, 0.03, 3)
    painted = image.copy()
    painted[mask] = 0.2 * image[mask] + 0.8 * colour
    return np.clip(painted, 0, 1)


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((array * 255).round().astype(np.uint8)).save(path)


def make_synthetic_dataset(
    root: str | Path,
    categories: tuple[str, ...] = CATEGORIES,
    image_size: int = 128,
    num_train: int = 32,
    num_test_good: int = 8,
    num_test_defect: int = 8,
    seed: int = 0,
) -> Path:
    """Write the synthetic data set under ``root`` and return ``root``.

    Args:
        root: output folder; one sub-folder per category, MVTec AD layout.
        categories: any of ``"texture"``, ``"object"``.
        image_size: side of the square images in pixels.
        num_train: normal training images.
        num_test_good: normal test images.
        num_test_defect: test images per defect kind, each with its mask.
        seed: the whole data set is a function of this seed.

    """
    root = Path(root)
    painters = {"texture": _texture, "object": _object}
    unknown = set(categories) - set(painters)
    if unknown:
        msg = f"Unknown synthetic categories {sorted(unknown)}; choose from {CATEGORIES}."
        raise ValueError(msg)
    for index, category in enumerate(categories):
        rng = np.random.default_rng([seed, index])
        paint = painters[category]
        folder = root / category
        for i in range(num_train):
            _save(paint(rng, image_size), folder / "train" / "good" / f"{i:03d}.png")
        for i in range(num_test_good):
            _save(paint(rng, image_size), folder / "test" / "good" / f"{i:03d}.png")
        for defect in DEFECTS:
            for i in range(num_test_defect):
                mask = _defect_mask(rng, image_size, defect)
                _save(_paint(rng, paint(rng, image_size), mask, defect), folder / "test" / defect / f"{i:03d}.png")
                _save(mask.astype(np.float32), folder / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


def main(argv: list[str] | None = None) -> None:
    """``fegan-synthetic ROOT``: write the synthetic MVTec-layout data set."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="output folder (anomalib's --data.root)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = make_synthetic_dataset(args.root, image_size=args.image_size, seed=args.seed)
    print(f"synthetic MVTec-layout data set written to {root} (categories: {', '.join(CATEGORIES)})")


if __name__ == "__main__":
    main()
