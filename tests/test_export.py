"""Export: the OpenVINO graph agrees with the torch model, and carries nothing training-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from anomalib.data.utils import read_image
from anomalib.deploy import OpenVINOInferencer

from fegan_anomalib import Fegan

from .conftest import checkpoint_of


def test_openvino_fp32_matches_torch(trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path) -> None:
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
