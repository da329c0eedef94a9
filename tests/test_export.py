"""Export: the OpenVINO graph agrees with the torch model, and carries nothing training-only."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.data.utils import read_image
from anomalib.deploy import OpenVINOInferencer
from anomalib.engine import Engine
from PIL import Image

from fegan_anomalib import Fegan
from fegan_anomalib.deploy.infer import load_rgb, main, run

from .conftest import TINY, anomalib_cli, checkpoint_of


@pytest.mark.parametrize(
    "scoring",
    [{}, {"image_score_from": "anomaly_map"}, {"density_reweighting": True}],
    ids=["default", "score-from-S", "density-reweighting"],
)
def test_openvino_fp32_matches_torch(
    scoring: dict[str, str],
    trained: tuple[Path, str],
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # OpenVINOInferencer writes ./openvino_cache
    model = Fegan.load_from_checkpoint(checkpoint_of(trained[0]), **scoring, visualizer=False)
    if scoring:  # another score's scale: export refuses the checkpoint's thresholds until a test re-learns them
        datamodule = MVTecAD(root=synthetic_root, category="texture", eval_batch_size=4, num_workers=0)
        Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False).test(model, datamodule=datamodule)
    model.eval()
    generator = model.model.anomaly_map_generator
    assert generator.feature_distance == "mahalanobis+nearest" and generator.memory_bank.shape[0] > 0  # the default
    assert generator.image_score_from == scoring.get("image_score_from", "feature_map")  # the default reads F [A8c]
    assert generator.density_reweighting == scoring.get("density_reweighting", False)  # [A7f]: argmin and gather
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
    # README's edge path: anomalib's CLI export of the trained checkpoint, then fegan-infer on a folder
    anomalib_cli(
        "export", "--model", "FEGAN", *TINY, "--ckpt_path", str(checkpoint_of(trained[0])),
        "--export_type", "openvino", "--default_root_dir", str(tmp_path / "export"), cwd=tmp_path,
    )  # fmt: skip
    xml = tmp_path / "export" / "weights" / "openvino" / "model.xml"
    folder = tmp_path / "images"
    folder.mkdir()
    for kind in ("good", "scratch"):  # normal and defective parts: the scores must differ for --threshold
        for path in sorted((synthetic_root / "texture" / "test" / kind).glob("*.png"))[:2]:
            shutil.copy(path, folder / f"{kind}_{path.name}")
    (folder / "empty.png").write_bytes(b"")
    (folder / "broken.jpg").write_bytes(b"not an image")
    grey16 = (np.linspace(0, 65535, 50 * 90).reshape(50, 90)).astype(np.uint16)  # 16-bit, grey, not square
    Image.fromarray(grey16).save(folder / "grey16.png")
    Image.fromarray(np.full((120, 40, 3), 128, np.uint8)).save(folder / "tall.jpg")  # another size again
    with pytest.raises(SystemExit) as exit_info:
        main([str(xml), str(folder), "--out", str(tmp_path / "out"), "--precision", "f32"])
    assert exit_info.value.code == 1
    with (tmp_path / "out" / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8  # 4 images + 16-bit image + tall image + 2 unreadable files
    assert any("empty.png" in row["image"] and "empty file" in row["error"] for row in rows)
    assert any("broken.jpg" in row["image"] and "unreadable" in row["error"] for row in rows)
    predicted = [row for row in rows if not row["error"]]
    assert len(predicted) == len(list((tmp_path / "out").glob("*.png"))) == 6
    for row in predicted:  # the original at its own size, the heat map beside it at the same size
        with Image.open(row["image"]) as source, Image.open(row["heat_map"]) as written:
            assert (int(row["width"]), int(row["height"])) == source.size
            assert written.size == (2 * source.width + 8, source.height)
    # full-size images score as the Lightning model tests them (antialiased resize, then model and post-processor),
    # not as the graph's own non-antialiased resize would: 1.0 for every image of this folder before the fix
    model = Fegan.load_from_checkpoint(checkpoint_of(trained[0])).eval()
    for row in [row for row in predicted if Path(row["image"]).name.startswith(("good_", "scratch_"))]:  # 64²
        image = torch.from_numpy(load_rgb(Path(row["image"]))).permute(2, 0, 1).unsqueeze(0)
        with torch.no_grad():
            expected = model.post_processor(model.model(model.pre_processor.transform(image))).pred_score
        assert float(row["pred_score"]) == pytest.approx(float(expected), abs=1e-4), row["image"]
    # --threshold moves the decision line on the normalised score, without re-exporting
    scores = [float(row["pred_score"]) for row in predicted]
    assert min(scores) < max(scores)
    line = (min(scores) + max(scores)) / 2
    run(xml, folder, tmp_path / "moved", precision="f32", threshold=line)
    with (tmp_path / "moved" / "predictions.csv").open() as handle:
        labels = [int(row["pred_label"]) for row in csv.DictReader(handle) if not row["error"]]
    assert labels == [int(score > line) for score in scores] and 0 < sum(labels) < len(labels)
    with pytest.raises(ValueError, match="precision must be one of"):
        run(xml, folder, tmp_path / "out2", precision="int4")
    with pytest.raises(ValueError, match="normalised score scale"):
        run(xml, folder, tmp_path / "out3", threshold=3.0)


def test_16_bit_images_keep_their_range(tmp_path: Path) -> None:
    grey16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g.png")
    image = load_rgb(tmp_path / "g.png")
    assert image.shape == (64, 64, 3)
    assert abs(float(image.mean()) - 0.5) < 0.01  # convert("RGB") would saturate almost everything to 1.0


def test_export_of_a_model_without_fitted_thresholds_is_refused(tmp_path: Path) -> None:
    model = Fegan(image_size=32, pre_trained=False)  # the default scores with statistics measured in fit
    with pytest.raises(RuntimeError, match=r"training statistics .* never measured"):
        model.to_openvino(export_root=tmp_path)
    # the paper's scoring needs no statistics, but is never validated either: NaN thresholds and min/max
    model = Fegan(image_size=32, pre_trained=False, component_norm="none", feature_distance="l2")
    with pytest.raises(RuntimeError, match="no fitted image threshold, pixel threshold, image min/max"):
        model.to_openvino(export_root=tmp_path)
    with pytest.raises(RuntimeError, match="--ckpt_path"):
        model.to_torch(export_root=tmp_path)
    assert not any(tmp_path.rglob("model.*"))


def test_bf16_mixed_precision_predicts_the_fp32_scores_within_tolerance(
    trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path
) -> None:
    """The torch-side fast setting is Lightning's own ``--trainer.precision bf16-mixed`` (README)."""
    model = Fegan.load_from_checkpoint(checkpoint_of(trained[0]))
    scores = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        for precision in ("32-true", "bf16-mixed"):
            datamodule = MVTecAD(root=synthetic_root, category="texture", num_workers=0, eval_batch_size=4)
            engine = Engine(
                default_root_dir=tmp_path / precision, precision=precision, logger=False, enable_progress_bar=False
            )
            batches = engine.predict(model, datamodule=datamodule)
            scores[precision] = torch.cat([batch.pred_score.float() for batch in batches])
        assert warnings.filters == filters  # the stage's silencing ends with it
    # Lightning 2.6's own deprecated pytree call (torch 2.14) is silenced while FEGAN predicts: nothing to act on
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    assert scores["32-true"].numel() == 8 and torch.isfinite(scores["bf16-mixed"]).all()
    assert not torch.equal(scores["32-true"], scores["bf16-mixed"])  # bf16 did run
    torch.testing.assert_close(scores["bf16-mixed"], scores["32-true"], atol=0.03, rtol=0)
