"""The scoring step (Eq. 6-10) on known answers."""

from __future__ import annotations

import pytest
import torch

from fegan_anomalib.models.fegan.anomaly_map import AnomalyMapGenerator, nearest_distance


def _inputs() -> tuple[torch.Tensor, ...]:
    images = torch.zeros(1, 3, 8, 8)
    reconstruction = torch.zeros(1, 3, 8, 8)
    reconstruction[0, :, 0, 0] = 1.0  # R = sqrt(3) at (0, 0), 0 elsewhere
    fen = torch.zeros(1, 4, 2, 2)
    encoder = torch.zeros(1, 4, 2, 2)
    encoder[0, :, 1, 1] = 2.0  # F = 4 at the bottom-right tap cell
    return images, reconstruction, fen, encoder


def test_lambda_one_is_the_feature_map_only_upsampled_cell_centred() -> None:
    images, reconstruction, fen, encoder = _inputs()
    anomaly_map = AnomalyMapGenerator(feature_map_weight=1.0)(images, reconstruction, fen, encoder)
    # align_corners=False (anomalib's convention): each 4x4 cell's centre carries the cell's value, and
    # the map is flat beyond the outer centres; align_corners=True would already blend at row/column 1
    assert torch.all(anomaly_map[0, :2, :2] == 0.0)
    assert torch.all(anomaly_map[0, -2:, -2:] == 4.0)
    assert anomaly_map[0, 2, 2] == pytest.approx(4.0 / 64)  # (1/8 of the way to the next centre)^2
    torch.testing.assert_close(anomaly_map[0], anomaly_map[0].T)  # the layout is symmetric


def test_lambda_zero_is_the_reconstruction_map_and_mix_is_linear() -> None:
    images, reconstruction, fen, encoder = _inputs()
    residual = AnomalyMapGenerator(feature_map_weight=0.0)(images, reconstruction, fen, encoder)
    assert residual[0, 0, 0] == pytest.approx(3**0.5)
    assert residual.sum() == pytest.approx(3**0.5)
    feature = AnomalyMapGenerator(feature_map_weight=1.0)(images, reconstruction, fen, encoder)
    mixed = AnomalyMapGenerator(feature_map_weight=0.6)(images, reconstruction, fen, encoder)
    torch.testing.assert_close(mixed, 0.6 * feature + 0.4 * residual)


def test_train_stats_standardise_each_component() -> None:
    images, reconstruction, fen, encoder = _inputs()
    generator = AnomalyMapGenerator(feature_map_weight=0.5, component_norm="train_stats")
    assert generator.needs_train_stats  # unset (NaN) until measured
    assert torch.isnan(generator(images, reconstruction, fen, encoder)).all()
    generator.set_train_stats(residual=(1.0, 2.0), feature=(3.0, 4.0))
    assert not generator.needs_train_stats
    anomaly_map = generator(images, reconstruction, fen, encoder)
    # at (0, 0): R = sqrt(3) -> (sqrt(3) - 1) / 2 ; F = 0 -> (0 - 3) / 4
    assert anomaly_map[0, 0, 0] == pytest.approx(0.5 * (-0.75) + 0.5 * (3**0.5 - 1) / 2)
    assert "feature_stats" in generator.state_dict()


def test_no_fen_scores_reconstruction_only_and_bad_arguments() -> None:
    images, reconstruction, _, encoder = _inputs()
    anomaly_map = AnomalyMapGenerator(feature_map_weight=0.0)(images, reconstruction, None, encoder)
    assert anomaly_map.max() == pytest.approx(3**0.5)
    with pytest.raises(ValueError, match="component_norm"):
        AnomalyMapGenerator(component_norm="zscore")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AnomalyMapGenerator(feature_map_weight=1.5)


def test_blur_kernel_is_derived_not_saved() -> None:
    blurred = AnomalyMapGenerator(sigma=4.0)
    assert not any("blur" in key for key in blurred.state_dict())
    # a generator with another sigma loads the same state: sigma is a scoring option, not a weight
    AnomalyMapGenerator(sigma=0.0).load_state_dict(blurred.state_dict())
    AnomalyMapGenerator(sigma=2.0).load_state_dict(AnomalyMapGenerator().state_dict())


def test_mahalanobis_standardises_the_feature_residual_per_cell_and_channel() -> None:
    images, reconstruction, fen, encoder = _inputs()
    generator = AnomalyMapGenerator(feature_map_weight=1.0, feature_distance="mahalanobis", feature_shape=(4, 2, 2))
    assert generator.needs_train_stats  # unset (NaN) until measured, even with component_norm="none"
    # two "training" residuals per cell and channel: 1 and 3 (mean 2, std 1), except channel 0 at
    # cell (1, 1): 0 and 4 (mean 2, std 2); the moments are summed batch by batch
    train_fen = torch.stack([torch.full((4, 2, 2), 1.0), torch.full((4, 2, 2), 3.0)])
    train_fen[:, 0, 1, 1] = torch.tensor([0.0, 4.0])
    moments = sum(generator.feature_residual_moments(train_fen[i : i + 1], torch.zeros(1, 4, 2, 2)) for i in range(2))
    generator.set_feature_residual_stats(moments, count=2)
    assert not generator.needs_train_stats
    anomaly_map = generator(images, reconstruction, fen, encoder)
    # residual fen - encoder: 0 everywhere but -2 at cell (1, 1). Standardised: (0 - 2) / 1 = -2 per channel,
    # so F = sqrt(4 * 4) = 4 at (0, 0); at (1, 1): channel 0 (-2 - 2) / 2 = -2, others (-2 - 2) / 1 = -4
    assert anomaly_map[0, 0, 0] == pytest.approx(4.0)
    assert anomaly_map[0, -1, -1] == pytest.approx((4 + 3 * 16) ** 0.5)
    assert {"feature_residual_mean", "feature_residual_inv_std"} <= set(generator.state_dict())


def test_mahalanobis_floors_a_channel_that_never_varied_and_bad_arguments() -> None:
    generator = AnomalyMapGenerator(feature_distance="mahalanobis", feature_shape=(2, 1, 1))
    moments = torch.zeros(2, 2, 1, 1, dtype=torch.float64)
    moments[1, 1] = 2 * 4.0  # channel 1: residuals -2 and 2 (variance 4); channel 0: always 0
    generator.set_feature_residual_stats(moments, count=2)
    inv_std = generator.feature_residual_inv_std.flatten()
    assert torch.isfinite(inv_std).all()
    assert inv_std[1] == pytest.approx(0.5)
    assert inv_std[0] == pytest.approx((1e-3 * 2.0) ** -0.5)  # floored at 1e-3 of the mean variance (2)
    with pytest.raises(ValueError, match="feature_shape"):
        AnomalyMapGenerator(feature_distance="mahalanobis")
    with pytest.raises(ValueError, match="feature_distance"):
        AnomalyMapGenerator(feature_distance="cosine")


def test_image_score_is_the_max_or_the_mean_of_the_top_share() -> None:
    maps = torch.zeros(2, 10, 10)
    maps[0, 0, :3] = torch.tensor([9.0, 3.0, 3.0])  # one hot pixel
    maps[1, 5, :3] = torch.tensor([5.0, 5.0, 5.0])  # a hot region
    assert AnomalyMapGenerator(image_score_top_ratio=0.0).image_score(maps).tolist() == [9.0, 5.0]  # Eq. 10
    top = AnomalyMapGenerator(image_score_top_ratio=0.03).image_score(maps)  # mean of the 3 highest of 100
    assert top.tolist() == [5.0, 5.0]
    with pytest.raises(ValueError, match="image_score_top_ratio"):
        AnomalyMapGenerator(image_score_top_ratio=1.0)


def test_mahalanobis_ridge_adds_a_share_of_the_mean_variance_and_is_a_scoring_option() -> None:
    images, reconstruction, fen, encoder = _inputs()
    plain = AnomalyMapGenerator(feature_map_weight=1.0, feature_distance="mahalanobis", feature_shape=(4, 2, 2))
    train_fen = torch.stack([torch.full((4, 2, 2), 1.0), torch.full((4, 2, 2), 3.0)])
    train_fen[:, 0, 1, 1] = torch.tensor([0.0, 4.0])  # variances: 1 everywhere, 4 at channel 0 of cell (1, 1)
    moments = sum(plain.feature_residual_moments(train_fen[i : i + 1], torch.zeros(1, 4, 2, 2)) for i in range(2))
    plain.set_feature_residual_stats(moments, count=2)
    ridged = AnomalyMapGenerator(
        feature_map_weight=1.0, feature_distance="mahalanobis", feature_shape=(4, 2, 2), mahalanobis_ridge=1.0
    )
    ridged.load_state_dict(plain.state_dict())  # the same stored statistics: the ridge is applied when scoring
    mean_variance = (15 * 1.0 + 4.0) / 16
    # cell (0, 0): residual 0 - mean 2 in 4 channels of variance 1 -> sqrt(4 * 4 / (1 + mean_variance))
    anomaly_map = ridged(images, reconstruction, fen, encoder)
    assert anomaly_map[0, 0, 0] == pytest.approx((16 / (1 + mean_variance)) ** 0.5)
    assert anomaly_map[0, 0, 0] < plain(images, reconstruction, fen, encoder)[0, 0, 0]
    with pytest.raises(ValueError, match="mahalanobis_ridge"):
        AnomalyMapGenerator(mahalanobis_ridge=-0.1)


def test_nearest_distance_is_the_distance_to_the_closest_memory_row_leaving_own_image_out() -> None:
    generator = torch.Generator().manual_seed(0)
    cells, memory = torch.randn(50, 6, generator=generator), torch.randn(9000, 6, generator=generator)
    expected = torch.cdist(cells.double(), memory.double()).amin(1).float()
    torch.testing.assert_close(nearest_distance(cells, memory), expected, atol=1e-4, rtol=1e-4)  # chunked: 3 chunks
    # a cell that is itself in the memory is at distance 0, unless its own image's rows are left out
    memory[123] = cells[7]
    cell_images, memory_images = torch.zeros(50, dtype=torch.long), torch.ones(9000, dtype=torch.long)
    memory_images[123] = 0
    assert nearest_distance(cells, memory)[7] == pytest.approx(0.0, abs=1e-2)  # ‖x‖² − 2x·m + ‖m‖² in float32
    left_out = nearest_distance(cells, memory, cell_images, memory_images)
    assert left_out[7] > 0.1 and torch.all(left_out >= nearest_distance(cells, memory) - 1e-5)


def test_nearest_scores_a_cell_by_its_closest_training_cell_wherever_it_sat() -> None:
    """A training residual seen at one cell is normal at any cell: the memory has no notion of position."""
    generator = AnomalyMapGenerator(
        feature_map_weight=1.0, feature_distance="nearest", feature_shape=(4, 2, 2), memory_size=3
    )
    assert generator.needs_train_stats  # an empty memory: test, predict and export refuse it
    training = torch.zeros(1, 4, 2, 2)
    training[0, :, 0, 0] = 3.0  # one distinctive residual, top left
    kept = generator.set_memory(generator.memory_cells(training, torch.zeros_like(training)))
    assert generator.memory_bank.shape == (3, 4) and len(kept) == 3  # 4 cells, at most 3 kept (seeded subset)
    assert not generator.needs_train_stats
    image = torch.zeros(1, 3, 8, 8)
    shifted = torch.zeros(1, 4, 2, 2)
    shifted[0, :, 1, 1] = 3.0  # the same residual, bottom right
    same = generator(image, image, shifted, torch.zeros_like(shifted))
    novel = generator(image, image, shifted * 3, torch.zeros_like(shifted))
    assert same.max() < novel.max()
    with pytest.raises(ValueError, match="memory_size must be a positive"):
        AnomalyMapGenerator(feature_distance="nearest", feature_shape=(4, 2, 2), memory_size=0)


def test_a_measured_memory_loads_into_an_unmeasured_model_of_any_memory_size() -> None:
    source = AnomalyMapGenerator(feature_distance="nearest", feature_shape=(4, 2, 2))
    source.set_memory(torch.randn(37, 4))
    target = AnomalyMapGenerator(feature_distance="nearest", feature_shape=(4, 2, 2))
    target.load_state_dict(source.state_dict())  # anomalib's DynamicBufferMixin resizes the empty buffer
    assert torch.equal(target.memory_bank, source.memory_bank)
