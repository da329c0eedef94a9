"""Bad input stops a run before its first step, naming every offending file."""

from __future__ import annotations

import shutil
from pathlib import Path

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
