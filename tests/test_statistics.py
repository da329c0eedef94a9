"""The scoring statistics: measured as a new image would meet them, once per weights, and for the final weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from fegan_anomalib import Fegan
from fegan_anomalib.callbacks import PlantedValidation
from fegan_anomalib.models.fegan import measuring
from fegan_anomalib.models.fegan.scoring import statistics
from fegan_anomalib.models.fegan.scoring.anomaly_map import floored_variance
from fegan_anomalib.models.fegan.scoring.memory import k_center_greedy, nearest_distance
from fegan_anomalib.models.fegan.scoring.statistics import CleanBatch, measure_statistics
from fegan_anomalib.models.fegan.torch_model import FeganModel


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


def _batches(images: torch.Tensor, batch_size: int = 3) -> list[CleanBatch]:
    return [
        CleanBatch(images[i : i + batch_size], None, torch.arange(i, min(i + batch_size, len(images))))
        for i in range(0, len(images), batch_size)
    ]


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
    repeated = torch.randn(3, 8).repeat(20, 1)  # 60 rows, 3 distinct: a coreset of 10 keeps the 3, once each
    assert k_center_greedy(repeated, 10, torch.Generator()).shape == (3,)


def test_both_halves_of_f_are_measured_with_each_image_left_out() -> None:
    """distance_stats and F's train_stats equal a brute force in which no image meets its own statistics or cells.

    Turning either leave-one-out off (the mask in the memory search, or the per-cell sums minus the image's own)
    moves them: a cell in the memory would be at distance 0, an image inside its own mean looks more normal.
    """
    torch.manual_seed(0)
    model = FeganModel((32, 32), pre_trained=False, memory_size=30).eval()
    images = torch.rand(7, 3, 32, 32)
    measure_statistics(model, _batches(images))
    generator = model.anomaly_map_generator
    with torch.no_grad():
        fen, encoder, _ = model.scored_features(images)  # relu3_4 beside relu4_4 upsampled: 8x8 cells at 32²
        fen, encoder = fen.double(), encoder.double()
        cells = generator.memory_cells(fen, encoder).double()  # (7·64, 768)
    per_image = cells.shape[0] // 7
    owner = torch.arange(7).repeat_interleave(per_image)
    # which image each memory row came from: the memory keeps rows of the cells, unchanged
    match = torch.cdist(generator.memory_bank.double(), cells).argmin(1)
    assert torch.cdist(generator.memory_bank.double(), cells).amin(1).max() < 1e-4
    memory_owner = owner[match]
    squared = torch.cdist(cells, generator.memory_bank.double()).square()
    nearest = squared.masked_fill(owner[:, None] == memory_owner[None, :], float("inf")).amin(1).sqrt()
    residual = fen - encoder
    maha = []
    for i in range(7):
        others = torch.cat([residual[:i], residual[i + 1 :]])
        mean, variance = others.mean(0), floored_variance(others.var(0, unbiased=False))
        scale = (variance + 0.3 * variance.mean()).rsqrt()
        maha.append(torch.linalg.vector_norm((residual[i] - mean) * scale, dim=0))
    maha = torch.stack(maha).flatten()
    expected = torch.tensor([[maha.mean(), maha.std(unbiased=False)], [nearest.mean(), nearest.std(unbiased=False)]])
    torch.testing.assert_close(generator.distance_stats.double(), expected, rtol=1e-4, atol=1e-5)
    assert nearest.min() > 0  # no left-out distance is 0
    # F's train_stats: the hybrid of those same left-out distances, upsampled to pixels
    z = ((maha - expected[0, 0]) / expected[0, 1] + (nearest - expected[1, 0]) / expected[1, 1]) / 2**0.5
    pixels = generator.upsample(z.view(7, 1, *generator.feature_shape[1:]).float(), (32, 32))
    torch.testing.assert_close(
        generator.feature_stats, torch.tensor([pixels.mean(), pixels.std(unbiased=False)]), rtol=1e-3, atol=1e-4
    )


def test_statistics_do_not_depend_on_the_batches_or_their_order() -> None:
    """The memory's cells are keyed by image id, gathered in id order: any batching gives the same statistics."""
    torch.manual_seed(0)
    model = FeganModel((32, 32), pre_trained=False, memory_size=20).eval()
    images = torch.rand(9, 3, 32, 32)
    measure_statistics(model, _batches(images, 4))
    first = {k: v.clone() for k, v in model.anomaly_map_generator.state_dict().items()}
    reversed_batches = _batches(images, 2)[::-1]
    measure_statistics(model, reversed_batches)
    for key, value in model.anomaly_map_generator.state_dict().items():
        torch.testing.assert_close(value, first[key], rtol=1e-5, atol=1e-5, msg=key)


def test_too_few_images_or_a_memory_of_one_image_is_refused_by_name() -> None:
    model = FeganModel((32, 32), pre_trained=False, memory_size=8).eval()
    with pytest.raises(ValueError, match=r"at least 2 normal training images.*got 1"):
        measure_statistics(model, _batches(torch.rand(1, 3, 32, 32)))
    nearest = FeganModel((32, 32), pre_trained=False, feature_distance="nearest", memory_size=8).eval()
    with pytest.raises(ValueError, match=r"memory_size=8\) holds the cells of one training image only"):
        measure_statistics(nearest, _batches(torch.rand(1, 3, 32, 32)))
    torch.manual_seed(0)
    one_row = FeganModel((32, 32), pre_trained=False, feature_distance="nearest", memory_size=1).eval()
    measure_statistics(one_row, _batches(torch.rand(3, 3, 32, 32)))  # two images measure against the third's row
    assert one_row.anomaly_map_generator.memory_bank.shape == (1, 768)
    assert torch.isfinite(one_row.anomaly_map_generator.feature_stats).all()


def test_fit_fills_the_memory_from_the_fitted_images(synthetic_root: Path, tmp_path: Path) -> None:
    model, _, datamodule = _fit(synthetic_root, tmp_path)
    generator = model.model.anomaly_map_generator
    assert generator.memory_bank.shape == (40, 768)  # 6 fitted images x 64 cells (VGG19 relu3_4 + relu4_4): coreset 40
    assert not generator.needs_train_stats
    assert torch.isfinite(generator.feature_stats).all() and torch.isfinite(generator.residual_stats).all()
    # the memory comes from the images the generator was fitted to, not the planted validation's
    fitted = {Path(p).name for p in datamodule.train_data.samples.image_path}
    held_out = {Path(p).name for p in datamodule.val_data.samples.image_path}
    assert len(fitted) == 6 and not fitted & held_out


def test_statistics_are_measured_once_per_weights_and_for_the_final_weights(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured: list[int] = []
    original = statistics.measure_statistics

    def counting(model: FeganModel, batches: measuring.TrainingImages, reduce: statistics.Reduce) -> None:
        measured.append(batches.module.global_step)
        original(model, batches, reduce)

    monkeypatch.setattr(measuring, "measure_statistics", counting)
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
    fen = torch.rand(2, *generator.feature_shape)
    encoder = torch.rand(2, *generator.feature_shape)
    parts = generator.cell_distances(fen, encoder)
    expected = ((parts["mahalanobis"] - maha_mean) / maha_std + (parts["nearest"] - near_mean) / near_std) / 2**0.5
    torch.testing.assert_close(generator.combine(parts), expected)
