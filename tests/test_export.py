"""Export: the OpenVINO graph agrees with the torch model, and carries nothing training-only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data.utils import read_image
from anomalib.deploy import OpenVINOInferencer
from PIL import Image

from fegan_anomalib import Fegan
from fegan_anomalib.infer import load_rgb, main, run

from .conftest import checkpoint_of


def test_openvino_fp32_matches_torch(
    trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # OpenVINOInferencer writes ./openvino_cache
    model = Fegan.load_from_checkpoint(checkpoint_of(trained[0])).eval()
    xml = model.to_openvino(export_root=tmp_path)
    graph = xml.read_text()
    assert "discriminator" not in graph.lower()  # training-only parts stay out of the graph
    paths = sorted((synthetic_root / "texture" / "test").glob("*/*.png"))[:4]
    images = torch.stack([read_image(p, as_tensor=True) for p in paths])  # (4, 3, 64, 64) in [0, 1]
    # at the model's size, so both pipelines' resize is the identity: anomalib exports Resize without
    # antialiasing (ONNX has none), which alone moves scores by ~0.005 at a 2x downscale
    images = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=True)
    with torch.no_grad():
        expected = model(images)  # pre-processing (resize to 32) + model + post-processing
    # OpenVINO runs in bfloat16 by default on CPUs that have it; FP32 parity needs the f32 hint
    inferencer = OpenVINOInferencer(xml, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    actual = inferencer.predict(images.numpy())  # one call: dynamic batch of 4
    np.testing.assert_allclose(actual.pred_score.reshape(-1), expected.pred_score.numpy().reshape(-1), atol=1e-4)
    np.testing.assert_allclose(
        actual.anomaly_map.reshape(4, 32, 32), expected.anomaly_map.numpy().reshape(4, 32, 32), atol=1e-3
    )
    assert np.array_equal(actual.pred_label.reshape(-1), expected.pred_label.numpy().reshape(-1))
    single = inferencer.predict(images[0].numpy())
    np.testing.assert_allclose(single.pred_score.reshape(-1), expected.pred_score.numpy()[:1].reshape(-1), atol=1e-4)


def test_fegan_infer_reports_unreadable_files_and_processes_the_rest(
    trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # OpenVINOInferencer writes ./openvino_cache
    model = Fegan.load_from_checkpoint(checkpoint_of(trained[0])).eval()
    xml = model.to_openvino(export_root=tmp_path / "export")
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((synthetic_root / "texture" / "test" / "scratch").glob("*.png")):
        shutil.copy(path, folder / path.name)
    (folder / "empty.png").write_bytes(b"")
    (folder / "broken.jpg").write_bytes(b"not an image")
    grey16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    with pytest.raises(SystemExit) as exit_info:
        main([str(xml), str(folder), "--out", str(tmp_path / "out"), "--precision", "f32"])
    assert exit_info.value.code == 1
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 5  # header + 2 images + 16-bit image + 2 unreadable files
    assert any("empty.png" in row and "empty file" in row for row in rows)
    assert any("broken.jpg" in row and "unreadable" in row for row in rows)
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    with pytest.raises(ValueError, match="precision must be one of"):
        run(xml, folder, tmp_path / "out2", precision="int4")


def test_16_bit_images_keep_their_range(tmp_path: Path) -> None:
    grey16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g.png")
    image = load_rgb(tmp_path / "g.png")
    assert image.shape == (64, 64, 3)
    assert abs(float(image.mean()) - 0.5) < 0.01  # convert("RGB") would saturate almost everything to 1.0
