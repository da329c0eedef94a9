"""Rescoring a checkpoint with another scoring setting equals fitting with it from the same weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.deploy import ExportType
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from fegan_anomalib import Fegan
from fegan_anomalib.callbacks import SaveRescoredCheckpoint
from fegan_anomalib.models.fegan.defaults import STATISTICS_SETTINGS
from fegan_anomalib.models.fegan.guards import check_exportable
from fegan_anomalib.models.fegan.scoring.statistics import MEMORY_SEED, CleanBatch, measure_statistics

from .conftest import TINY, anomalib_cli, checkpoint_of, cli_data

SMALL = {"image_size": 32, "pre_trained": False, "memory_size": 40, "visualizer": False, "max_epochs": 1}
METRICS = ("image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_AUPRO")


def _datamodule(root: Path) -> MVTecAD:
    return MVTecAD(root=root, category="texture", train_batch_size=4, eval_batch_size=4, num_workers=0, seed=0)


def _fit_and_test(root: Path, folder: Path, **settings: Any) -> tuple[Fegan, dict[str, float], Path]:
    """Fit one epoch (seed 0) with ``settings``, test; the networks' weights do not depend on the scoring."""
    seed_everything(0)
    model = Fegan(**{**SMALL, **settings})
    engine = Engine(default_root_dir=folder, logger=False, enable_progress_bar=False)
    datamodule = _datamodule(root)
    engine.fit(model, datamodule=datamodule)
    (metrics,) = engine.test(model, datamodule=datamodule)
    (checkpoint,) = folder.rglob("model.ckpt")
    return model, metrics, checkpoint


@pytest.fixture(scope="module")
def default_fit(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Fegan, dict[str, float], Path]:
    return _fit_and_test(synthetic_root, tmp_path_factory.mktemp("default"))


def _statistics(model: Fegan) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.model.anomaly_map_generator.state_dict().items() if "blur" not in k}


OPTIONS = [
    {"feature_distance": "nearest"},
    {"feature_distance": "mahalanobis"},
    {"feature_distance": "l2"},
    {"mahalanobis_ridge": 0.0},
    {"memory_size": 8},
    {"feature_map_weight": 0.5},
    {"image_score_from": "anomaly_map"},  # [A8c]: the image score from S (Eq. 10), no statistic to measure
    {"density_reweighting": True},  # [A7f]: the nearest half's statistics, each distance over its row's spacing
    {"fine_tap": "none"},  # the statistics of another grid (4x4, 512 channels) than the checkpoint's (relu3_4 beside)
]


def _training_batches(model: Fegan, datamodule: MVTecAD) -> list[CleanBatch]:
    """The datamodule's training images, pre-processed, each under its id (its place in the seeded order).

    In that order and the datamodule's batch size, as the test's pass takes them: float32 features of other batch
    compositions differ in their last bits, which the per-cell variance of a near-constant channel magnifies.
    """
    dataset = datamodule.train_data
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(MEMORY_SEED))
    batches = []
    for start in range(0, len(dataset), datamodule.train_batch_size):
        indices = order[start : start + datamodule.train_batch_size]
        batch = dataset.collate_fn([dataset[int(i)] for i in indices])
        ids = torch.arange(start, start + len(indices))
        batches.append(CleanBatch(model.pre_processor.transform(batch.image), None, ids))
    return batches


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_rescoring_a_checkpoint_measures_what_the_setting_needs_from_the_checkpoints_weights(
    option: dict[str, Any],
    default_fit: tuple[Fegan, dict[str, float], Path],
    synthetic_root: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`anomalib test` of a checkpoint with another setting: the statistics of that setting, on the same weights.

    The reference is a model of that setting with the checkpoint's networks, its statistics measured directly on the
    datamodule's training images; a whole fit with the setting is compared in the test below (memory_size).
    """
    checkpoint = default_fit[2]
    rescored = Fegan.load_from_checkpoint(checkpoint, **option, visualizer=False)
    datamodule = _datamodule(synthetic_root)
    datamodule.setup()
    with caplog.at_level("INFO"):
        (metrics,) = Engine(default_root_dir=tmp_path, logger=False).test(rescored, datamodule=datamodule)
    measured = [r.message for r in caplog.records if "measuring the scoring statistics" in r.message]
    measures = bool(set(option) & set(STATISTICS_SETTINGS))
    assert len(measured) == (1 if measures else 0), measured
    assert any("thresholds re-learnt" in r.message for r in caplog.records)  # the checkpoint's are another scale's
    assert all(0.0 <= metrics[name] <= 1.0 for name in METRICS)
    reference = Fegan(**{**SMALL, **option})
    networks = {
        k: v for k, v in torch.load(checkpoint, weights_only=False)["state_dict"].items() if "anomaly_map" not in k
    }
    reference.load_state_dict(networks, strict=False)
    if not measures:  # λ and the image score's map need no statistic: the checkpoint's stand
        reference.model.anomaly_map_generator.load_state_dict(default_fit[0].model.anomaly_map_generator.state_dict())
    else:
        measure_statistics(reference.model, _training_batches(reference, datamodule))
    expected = _statistics(reference)
    assert set(_statistics(rescored)) == set(expected)
    # to float tolerance: a near-constant channel's floored 1/std (about 1e4) magnifies float32 rounding to ~3e-4
    for key, value in _statistics(rescored).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-3, atol=1e-5, equal_nan=True, msg=key)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.model.eval()(images)
        actual = rescored.model.eval()(images)
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(actual.pred_score, expected.pred_score, rtol=1e-3, atol=1e-2)


def test_rescoring_with_another_memory_equals_fitting_with_it(
    default_fit: tuple[Fegan, dict[str, float], Path], synthetic_root: Path, tmp_path: Path
) -> None:
    """The memory_size typed at test time was once silently ignored: now its figures are a fit's with that memory."""
    default, _, checkpoint = default_fit
    fitted, fitted_metrics, _ = _fit_and_test(synthetic_root, tmp_path / "fitted", memory_size=8)
    for key, value in default.model.encoder.state_dict().items():  # the same weights: scoring never steers training
        torch.testing.assert_close(fitted.model.encoder.state_dict()[key], value, rtol=0, atol=0)
    rescored = Fegan.load_from_checkpoint(checkpoint, memory_size=8, visualizer=False)
    (metrics,) = Engine(default_root_dir=tmp_path / "rescored", logger=False).test(
        rescored, datamodule=_datamodule(synthetic_root)
    )
    assert rescored.model.anomaly_map_generator.memory_bank.shape[0] == 8  # not the checkpoint's 40
    for key, value in _statistics(rescored).items():
        torch.testing.assert_close(value, _statistics(fitted)[key], rtol=1e-4, atol=1e-5, msg=key)
    for name in METRICS:
        assert metrics[name] == pytest.approx(fitted_metrics[name], abs=1e-4), name


def test_a_rescoring_that_cannot_be_measured_is_refused_naming_the_setting(
    default_fit: tuple[Fegan, dict[str, float], Path],
) -> None:
    """Export has no training images: a checkpoint loaded with another memory refuses to export, never exports 40."""
    rescored = Fegan.load_from_checkpoint(default_fit[2], memory_size=8, visualizer=False)
    with pytest.raises(RuntimeError, match=r"Cannot export: .*feature_distance='mahalanobis\+nearest'.*never measured"):
        rescored.to_torch(export_root=Path("unused"))


def test_the_readme_rescoring_command_works_on_a_cli_checkpoint(
    trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path
) -> None:
    """README: `anomalib test --ckpt_path CKPT --model.feature_distance nearest` rescores; kept, it exports so.

    `anomalib export --ckpt_path` reloads a checkpoint alone, so the rescoring goes through SaveRescoredCheckpoint.
    """
    tested = anomalib_cli(
        "test", "--model", "FEGAN", *TINY, "--ckpt_path", str(checkpoint_of(trained[0])),
        "--model.feature_distance", "nearest", "--model.memory_size", "16", *cli_data(synthetic_root),
        "--trainer.callbacks+=fegan_anomalib.callbacks.SaveRescoredCheckpoint",
        "--trainer.callbacks.path", "rescored.ckpt", cwd=tmp_path,
    )  # fmt: skip
    output = tested.stdout + tested.stderr
    assert tested.returncode == 0, output[-3000:]
    assert "measuring the scoring statistics (component_norm=train_stats, feature_distance=nearest" in output
    assert "memory_size=16" in output and "pixel_AUROC" in output
    anomalib_cli(
        "export", "--model", "FEGAN", "--ckpt_path", "rescored.ckpt", "--export_type", "torch",
        "--default_root_dir", "export", cwd=tmp_path,
    )  # fmt: skip
    (path,) = (tmp_path / "export").rglob("model.pt")
    generator = torch.load(path, weights_only=False)["model"].model.anomaly_map_generator
    assert (generator.feature_distance, generator.memory_bank.shape[0]) == ("nearest", 16)


THRESHOLDS = ("_image_threshold", "_pixel_threshold", "image_min", "image_max", "pixel_min", "pixel_max")


def _thresholds(model: Any) -> dict[str, float]:
    return {name: float(getattr(model.post_processor, name)) for name in THRESHOLDS}


def test_a_rescored_checkpoint_exports_only_after_its_thresholds_are_relearnt(
    default_fit: tuple[Fegan, dict[str, float], Path], synthetic_root: Path, tmp_path: Path
) -> None:
    """σ needs no statistic, but its scores live on another scale: the checkpoint's thresholds would mislabel."""
    checkpoint = default_fit[2]
    rescored = Fegan.load_from_checkpoint(checkpoint, sigma=4.0, visualizer=False)
    with pytest.raises(RuntimeError, match=r"Cannot export: the scoring settings sigma differ from the checkpoint's"):
        rescored.to_torch(export_root=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    stale = _thresholds(rescored)
    Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False).predict(
        rescored, datamodule=_datamodule(synthetic_root)
    )  # a predict re-learns them as a test does, on the datamodule's validation set
    relearnt = _thresholds(rescored)
    # σ smooths the map S: its threshold moves; the image score, read from F before the blur [A8c], does not
    assert relearnt["_pixel_threshold"] != pytest.approx(stale["_pixel_threshold"], rel=1e-3)
    assert relearnt["_image_threshold"] == pytest.approx(stale["_image_threshold"], rel=1e-6)
    exported = torch.load(rescored.to_torch(export_root=tmp_path / "export"), weights_only=False)["model"]
    assert _thresholds(exported) == pytest.approx(relearnt)
    assert exported.model.anomaly_map_generator.blur is not None  # σ 4 (the checkpoint's σ 0 has none)


def test_save_rescored_checkpoint_keeps_a_tests_scoring_for_export(
    default_fit: tuple[Fegan, dict[str, float], Path], synthetic_root: Path, tmp_path: Path
) -> None:
    """`anomalib export --ckpt_path` reloads the checkpoint alone: the rescoring must be in one to be exported."""
    checkpoint, written = default_fit[2], tmp_path / "kept" / "rescored.ckpt"
    option = {"feature_distance": "nearest", "sigma": 4.0, "image_score_from": "anomaly_map"}  # all three not the fit's
    # as the CLI builds it: the typed settings (and a training argument the test does not use), then the checkpoint
    tested = Fegan(**{**SMALL, **option, "lr": 1e-3})
    engine = Engine(
        default_root_dir=tmp_path, logger=False, enable_progress_bar=False, callbacks=[SaveRescoredCheckpoint(written)]
    )
    engine.test(tested, datamodule=_datamodule(synthetic_root), ckpt_path=checkpoint)
    source, kept = torch.load(checkpoint, weights_only=False), torch.load(written, weights_only=False)
    assert {name: kept["fegan_scoring"][name] for name in option} == option
    assert {name: kept["hyper_parameters"][name] for name in option} == option
    # how the weights were trained stays the checkpoint's: its recipe and loop state, not the test command's
    assert kept["hyper_parameters"]["lr"] == source["hyper_parameters"]["lr"] == pytest.approx(2e-4)
    assert (kept["epoch"], kept["global_step"]) == (source["epoch"], source["global_step"])
    # as `anomalib export --model FEGAN --ckpt_path rescored.ckpt` does: a default model, the checkpoint reloaded alone
    path = Engine(default_root_dir=tmp_path).export(
        Fegan(), ExportType.TORCH, export_root=tmp_path / "export", ckpt_path=written
    )
    exported = torch.load(path, weights_only=False)["model"]
    generator = exported.model.anomaly_map_generator
    assert (generator.feature_distance, generator.image_score_from) == ("nearest", "anomaly_map")
    assert generator.blur is not None  # σ 4 (the checkpoint's σ 0 has none)
    assert _thresholds(exported) == pytest.approx(_thresholds(tested))
    assert _thresholds(tested) != pytest.approx(_thresholds(default_fit[0]))  # re-learnt, not the checkpoint's
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = tested.model.eval()(images), exported.model.eval()(images)
    torch.testing.assert_close(actual.pred_score, expected.pred_score)
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map)


def test_save_rescored_checkpoint_needs_the_checkpoint_it_rewrites(synthetic_root: Path, tmp_path: Path) -> None:
    """A test of an in-memory model has no checkpoint to rewrite: refused before the test runs, naming the fix."""
    engine = Engine(default_root_dir=tmp_path, logger=False, callbacks=[SaveRescoredCheckpoint(tmp_path / "x.ckpt")])
    with pytest.raises(ValueError, match=r"give the test one \(`anomalib test --ckpt_path CKPT`"):
        engine.test(Fegan(**SMALL, feature_distance="l2"), datamodule=_datamodule(synthetic_root))
    assert not (tmp_path / "x.ckpt").exists()


def test_a_rescoring_leaves_no_stale_thresholds_without_anomalibs_post_processor(
    default_fit: tuple[Fegan, dict[str, float], Path],
) -> None:
    """No thresholds, none stale: only a model with anomalib's PostProcessor is refused after a rescoring."""
    model = default_fit[0]
    check_exportable(None, model.model.anomaly_map_generator, ["sigma"])  # raw scores: nothing to re-learn
    check_exportable(model.post_processor, model.model.anomaly_map_generator, [])
    with pytest.raises(RuntimeError, match="Cannot export: the scoring settings sigma"):
        check_exportable(model.post_processor, model.model.anomaly_map_generator, ["sigma"])
