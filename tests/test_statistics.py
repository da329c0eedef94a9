"""The scoring statistics: the nearest-neighbour memory, measured once per weights, and for the final weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from fegan_anomalib import Fegan
from fegan_anomalib.callbacks import PlantedValidation
from fegan_anomalib.models.fegan import lightning_model, statistics
from fegan_anomalib.models.fegan.memory import k_center_greedy, nearest_distance


def _fit(root: Path, tmp_path: Path, epochs: int = 2, **engine_args) -> tuple[Fegan, Engine, MVTecAD]:
    seed_everything(0)
    model = Fegan(
        image_size=32,
        pre_trained=False,
        feature_distance="nearest",
        memory_size=40,
        visualizer=False,
        max_epochs=epochs,
    )
    datamodule = MVTecAD(root=root, category="texture", train_batch_size=4, eval_batch_size=4, num_workers=0)
    engine = Engine(
        default_root_dir=tmp_path,
        callbacks=[PlantedValidation(holdout_ratio=0.25, seed=0)],
        logger=False,
        enable_progress_bar=False,
        **engine_args,
    )
    engine.fit(model, datamodule=datamodule)
    return model, engine, datamodule


def test_k_center_greedy_keeps_the_outlying_rows_and_is_seeded() -> None:
    rows = torch.zeros(1000, 8)
    rows[:, 0] = torch.linspace(0, 1, 1000)  # a dense line of normal cells ...
    rows[500] = 50.0  # ... and one rare pattern far from it
    kept = k_center_greedy(rows, 10, torch.Generator().manual_seed(0))
    assert len(kept) == 10 and len(set(kept.tolist())) == 10 and torch.equal(kept, kept.sort().values)
    assert 500 in kept.tolist()  # a random tenth would keep it with probability 1 %
    covered = nearest_distance(rows, rows[kept])
    assert covered.max() < 0.2  # every row lies near a kept one (the line's 999 rows cut into 9 pieces)
    assert torch.equal(kept, k_center_greedy(rows, 10, torch.Generator().manual_seed(0)))
    assert torch.equal(k_center_greedy(rows[:7], 10, torch.Generator()), torch.arange(7))  # fewer rows: all kept


def test_fit_fills_the_memory_from_the_fitted_images_and_f_statistics_leave_each_image_out(
    synthetic_root: Path, tmp_path: Path
) -> None:
    model, _, datamodule = _fit(synthetic_root, tmp_path)
    generator = model.model.anomaly_map_generator
    assert generator.memory_bank.shape == (40, 512)  # 6 fitted images x 16 cells at 32² (VGG19 relu4_4): coreset 40
    assert not generator.needs_train_stats
    mean, std = generator.feature_stats.tolist()
    # a fitted cell is in the memory: measured against its own image's cells, F would be 0 at 40 of 96 cells
    assert mean > 0 and std > 0 and torch.isfinite(generator.residual_stats).all()
    # the memory comes from the images the generator was fitted to, not the planted validation's
    fitted = {Path(p).name for p in datamodule.train_data.samples.image_path}
    held_out = {Path(p).name for p in datamodule.val_data.samples.image_path}
    assert len(fitted) == 6 and not fitted & held_out


def test_statistics_are_measured_once_per_weights_and_for_the_final_weights(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured: list[int] = []
    original = statistics.measure_scoring_statistics

    def counting(module: Fegan) -> None:
        measured.append(module.global_step)
        original(module)

    monkeypatch.setattr(lightning_model, "measure_scoring_statistics", counting)
    # validation after epoch 2 only: epoch 3's weights would otherwise be scored with epoch 2's statistics
    model, engine, datamodule = _fit(synthetic_root, tmp_path, epochs=3, check_val_every_n_epoch=2)
    steps_per_epoch = 2 * 2  # 6 fitted images in batches of 4; G and D steps
    assert measured == [2 * steps_per_epoch, 3 * steps_per_epoch]
    assert model.statistics_step == model.global_step
    engine.validate(model, datamodule=datamodule)  # the same weights: nothing to measure again
    assert measured == [2 * steps_per_epoch, 3 * steps_per_epoch]


def test_the_default_hybrid_standardises_each_distance_on_the_training_cells(
    synthetic_root: Path, tmp_path: Path
) -> None:
    seed_everything(0)
    model = Fegan(image_size=32, pre_trained=False, memory_size=40, visualizer=False, max_epochs=1)
    generator = model.model.anomaly_map_generator
    assert generator.feature_distance == "mahalanobis+nearest" and generator.per_cell and generator.position_free
    datamodule = MVTecAD(root=synthetic_root, category="texture", train_batch_size=4, eval_batch_size=4, num_workers=0)
    Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False).fit(model, datamodule=datamodule)
    assert not generator.needs_train_stats
    (maha_mean, maha_std), (near_mean, near_std) = generator.distance_stats.tolist()
    assert maha_std > 0 and near_std > 0 and near_mean > 0
    fen = torch.rand(2, 512, 4, 4)
    encoder = torch.rand(2, 512, 4, 4)
    parts = generator.cell_distances(fen, encoder)
    expected = ((parts["mahalanobis"] - maha_mean) / maha_std + (parts["nearest"] - near_mean) / near_std) / 2**0.5
    torch.testing.assert_close(generator.cell_distance(fen, encoder), expected)
