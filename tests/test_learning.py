"""Learning curves, label-free (planted) validation, training images and the train_stats guard."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.deploy import OpenVINOInferencer
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from lightning_utilities.core import rank_zero
from PIL import Image

from fegan_anomalib import Fegan
from fegan_anomalib.callbacks import PlantedValidation
from fegan_anomalib.data import make_synthetic_dataset
from fegan_anomalib.data.planted import PlantedAnomalyDataset
from fegan_anomalib.metrics import map_aurocs, rank_auroc
from fegan_anomalib.models.fegan.augmentation import MultiScaleSelfEnhancement
from fegan_anomalib.models.fegan.scoring.anomaly_map import AnomalyMapGenerator

from .conftest import checkpoint_of


class _Records(logging.Handler):
    """Keep every message a logger emits."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _datamodule(root: Path) -> MVTecAD:
    return MVTecAD(root=root, category="texture", train_batch_size=4, eval_batch_size=4, num_workers=0)


def test_rank_auroc_known_answers() -> None:
    assert rank_auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert rank_auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert rank_auroc(torch.tensor([5.0, 5.0, 5.0, 5.0]), torch.tensor([0, 1, 0, 1])) == 0.5  # ties count half
    # raw values far outside [0, 1] keep their order (torchmetrics would squash them through a sigmoid)
    assert rank_auroc(torch.tensor([40.0, 50.0, 60.0]), torch.tensor([0, 1, 1])) == 1.0
    assert math.isnan(rank_auroc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1])))  # one class: undefined


def test_map_aurocs_scores_image_maxima_and_strided_pixels() -> None:
    maps = torch.zeros(2, 4, 4)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    maps[1, 2, 2] = 5.0  # the defect's peak, on a kept pixel (stride 2)
    masks[1, 2, 2] = True
    maps[0, 1, 1] = 9.0  # a hotter normal pixel: wins the image ranking, dropped by the pixel stride
    image, pixel = map_aurocs(maps, torch.tensor([0, 1]), masks)
    assert image == 0.0  # the normal image's maximum (9) is above the defective one's (5)
    assert pixel == 1.0  # of the 8 kept pixels the defect is the hottest
    assert map_aurocs(maps, torch.tensor([0, 1]), masks, pixel_stride=1)[1] == pytest.approx(30 / 31)


def test_planted_dataset_plants_half_with_their_masks_and_repeats_itself(synthetic_root: Path) -> None:
    datamodule = _datamodule(synthetic_root)
    datamodule.setup("fit")
    normal = datamodule.train_data
    planted = PlantedAnomalyDataset(normal, MultiScaleSelfEnhancement(area_ratio=0.2), anomalous_ratio=0.5, seed=3)
    assert len(planted) == len(normal) == 8
    assert int((planted.samples.label_index == 1).sum()) == 4
    for index in range(len(planted)):
        item, original = planted[index], normal[index]
        if int(item.gt_label) == 1:
            mask = item.gt_mask.bool()
            assert 0.05 < mask.float().mean() < 0.25  # about the 20 % planted area (overlaps allowed)
            assert torch.equal(item.image[:, ~mask], original.image[:, ~mask])  # untouched outside the mask
            assert not torch.equal(item.image, original.image)
        else:
            assert not item.gt_mask.any()
            assert torch.equal(item.image, original.image)
        assert torch.equal(planted[index].image, item.image)  # the same anomaly every epoch
    with pytest.raises(ValueError, match="normal images only"):
        PlantedAnomalyDataset(datamodule.test_data, MultiScaleSelfEnhancement())


def test_planted_validation_fit_writes_curves_images_and_measures_train_stats(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed_everything(0)
    model = Fegan(image_size=32, pre_trained=False, component_norm="train_stats", visualizer=False, max_epochs=2)
    assert model.model.anomaly_map_generator.needs_train_stats
    datamodule = _datamodule(synthetic_root)
    engine = Engine(
        default_root_dir=tmp_path,
        callbacks=[PlantedValidation(holdout_ratio=0.25, seed=0)],
        logger=False,
        enable_progress_bar=False,
    )
    with caplog.at_level(logging.WARNING, logger="fegan_anomalib"):
        engine.fit(model, datamodule=datamodule)
    assert "1 normal and 1 planted images: with fewer than 20 per class" in caplog.text
    assert len(datamodule.train_data) == 6
    assert sorted(datamodule.val_data.samples.label_index) == [0, 1]  # two held out, one planted
    assert all("/test/" not in path for path in datamodule.val_data.samples.image_path)  # no test image seen
    generator = model.model.anomaly_map_generator
    assert not generator.needs_train_stats
    assert torch.isfinite(model.post_processor.image_threshold)
    # train_stats come from the 6 images the generator was fitted to, not the 2 held out (BENCHMARKS.md "Image
    # score": statistics from held-out normals were no better)
    with model.model.evaluating(), torch.no_grad():
        fitted = torch.cat([model.pre_processor.transform(batch.image) for batch in datamodule.train_dataloader()])
        residual = model.model.component_maps(fitted).residual.double()
    assert fitted.shape[0] == 6
    expected = torch.tensor([residual.mean(), residual.std(unbiased=False)], dtype=torch.float32)
    torch.testing.assert_close(generator.residual_stats, expected, rtol=1e-4, atol=1e-5)
    (run,) = tmp_path.glob("Fegan/MVTecAD/texture/v*")
    with (run / "learning_curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["epoch"]) for row in rows] == [0.0, 1.0]
    for column in ("feature_loss", "content_loss", "val_image_AUROC", "val_pixel_AUROC", "val_F_pixel_AUROC"):
        assert all(row[column] for row in rows), column
    shares = [float(rows[0][f"grad_share/{term}_at_encoder"]) for term in ("feature", "content", "adversarial")]
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    figure = Image.open(run / "learning_curves.png")
    assert figure.size[0] > 1000  # three panels
    curves = next(c for c in model.trainer.callbacks if type(c).__name__ == "LearningCurves")
    assert curves.validation_counts == (1, 1)  # 2 held out, 1 planted: the panel is greyed and says so
    panel = np.asarray(figure.convert("RGB"))[:, figure.size[0] * 2 // 3 :]
    assert (np.abs(panel.astype(int) - 0xE6).max(axis=-1) < 3).mean() > 0.2  # the grey background
    grid = Image.open(run / "training_images" / "epoch_001.png")  # the last epoch's
    assert grid.size == (5 * 32 + 6 * 2, 4 * 32 + 5 * 2)  # 5 columns x 4 images, 2 px padding
    assert (run / "training_images" / "epoch_000.png").is_file()


def test_train_stats_never_measured_refuses_test_and_export(synthetic_root: Path, tmp_path: Path) -> None:
    model = Fegan(image_size=32, pre_trained=False, component_norm="train_stats", visualizer=False)
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with pytest.raises(RuntimeError, match="never measured"):
        engine.test(model, datamodule=_datamodule(synthetic_root))
    with pytest.raises(RuntimeError, match="component_norm none"):
        model.to_torch(export_root=tmp_path)


def test_scoring_options_change_on_a_trained_checkpoint(trained: tuple[Path, str]) -> None:
    checkpoint = checkpoint_of(trained[0])
    plain = Fegan.load_from_checkpoint(checkpoint).model.eval()
    blurred = Fegan.load_from_checkpoint(checkpoint, sigma=4.0).model.eval()
    feature_only = Fegan.load_from_checkpoint(checkpoint, feature_map_weight=1.0).model.eval()
    # the ridge standardises F's halves: its statistics are measured again (at a test's start), never reused
    assert Fegan.load_from_checkpoint(checkpoint, mahalanobis_ridge=1.0).model.anomaly_map_generator.needs_train_stats
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        first, second = plain(images).anomaly_map, blurred(images).anomaly_map
        third = feature_only(images).anomaly_map
    assert not torch.allclose(first, second) and not torch.allclose(first, third)
    assert second.std() < first.std()  # smoothed


def test_old_checkpoint_with_a_saved_blur_kernel_and_older_arguments_loads(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    state = torch.load(checkpoint_of(trained[0]), map_location="cpu", weights_only=False)
    state["state_dict"]["model.anomaly_map_generator.blur.kernel"] = torch.ones(1, 1, 3, 3)
    for name in ("adversarial_loss", "encoder_batchnorm", "gradient_share_every"):
        state["hyper_parameters"].pop(name, None)
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    model = Fegan.load_from_checkpoint(old, weights_only=False).eval()
    current = Fegan.load_from_checkpoint(checkpoint_of(trained[0])).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # the losses are not part of the weights: the old checkpoint scores as before
        torch.testing.assert_close(model.model(images).anomaly_map, current.model(images).anomaly_map)


def test_mismatch_names_the_differing_argument(trained: tuple[Path, str]) -> None:
    with pytest.raises(ValueError, match=r"tap: checkpoint 'relu4_4', this model 'relu5_3'") as error:
        Fegan.load_from_checkpoint(checkpoint_of(trained[0]), backbone="vgg16", tap="relu5_3")
    assert "backbone: checkpoint 'vgg19', this model 'vgg16'" in str(error.value)
    assert "image_size" not in str(error.value).split(";")[0]  # equal fields are not listed


def test_training_images_reach_tensorboard(synthetic_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="TensorBoard is an optional extra (pip install '.[tensorboard]')")
    from anomalib.loggers import AnomalibTensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seed_everything(0)
    model = Fegan(image_size=32, pre_trained=False, visualizer=False, max_epochs=1)
    tb_logger = AnomalibTensorBoardLogger(save_dir=tmp_path / "tb")
    engine = Engine(default_root_dir=tmp_path, logger=tb_logger, enable_progress_bar=False)
    engine.fit(model, datamodule=_datamodule(synthetic_root))
    (events,) = (tmp_path / "tb").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert "fegan/training_images" in accumulator.Tags()["images"]
    assert "val_image_AUROC" in accumulator.Tags()["scalars"]


def test_mahalanobis_statistics_are_measured_on_the_training_images_during_fit(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_everything(0)
    model = Fegan(
        image_size=32, pre_trained=False, component_norm="train_stats", feature_distance="mahalanobis",
        visualizer=False, max_epochs=1,
    )  # fmt: skip
    generator = model.model.anomaly_map_generator
    assert generator.needs_train_stats
    assert generator.feature_residual_mean.shape == (1, 768, 8, 8)  # VGG19 relu3_4 + relu4_4 (stride 4) at 32²
    datamodule = _datamodule(synthetic_root)
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    assert not generator.needs_train_stats
    # the same statistics, computed here from the training images with the trained weights
    with model.model.evaluating(), torch.no_grad():
        images = torch.cat([model.pre_processor.transform(batch.image) for batch in datamodule.train_dataloader()])
        fen, encoder, _ = model.model.scored_features(images)
        residual = fen - encoder
    assert images.shape[0] == 8
    torch.testing.assert_close(generator.feature_residual_mean[0], residual.mean(0), rtol=1e-4, atol=1e-5)
    std = residual.std(0, unbiased=False)
    varied = std.square() > 1e-3 * std.square().mean()  # the rest is floored
    assert varied.float().mean() > 0.5
    torch.testing.assert_close(generator.feature_residual_inv_std[0][varied], 1 / std[varied], rtol=1e-3, atol=1e-3)
    fit_callbacks = {type(c): c for c in engine.trainer.callbacks}
    lightning_log = _Records()
    rank_zero.log.addHandler(lightning_log)  # the logger of Lightning's rank_zero_info, whichever module set it
    try:
        (metrics,) = engine.test(model, datamodule=datamodule, verbose=False)
    finally:
        rank_zero.log.removeHandler(lightning_log)
    assert math.isfinite(metrics["image_AUROC"])
    # a test after fit in the same Trainer keeps the callbacks fit attached, once each, and says nothing about them
    assert not [m for m in lightning_log.messages if "override existing callbacks" in m], lightning_log.messages
    assert {type(c): c for c in engine.trainer.callbacks} == fit_callbacks
    assert json.loads((Path(engine.trainer.default_root_dir) / "test_metrics.json").read_text())["metrics"]
    # the statistics travel with the exported graph: OpenVINO (fp32) scores as torch does
    monkeypatch.chdir(tmp_path)  # OpenVINOInferencer writes ./openvino_cache
    inferencer = OpenVINOInferencer(
        model.to_openvino(export_root=tmp_path), device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"}
    )
    with torch.no_grad():
        expected = model.eval()(images[:4])
    actual = inferencer.predict(images[:4].numpy())
    np.testing.assert_allclose(actual.pred_score.reshape(-1), expected.pred_score.numpy().reshape(-1), atol=1e-4)
    np.testing.assert_allclose(actual.anomaly_map.reshape(4, 32, 32), expected.anomaly_map.numpy(), atol=1e-3)
    # an L2 model takes a Mahalanobis checkpoint's weights (feature_distance is a scoring setting, not architecture),
    # without its per-cell statistics: they are not what L2 scores with
    l2 = Fegan.load_from_checkpoint(next(tmp_path.glob("**/weights/lightning/model.ckpt")), feature_distance="l2")
    assert l2.rescored == ["feature_distance"] and not hasattr(l2.model.anomaly_map_generator, "feature_residual_mean")
    assert torch.isnan(l2.model.anomaly_map_generator.feature_stats).all()  # F's statistics measured again at test


def test_learning_curves_benchmark_records_every_epoch_and_scoring_setting(tmp_path: Path) -> None:
    root = make_synthetic_dataset(
        tmp_path / "data", categories=("texture",), image_size=64, num_train=16, num_test_good=4, num_test_defect=2
    )
    script = Path(__file__).parents[1] / "benchmarks" / "learning_curves.py"
    arguments = ["--root", str(root), "--category", "texture", "--epochs", "2", "--image-size", "32"]
    result = subprocess.run(
        [sys.executable, str(script), *arguments, "--batch-size", "4", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, check=False, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "out" / "test_curve.csv").open()))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    last = rows[-1]
    for lam in ("1", "0.8", "0.6", "0"):  # F only, the model's own S, the paper's fusion, R only; each ± blur
        for sigma in ("0", "4"):
            assert f"image_AUROC_lambda{lam}_sigma{sigma}" in last and f"pixel_AUROC_lambda{lam}_sigma{sigma}" in last
    assert last["pixel_AUROC_lambda1_sigma0"] != last["pixel_AUROC_lambda0_sigma0"]  # F and R rank pixels apart
    # the model's own image score: read from F before the fusion and the blur (the default), so one figure for every
    # λ > 0 and σ [A8c]
    own = {last[f"image_AUROC_lambda{lam}_sigma{sigma}"] for lam in ("1", "0.8", "0.6") for sigma in ("0", "4")}
    assert len(own) == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model_lambda"] == 0.8  # the default's λ: S as the model scores it
    key = "pixel_AUROC_lambda0.8_sigma0"
    assert summary["last_epoch"][key] == pytest.approx(float(last[key]))
    assert summary["spearman_val_vs_test_image_AUROC"] is None  # two epochs: no rank correlation, not NaN
    assert Image.open(tmp_path / "out" / "curves.png").size[0] > 400


def test_learning_curves_read_the_image_score_as_the_model_does() -> None:
    """``_score``: from F before the fusion and the blur (the default) or from S; R's own with λ 0 [A8c]."""
    spec = importlib.util.spec_from_file_location(
        "learning_curves", Path(__file__).parents[1] / "benchmarks" / "learning_curves.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    generator = AnomalyMapGenerator(feature_distance="l2", component_norm="train_stats", image_score_top_ratio=0.05)
    generator.set_train_stats((0.1, 0.5), (0.2, 2.0))
    residual = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(1))
    feature = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(2)) * 4
    fused, score = script._score(generator, residual, feature, 0.6, 4.0)
    assert torch.allclose(score, generator.image_score((feature - 0.2) / 2.0))  # F standardised, not blurred
    assert not torch.allclose(score, generator.image_score(fused))
    _, r_score = script._score(generator, residual, None, 0.0, 0.0)
    assert torch.allclose(r_score, generator.image_score((residual - 0.1) / 0.5))
    generator.image_score_from = "anomaly_map"
    fused, score = script._score(generator, residual, feature, 0.6, 4.0)
    assert torch.allclose(score, generator.image_score(fused))  # Eq. 10: from S


def test_rescore_benchmark_scores_a_checkpoint_through_the_shipped_path(
    trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path
) -> None:
    """benchmarks/rescore.py: the model's own statistics pass at test start, anomalib's evaluator; one row per call."""
    script = Path(__file__).parents[1] / "benchmarks" / "rescore.py"
    out = tmp_path / "rows.csv"
    for extra in ([], ["--in-sample"]):
        result = subprocess.run(
            [sys.executable, str(script), "--root", str(synthetic_root), "--category", "texture", "--seed", "0",
             "--checkpoint", str(checkpoint_of(trained[0])), "--out", str(out), *extra],
            capture_output=True, text=True, check=False, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert "measuring the scoring statistics" in result.stdout + result.stderr  # the shipped pass, not a copy
    rows = list(csv.DictReader(out.open()))
    scored = {"image_score_from": "feature_map"}  # the map as scored: the fit's own, the default since 0.4 [A8c]
    assert [json.loads(row["setting"]) for row in rows] == [scored, {**scored, "per_cell": "in-sample"}]
    for row in rows:
        assert 0.0 <= float(row["image_AUROC"]) <= 1.0 and 0.0 <= float(row["pixel_AUPRO"]) <= 1.0
        assert float(row["statistics_s"]) > 0
    assert rows[0]["pixel_AUROC"] != rows[1]["pixel_AUROC"]  # the per-cell half's standardisation moves F
