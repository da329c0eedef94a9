"""``fegan-build-data SET SOURCE --out datasets``: the benchmarks' real MVTec-layout sets, from public sources.

Two sets are used in BENCHMARKS.md and ABLATIONS.md, a third (``tire``) where parts move. Download the source
yourself (a git clone), then convert it here; nothing is fetched by this command.

- ``magnetic_tile``: the magnetic-tile surface-defect data set of Huang, Qiu, Yuan ("Surface defect
  saliency of magnetic tile", The Visual Computer 2020), repository ``abin24/Magnetic-tile-defect-datasets.``
  (the trailing dot is part of its name; commit 01aa7163497d8639b1841022ca94ce9baea98c26).
  ``SOURCE`` is the clone: ``MT_<Kind>/Imgs/<stem>.jpg`` with the mask ``<stem>.png`` beside it. The
  normal tiles (``MT_Free``) are shuffled with ``--seed`` and split ``--train-normals`` (400) /
  ``--test-normals`` (150); every defective tile (blowhole 115, break 85, crack 57, fray 32,
  uneven 103) goes to ``test/<kind>`` with its mask. The authors ask users to cite their paper.
- ``hazelnut_mini``: the hazelnut test assets of ``openvinotoolkit/training_extensions``
  (``tests/assets/anomaly/hazelnut``: train 28, test good 6, colour 17 with masks), a subset of MVTec
  AD *hazelnut* (CC BY-NC-SA 4.0, MVTec Software GmbH: non-commercial evaluation only). ``SOURCE`` is
  the clone or that folder.
- ``tire``: MVTec 3D-AD *tire* (Bergmann et al., VISAPP 2022; CC BY-NC-SA 4.0, MVTec Software GmbH:
  non-commercial evaluation only), RGB images and ground truth only, as published in the repository
  ``yagamieren09/Automated-Defect-Detection-System-using-AI-vision`` (commit bd3a0214, folder
  ``dataset/mvtec_3d/tire``). ``SOURCE`` is the clone or that folder: ``train/good/rgb/*.png`` go to
  ``train/good``, ``test/<kind>/rgb/*.png`` to ``test/<kind>``, each defective image with its mask
  ``test/<kind>/gt/<same name>`` (good test images need none). Depth (``xyz/``) and the ``validation/`` split are
  not read (train 210 · test good 25 · combined 5 · contamination 28 · cut 27 · hole 27). The set's
  ``license.txt`` and ``readme.txt`` are copied beside it.

- ``mvtec``: any folder already in MVTec AD layout (``train/good``, ``test/<kind>``, ``ground_truth/<kind>``), such
  as a set this command built; the set is named after the folder. With ``--unaligned`` this is how an unaligned
  copy of a built set is made.

Every image is resized to ``--size``² (bicubic; grey stays grey), every mask nearest-neighbour and
binarised to 0/255, files renumbered ``000.png`` ... in sorted source order, masks ``NNN_mask.png``:
anomalib's ``MVTecAD`` reads the result (``--data.root datasets --data.category magnetic_tile``). The
command prints the counts and a SHA-256 of the set's decoded pixels and relative paths, so two
builds can be compared whatever PNG encoder wrote them.

``--unaligned`` writes ``OUT/<set>_unaligned`` instead: every train and test image, and its mask with it, turned by
a seeded random angle in [0°, 360°) and shifted by up to 10 % of the side in each direction (``--unaligned-seed``),
the frame filled by reflection. The product then sits at another angle and place in every image, as parts do
on a conveyor without a fixture, so a score that learnt where things usually are cannot hold (BENCHMARKS.md,
"Unaligned parts").
"""

from __future__ import annotations

import argparse
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fegan_anomalib.data.checks import masks_by_stem
from fegan_anomalib.image_io import list_images

MAGNETIC_TILE_KINDS = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
HAZELNUT_SUBPATH = Path("tests/assets/anomaly/hazelnut")
TIRE_SUBPATH = Path("dataset/mvtec_3d/tire")
NOTICES = ("license.txt", "readme.txt")  # copied beside the set when the source has them


@dataclass
class Layout:
    """Source files of one MVTec-layout set: split/kind → images, and each defective image's mask."""

    images: dict[str, list[Path]] = field(default_factory=dict)  # "train/good", "test/good", "test/<kind>"
    masks: dict[Path, Path] = field(default_factory=dict)
    notices: list[Path] = field(default_factory=list)  # text files copied as they are beside the set (NOTICES)


def _require_folder(folder: Path, what: str) -> list[Path]:
    images = list_images(folder) if folder.is_dir() else []
    if not images:
        msg = f"Source layout: no images in {folder} ({what}). Is SOURCE the clone of the set's repository?"
        raise FileNotFoundError(msg)
    return images


def magnetic_tile_layout(source: Path, train_normals: int, test_normals: int, seed: int) -> Layout:
    """Collect the magnetic-tile clone: shuffled MT_Free split into train/test, defects with their masks."""
    normals = [p for p in _require_folder(source / "MT_Free" / "Imgs", "normal tiles") if p.suffix.lower() == ".jpg"]
    if len(normals) < train_normals + test_normals:
        msg = (
            f"{source / 'MT_Free' / 'Imgs'} has {len(normals)} normal tiles, fewer than "
            f"--train-normals {train_normals} + --test-normals {test_normals}."
        )
        raise ValueError(msg)
    order = np.random.default_rng(seed).permutation(len(normals))
    layout = Layout()
    layout.images["train/good"] = sorted(normals[i] for i in order[:train_normals])
    layout.images["test/good"] = sorted(normals[i] for i in order[train_normals : train_normals + test_normals])
    for kind in MAGNETIC_TILE_KINDS:
        folder = source / f"MT_{kind}" / "Imgs"
        images = [p for p in _require_folder(folder, f"{kind.lower()} tiles") if p.suffix.lower() == ".jpg"]
        layout.images[f"test/{kind.lower()}"] = images
        for image in images:
            layout.masks[image] = _mask_of(image, image.with_suffix(".png"))
    return layout


def hazelnut_layout(source: Path) -> Layout:
    """Collect the training_extensions hazelnut assets (already MVTec-like: masks ``<stem>.png`` or ``_mask``)."""
    return mvtec_layout(source / HAZELNUT_SUBPATH if (source / HAZELNUT_SUBPATH).is_dir() else source)


def mvtec_layout(root: Path) -> Layout:
    """Collect a folder in MVTec AD layout: masks in ``ground_truth/<kind>`` named ``<stem>.png`` or ``<stem>_mask``."""
    layout = Layout()
    layout.images["train/good"] = _require_folder(root / "train" / "good", "normal training images")
    layout.images["test/good"] = _require_folder(root / "test" / "good", "normal test images")
    kinds = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name != "good")
    for kind in kinds:
        images = _require_folder(root / "test" / kind, f"defective '{kind}' images")
        layout.images[f"test/{kind}"] = images
        masks = masks_by_stem(root / "ground_truth" / kind)
        for image in images:
            layout.masks[image] = _mask_of(image, masks.get(image.stem))
    layout.notices = _notices(root)
    return layout


def tire_layout(source: Path) -> Layout:
    """Collect MVTec 3D-AD *tire* (RGB only): ``<split>/<kind>/rgb/*.png``, masks ``test/<kind>/gt/<same name>``."""
    root = source / TIRE_SUBPATH if (source / TIRE_SUBPATH).is_dir() else source
    layout = Layout()
    layout.images["train/good"] = _require_folder(root / "train" / "good" / "rgb", "normal training images")
    layout.images["test/good"] = _require_folder(root / "test" / "good" / "rgb", "normal test images")
    kinds = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name != "good")
    if not kinds:
        msg = (
            f"Source layout: no defect kinds in {root / 'test'} (test/<kind>/rgb beside test/good). "
            "Is SOURCE the tire folder of the clone?"
        )
        raise FileNotFoundError(msg)
    for kind in kinds:
        images = _require_folder(root / "test" / kind / "rgb", f"defective '{kind}' images")
        layout.images[f"test/{kind}"] = images
        for image in images:
            layout.masks[image] = _mask_of(image, root / "test" / kind / "gt" / image.name)
    layout.notices = _notices(root)
    return layout


def _notices(root: Path) -> list[Path]:
    return [root / name for name in NOTICES if (root / name).is_file()]


def _mask_of(image: Path, mask: Path | None) -> Path:
    if mask is None or not mask.is_file():
        msg = (
            f"Source layout: defective image {image} has no mask ({mask or 'ground_truth/<kind>/<stem>.png'}). "
            "Restore the mask from the source's repository, or remove the image."
        )
        raise FileNotFoundError(msg)
    return mask


# the frame is filled by reflection out to this share of the side: a turned, shifted square never reaches past it
# (half the diagonal, 0.71, plus the shift, up to 0.14 along a diagonal, is under 0.5 + 0.36)
UNALIGNED_PAD = 0.36
UNALIGNED_SHIFT = 0.10


def unaligned_draws(rng: np.random.Generator) -> tuple[float, float, float]:
    """One image's angle in degrees [0, 360) and shift as shares of the side in [-0.1, 0.1]."""
    angle, shift_x, shift_y = rng.uniform(
        (0.0, -UNALIGNED_SHIFT, -UNALIGNED_SHIFT), (360.0, UNALIGNED_SHIFT, UNALIGNED_SHIFT)
    )
    return float(angle), float(shift_x), float(shift_y)


def unalign(image: Image.Image, draws: tuple[float, float, float], is_mask: bool) -> Image.Image:
    """Turn and shift ``image`` about its centre, the frame filled by reflection (a mask: nearest, binarised)."""
    angle, shift_x, shift_y = draws
    width, height = image.size
    pad = math.ceil(UNALIGNED_PAD * max(width, height)) + 2
    pixels = np.asarray(image)
    padding = ((pad, pad), (pad, pad)) + (((0, 0),) if pixels.ndim == 3 else ())
    padded = Image.fromarray(np.pad(pixels, padding, mode="reflect"), mode=image.mode)
    turned = padded.rotate(
        angle,
        resample=Image.NEAREST if is_mask else Image.BILINEAR,
        translate=(shift_x * width, shift_y * height),
    ).crop((pad, pad, pad + width, pad + height))
    if is_mask:
        return Image.fromarray(np.where(np.asarray(turned) > 127, 255, 0).astype(np.uint8), mode="L")
    return turned


def _resized(path: Path, size: int, is_mask: bool) -> Image.Image:
    with Image.open(path) as source:
        if is_mask:
            mask = np.asarray(source.convert("L").resize((size, size), Image.NEAREST))
            return Image.fromarray(np.where(mask > 127, 255, 0).astype(np.uint8), mode="L")
        converted = source.convert("L" if source.mode in {"L", "I;16", "I;16B", "I;16L", "I", "1"} else "RGB")
        return converted.resize((size, size), Image.BICUBIC)


def write_layout(layout: Layout, out: Path, size: int, unaligned_seed: int | None = None) -> tuple[dict[str, int], str]:
    """Write the set under ``out`` (which must not hold one yet); return counts per folder and the checksum.

    With ``unaligned_seed``, every image and its mask are turned and shifted alike (:func:`unalign`), one draw per
    image in the order written. The layout's notices are copied beside the set, outside the checksum.
    """
    rng = np.random.default_rng(unaligned_seed) if unaligned_seed is not None else None
    if out.exists() and any(out.iterdir()):
        msg = f"{out} exists and is not empty: remove it or choose another --out."
        raise FileExistsError(msg)
    digest = hashlib.sha256()
    counts = {}
    for split, images in sorted(layout.images.items()):
        counts[split] = len(images)
        kind = split.split("/")[1]
        for number, source in enumerate(images):
            outputs = [(Path(split) / f"{number:03d}.png", source, False)]
            if source in layout.masks:
                outputs.append((Path("ground_truth") / kind / f"{number:03d}_mask.png", layout.masks[source], True))
            draws = unaligned_draws(rng) if rng is not None else None
            for relative, path, is_mask in outputs:
                image = _resized(path, size, is_mask)
                image = unalign(image, draws, is_mask) if draws is not None else image
                (out / relative).parent.mkdir(parents=True, exist_ok=True)
                image.save(out / relative)
                digest.update(f"{relative.as_posix()}|{image.mode}|{image.size}|".encode())
                digest.update(image.tobytes())
    for notice in layout.notices:
        (out / notice.name).write_bytes(notice.read_bytes())
    return counts, digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    """Convert a downloaded source into an MVTec-layout set and print its counts and checksum."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set", choices=("magnetic_tile", "hazelnut_mini", "tire", "mvtec"))
    parser.add_argument(
        "source", type=Path, help="the downloaded source (a git clone of its repository); for mvtec, the set's folder"
    )
    parser.add_argument("--out", type=Path, default=Path("datasets"), help="data root; the set goes in OUT/SET")
    parser.add_argument("--size", type=int, default=256, help="side of the square images (default 256)")
    parser.add_argument("--train-normals", type=int, default=400, help="magnetic_tile: normal training tiles")
    parser.add_argument("--test-normals", type=int, default=150, help="magnetic_tile: normal test tiles")
    parser.add_argument("--seed", type=int, default=0, help="magnetic_tile: shuffle of the normal tiles")
    parser.add_argument(
        "--unaligned", action="store_true", help="turn and shift every image with its mask; writes OUT/<set>_unaligned"
    )
    parser.add_argument("--unaligned-seed", type=int, default=0, help="seeds each image's angle and shift")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        parser.error(f"source {args.source} is not a folder: clone the set's repository first (see --help)")
    name = args.source.resolve().name if args.set == "mvtec" else args.set
    if args.set == "magnetic_tile":
        layout = magnetic_tile_layout(args.source, args.train_normals, args.test_normals, args.seed)
    elif args.set == "hazelnut_mini":
        layout = hazelnut_layout(args.source)
    elif args.set == "tire":
        layout = tire_layout(args.source)
    else:
        layout = mvtec_layout(args.source)
    name = f"{name}_unaligned" if args.unaligned else name
    seed = args.unaligned_seed if args.unaligned else None
    counts, digest = write_layout(layout, args.out / name, args.size, seed)
    print(f"wrote {args.out / name} ({args.size}x{args.size}{', unaligned' if args.unaligned else ''}):")
    for split, count in counts.items():
        print(f"  {split}: {count}" + (" (with masks)" if split.startswith("test/") and split != "test/good" else ""))
    if layout.notices:
        print(f"  beside it: {', '.join(p.name for p in layout.notices)}")
    print(f"sha256 of the set (paths and pixels): {digest}")
    print(f"use: --data anomalib.data.MVTecAD --data.root {args.out} --data.category {name}")


if __name__ == "__main__":
    main()
