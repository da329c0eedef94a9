"""The Bottle-Cap Folder datamodule on generated folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fegan_anomalib.data import BottleCap


def _write(path: Path, value: int = 128, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def _folder(root: Path, masks: bool = True) -> Path:
    for i in range(4):
        _write(root / "train" / "good" / f"{i:03d}.png")
    _write(root / "test" / "good" / "000.jpg")
    _write(root / "test" / "good" / "001.bmp")
    for defect in ("scratch", "dent"):
        for i in range(2):
            _write(root / "test" / defect / f"{i:03d}.png", value=30)
            if masks:
                mask = np.zeros((32, 32), dtype=np.uint8)
                mask[8:16, 8:16] = 255
                name = f"{i:03d}_mask.png" if defect == "scratch" else f"{i:03d}.png"
                (root / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(root / "ground_truth" / defect / name)
    return root


def test_reads_images_and_masks_matched_by_name(tmp_path: Path) -> None:
    datamodule = BottleCap(root=_folder(tmp_path / "caps"), num_workers=0, val_split_mode="none")
    datamodule.setup()
    train, test = datamodule.train_data.samples, datamodule.test_data.samples
    assert len(train) == 4 and len(test) == 6
    assert sorted(Path(p).suffix for p in test.image_path if "good" in p) == [".bmp", ".jpg"]
    anomalous = test[test.label_index == 1]
    assert all(
        Path(m).parent.name == Path(i).parent.name
        for i, m in zip(anomalous.image_path, anomalous.mask_path, strict=True)
    )
    item = datamodule.test_data[int(anomalous.index[0])]
    assert item.gt_mask.sum() == 64


def test_without_ground_truth_is_image_level(tmp_path: Path) -> None:
    datamodule = BottleCap(root=_folder(tmp_path / "caps", masks=False), num_workers=0, val_split_mode="none")
    datamodule.setup()
    assert (datamodule.test_data.samples.mask_path == "").all()
    assert datamodule.test_data.task.value == "classification"


def test_unmatched_masks_and_images_are_named(tmp_path: Path) -> None:
    root = _folder(tmp_path / "caps")
    (root / "ground_truth" / "dent" / "001.png").unlink()
    _write(root / "ground_truth" / "scratch" / "077_mask.png")
    with pytest.raises(ValueError, match="image without mask") as error:
        BottleCap(root=root)
    message = str(error.value)
    assert str(root / "test" / "dent" / "001.png") in message
    assert str(root / "ground_truth" / "scratch" / "077_mask.png") in message


def test_wrong_layout_names_the_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "caps")
    for image in (root / "train" / "good").iterdir():
        image.unlink()
    with pytest.raises(FileNotFoundError, match=r"train/good holds no images"):
        BottleCap(root=root)
    with pytest.raises(FileNotFoundError, match="missing folder"):
        BottleCap(root=tmp_path / "nothing")
