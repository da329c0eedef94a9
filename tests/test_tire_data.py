"""``fegan-build-data tire``: MVTec 3D-AD *tire* from its public layout (``<split>/<kind>/rgb``, ``gt``) to MVTec AD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fegan_anomalib.data.checks import match_masks
from fegan_anomalib.experiments import datasets

from .test_build_commands import _build

SIZE = (40, 30)  # the source's width, height: not square, as the real tire images


def _rgb(path: Path, value: int) -> None:
    """A flat colour image whose red channel says which source file it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((SIZE[1], SIZE[0], 3), (value, 60, 30), dtype=np.uint8)).save(path)


def _gt(path: Path) -> None:
    """A mask that is not yet 0/255: 200 in the top-left quarter, 50 elsewhere (binarised to 255 and 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.full((SIZE[1], SIZE[0]), 50, dtype=np.uint8)
    mask[: SIZE[1] // 2, : SIZE[0] // 2] = 200
    Image.fromarray(mask, mode="L").save(path)


def _decoy(path: Path) -> None:
    """A depth map in ``xyz/``, as in 3D-AD: never read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\x00 not an image the converter should open")


@pytest.fixture
def tire_source(tmp_path: Path) -> Path:
    """The clone: ``dataset/mvtec_3d/tire`` with train 3, test good 2, cut 2 (named 005, 002), hole 1."""
    root = tmp_path / "clone" / datasets.TIRE_SUBPATH
    files = {
        "train/good": {"000.png": 100, "001.png": 101, "002.png": 102},
        "validation/good": {"000.png": 150},  # not in SOURCES.md's counts: not read
        "test/good": {"000.png": 110, "001.png": 111},
        "test/cut": {"005.png": 125, "002.png": 122},
        "test/hole": {"000.png": 130},
    }
    for split, images in files.items():
        for name, value in images.items():
            _rgb(root / split / "rgb" / name, value)
            _decoy(root / split / "xyz" / name.replace(".png", ".tiff"))
            if split.startswith("test/"):
                _gt(root / split / "gt" / name)  # test/good's masks are empty in 3D-AD: not needed
    (root / "license.txt").write_text("CC BY-NC-SA 4.0\n")
    (root / "readme.txt").write_text("MVTec 3D-AD\n")
    return tmp_path / "clone"


def _red(path: Path) -> int:
    return int(np.asarray(Image.open(path))[..., 0].mean().round())


def test_tire_is_built_in_mvtec_layout(tire_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sets"
    datasets.main(["tire", str(tire_source), "--out", str(out), "--size", "32"])
    printed = capsys.readouterr().out
    root = out / "tire"
    for split, count in (("train/good", 3), ("test/good", 2), ("test/cut", 2), ("test/hole", 1)):
        assert f"  {split}: {count}" in printed
        assert sorted(p.name for p in (root / split).iterdir()) == [f"{i:03d}.png" for i in range(count)]
    assert "beside it: license.txt, readme.txt" in printed and "--data.category tire" in printed
    assert sorted(p.name for p in root.iterdir()) == ["ground_truth", "license.txt", "readme.txt", "test", "train"]
    assert (root / "license.txt").read_text() == "CC BY-NC-SA 4.0\n"
    assert sorted(p.name for p in (root / "ground_truth").iterdir()) == ["cut", "hole"]  # good images: no masks
    assert sorted(p.name for p in (root / "ground_truth" / "cut").iterdir()) == ["000_mask.png", "001_mask.png"]
    # sorted source order: 000 is the former 002.png, 001 the former 005.png; nothing from validation/
    assert [_red(root / "test" / "cut" / f"00{i}.png") for i in (0, 1)] == [122, 125]
    assert [_red(p) for p in sorted((root / "train" / "good").iterdir())] == [100, 101, 102]
    image = Image.open(root / "train" / "good" / "000.png")
    assert image.mode == "RGB" and image.size == (32, 32)
    mask = Image.open(root / "ground_truth" / "hole" / "000_mask.png")
    assert mask.mode == "L" and mask.size == (32, 32)
    pixels = np.asarray(mask)
    assert set(np.unique(pixels)) == {0, 255} and pixels[:16, :16].all() and not pixels[16:, 16:].any()
    assert len(match_masks(root, layout="MVTec AD")) == 3  # every defective image has its mask by name


def test_tire_from_the_tire_folder_and_unaligned_on_top(
    tire_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """SOURCE may be the tire folder itself; ``mvtec --unaligned`` then copies the built set, licence and all."""
    first = _build(["tire", str(tire_source), "--out", str(tmp_path / "a"), "--size", "16"], capsys)
    again = _build(["tire", str(tire_source / datasets.TIRE_SUBPATH), "--out", str(tmp_path / "b"), "--size", "16"],
                   capsys)  # fmt: skip
    assert first == again
    _build(["mvtec", str(tmp_path / "a" / "tire"), "--unaligned", "--out", str(tmp_path / "a"), "--size", "16"], capsys)
    unaligned = tmp_path / "a" / "tire_unaligned"
    assert len(match_masks(unaligned, layout="MVTec AD")) == 3 and (unaligned / "license.txt").is_file()


def test_tire_defect_without_its_gt_mask_names_the_file(
    tire_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tire_source / datasets.TIRE_SUBPATH / "test" / "cut" / "gt" / "005.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"test/cut/rgb/005\.png has no mask \(.*test/cut/gt/005\.png\)"):
        _build(["tire", str(tire_source), "--out", str(tmp_path / "o")], capsys)


def test_tire_wrong_or_empty_folders_say_which(
    tire_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no images in .*empty/train/good/rgb .*clone"):
        _build(["tire", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys)
    hole = tire_source / datasets.TIRE_SUBPATH / "test" / "hole" / "rgb"
    for image in hole.iterdir():
        image.unlink()
    with pytest.raises(FileNotFoundError, match=r"no images in .*test/hole/rgb \(defective 'hole' images\)"):
        _build(["tire", str(tire_source), "--out", str(tmp_path / "o")], capsys)
