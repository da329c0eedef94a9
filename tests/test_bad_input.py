"""Bad input stops a run before its first step, naming every offending file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from PIL import Image

from fegan_anomalib import Fegan


def _engine(tmp_path: Path) -> Engine:
    return Engine(default_root_dir=tmp_path / "results", logger=False, enable_progress_bar=False, max_epochs=1)


def _copy(synthetic_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    return root


def test_unreadable_images_and_misfit_masks_are_listed(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_root, tmp_path)
    (root / "texture" / "train" / "good" / "001.png").write_bytes(b"")
    (root / "texture" / "train" / "good" / "002.png").write_bytes(b"garbage, not a PNG")
    mask = root / "texture" / "ground_truth" / "stain" / "000_mask.png"
    Image.open(mask).resize((20, 20)).save(mask)
    datamodule = MVTecAD(root=root, category="texture", num_workers=0, train_batch_size=4, eval_batch_size=4)
    model = Fegan(image_size=32, pre_trained=False, max_epochs=1)
    with pytest.raises(ValueError, match=r"3 problem\(s\) in the input data") as error:
        _engine(tmp_path).fit(model, datamodule=datamodule)
    message = str(error.value)
    assert f"{root / 'texture' / 'train' / 'good' / '001.png'}: empty file (0 bytes)" in message
    assert f"{root / 'texture' / 'train' / 'good' / '002.png'}: unreadable image" in message
    assert f"{mask}: mask is 20x20" in message
    assert "Fix:" in message


def test_grayscale_rgba_and_small_images_are_accepted(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_root, tmp_path)
    train = root / "texture" / "train" / "good"
    Image.open(train / "000.png").convert("L").save(train / "000.png")
    Image.open(train / "001.png").convert("RGBA").save(train / "001.png")
    Image.open(train / "002.png").resize((16, 16)).save(train / "002.png")  # smaller than the 32x32 input
    datamodule = MVTecAD(root=root, category="texture", num_workers=0, train_batch_size=8, eval_batch_size=8)
    model = Fegan(image_size=32, pre_trained=False, max_epochs=1, visualizer=False)
    engine = _engine(tmp_path)
    engine.fit(model, datamodule=datamodule)
    assert engine.trainer.global_step > 0  # trained through the grey, RGBA and small images


def test_mvtec_defect_image_without_mask_is_named(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_root, tmp_path)
    (root / "texture" / "ground_truth" / "stain" / "001_mask.png").unlink()
    orphan = root / "texture" / "ground_truth" / "stain" / "009_mask.png"
    shutil.copy(root / "texture" / "ground_truth" / "stain" / "000_mask.png", orphan)
    datamodule = MVTecAD(root=root, category="texture", num_workers=0, train_batch_size=4, eval_batch_size=4)
    model = Fegan(image_size=32, pre_trained=False, max_epochs=1)
    with pytest.raises(ValueError, match="MVTec AD masks do not match") as error:
        _engine(tmp_path).fit(model, datamodule=datamodule)
    assert f"image without mask: {root / 'texture' / 'test' / 'stain' / '001.png'}" in str(error.value)
    assert f"mask without image: {orphan}" in str(error.value)


def test_mvtec_without_ground_truth_points_to_bottle_cap(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_root, tmp_path)
    shutil.rmtree(root / "texture" / "ground_truth")
    datamodule = MVTecAD(root=root, category="texture", num_workers=0, train_batch_size=4, eval_batch_size=4)
    with pytest.raises(FileNotFoundError, match=r"no ground_truth/ folder.*BottleCap"):
        _engine(tmp_path).fit(Fegan(image_size=32, pre_trained=False, max_epochs=1), datamodule=datamodule)


def test_16_bit_training_images_are_scaled_not_clipped(synthetic_root: Path, tmp_path: Path) -> None:
    root = _copy(synthetic_root, tmp_path)
    path = root / "texture" / "train" / "good" / "000.png"
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint16) * 257  # the same picture on 16 bits
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode.startswith("I")  # PIL's convert("RGB") would clip it to white
    datamodule = MVTecAD(root=root, category="texture", num_workers=0, train_batch_size=8, eval_batch_size=8)
    engine = _engine(tmp_path)
    engine.fit(Fegan(image_size=32, pre_trained=False, max_epochs=1, visualizer=False), datamodule=datamodule)
    (converted,) = [p for p in datamodule.train_data.samples.image_path if "converted_8bit" in p]
    assert Path(converted).parent.name == "converted_8bit" and (tmp_path / "results") in Path(converted).parents
    restored = np.asarray(Image.open(converted).convert("L"), dtype=np.int32)
    assert np.abs(restored - grey.astype(np.int32) // 257).max() <= 1
    assert str(path) not in set(datamodule.train_data.samples.image_path)
