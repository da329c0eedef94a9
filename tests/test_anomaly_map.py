"""The scoring step (Eq. 6-10) on known answers."""

from __future__ import annotations

import pytest
import torch

from fegan_anomalib.models.fegan.defaults import DEFAULTS
from fegan_anomalib.models.fegan.scoring.anomaly_map import AnomalyMapGenerator, residual_map
from fegan_anomalib.models.fegan.scoring.memory import memory_spacing, nearest_distance

# Eq. 6-8 as printed, with no statistic to measure, and plain per-cell whitening where a test asks for it
PAPER = {"feature_distance": "l2", "component_norm": "none", "mahalanobis_ridge": 0.0}


def _generator(**kwargs) -> AnomalyMapGenerator:
    return AnomalyMapGenerator(**{**PAPER, **kwargs})


def _inputs() -> tuple[torch.Tensor, ...]:
    images = torch.full((1, 3, 8, 8), 0.5)  # [0, 1] images: 0 in the decoder's range [-1, 1]
    reconstruction = torch.zeros(1, 3, 8, 8)
    reconstruction[0, :, 0, 0] = 1.0  # R = sqrt(3) at (0, 0), 0 elsewhere
    fen = torch.zeros(1, 4, 2, 2)
    encoder = torch.zeros(1, 4, 2, 2)
    encoder[0, :, 1, 1] = 2.0  # F = 4 at the bottom-right tap cell
    return images, reconstruction, fen, encoder


def test_lambda_one_is_the_feature_map_only_upsampled_cell_centred() -> None:
    images, reconstruction, fen, encoder = _inputs()
    anomaly_map = _generator(feature_map_weight=1.0)(images, reconstruction, fen, encoder)
    # align_corners=False (anomalib's convention): each 4x4 cell's centre carries the cell's value, and
    # the map is flat beyond the outer centres; align_corners=True would already blend at row/column 1
    assert torch.all(anomaly_map[0, :2, :2] == 0.0)
    assert torch.all(anomaly_map[0, -2:, -2:] == 4.0)
    assert anomaly_map[0, 2, 2] == pytest.approx(4.0 / 64)  # (1/8 of the way to the next centre)^2
    torch.testing.assert_close(anomaly_map[0], anomaly_map[0].T)  # the layout is symmetric


def test_lambda_zero_is_the_reconstruction_map_and_mix_is_linear() -> None:
    images, reconstruction, fen, encoder = _inputs()
    residual = _generator(feature_map_weight=0.0)(images, reconstruction, fen, encoder)
    assert residual[0, 0, 0] == pytest.approx(3**0.5)
    assert residual.sum() == pytest.approx(3**0.5)
    feature = _generator(feature_map_weight=1.0)(images, reconstruction, fen, encoder)
    mixed = _generator(feature_map_weight=0.6)(images, reconstruction, fen, encoder)
    torch.testing.assert_close(mixed, 0.6 * feature + 0.4 * residual)


def test_train_stats_standardise_each_component() -> None:
    images, reconstruction, fen, encoder = _inputs()
    generator = _generator(feature_map_weight=0.5, component_norm="train_stats")
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
    anomaly_map = _generator(feature_map_weight=0.0)(images, reconstruction, None, encoder)
    assert anomaly_map.max() == pytest.approx(3**0.5)
    with pytest.raises(ValueError, match="component_norm"):
        _generator(component_norm="zscore")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _generator(feature_map_weight=1.5)


def test_blur_kernel_is_derived_not_saved() -> None:
    blurred = _generator(sigma=4.0)
    assert not any("blur" in key for key in blurred.state_dict())
    # a generator with another sigma loads the same state: sigma is a scoring option, not a weight
    _generator(sigma=0.0).load_state_dict(blurred.state_dict())
    _generator(sigma=2.0).load_state_dict(_generator().state_dict())


def test_r_is_one_function_of_the_image_in_0_1_and_the_reconstruction_in_minus_1_1() -> None:
    images = torch.zeros(1, 3, 2, 2)
    images[0, :, 0, 0] = 1.0  # white: +1 in the decoder's range
    reconstruction = torch.full((1, 3, 2, 2), -1.0)  # black
    expected = torch.tensor([[[2 * 3**0.5, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(residual_map(images, reconstruction), expected)
    torch.testing.assert_close(residual_map(images.half(), reconstruction.bfloat16()), expected)  # float32 always
    assert residual_map(images.half(), reconstruction).dtype == torch.float32


def test_mahalanobis_standardises_the_feature_residual_per_cell_and_channel() -> None:
    images, reconstruction, fen, encoder = _inputs()
    generator = _generator(feature_map_weight=1.0, feature_distance="mahalanobis", feature_shape=(4, 2, 2))
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
    generator = _generator(feature_distance="mahalanobis", feature_shape=(2, 1, 1))
    moments = torch.zeros(2, 2, 1, 1, dtype=torch.float64)
    moments[1, 1] = 2 * 4.0  # channel 1: residuals -2 and 2 (variance 4); channel 0: always 0
    generator.set_feature_residual_stats(moments, count=2)
    inv_std = generator.feature_residual_inv_std.flatten()
    assert torch.isfinite(inv_std).all()
    assert inv_std[1] == pytest.approx(0.5)
    assert inv_std[0] == pytest.approx((1e-3 * 2.0) ** -0.5)  # floored at 1e-3 of the mean variance (2)
    with pytest.raises(ValueError, match="feature_shape"):
        _generator(feature_distance="mahalanobis")
    with pytest.raises(ValueError, match="feature_distance"):
        _generator(feature_distance="cosine")


def test_image_score_is_the_max_or_the_mean_of_the_top_share() -> None:
    maps = torch.zeros(2, 10, 10)
    maps[0, 0, :3] = torch.tensor([9.0, 3.0, 3.0])  # one hot pixel
    maps[1, 5, :3] = torch.tensor([5.0, 5.0, 5.0])  # a hot region
    assert _generator(image_score_top_ratio=0.0).image_score(maps).tolist() == [9.0, 5.0]  # Eq. 10
    top = _generator(image_score_top_ratio=0.03).image_score(maps)  # mean of the 3 highest of 100
    assert top.tolist() == [5.0, 5.0]
    with pytest.raises(ValueError, match="image_score_top_ratio"):
        _generator(image_score_top_ratio=1.0)


def test_image_score_from_the_feature_map_reads_standardised_f_before_r_and_the_blur() -> None:
    images, reconstruction, fen, encoder = _inputs()  # F = 4 on the bottom-right cell, R = sqrt(3) at (0, 0)
    encoder[0, :, 0, 0] = 0.5  # F = 1 on the top-left cell: R and F now peak in opposite corners
    settings = {"feature_map_weight": 0.5, "component_norm": "train_stats", "sigma": 1.0, "image_score_top_ratio": 0.0}
    from_s, from_f = (_generator(**settings, image_score_from=name) for name in ("anomaly_map", "feature_map"))
    for generator in (from_s, from_f):
        generator.set_train_stats(residual=(0.5, 0.25), feature=(2.0, 0.5))
    residual, feature = from_s.components(images, reconstruction, fen, encoder)
    map_s, score_s = from_s.score(residual, feature)
    map_f, score_f = from_f.score(residual, feature)
    torch.testing.assert_close(map_f, map_s)  # the map is S either way
    torch.testing.assert_close(score_s, map_s.flatten(1).amax(1))  # Eq. 10: the blurred S's maximum
    assert score_f.tolist() == [pytest.approx((4.0 - 2.0) / 0.5)]  # F's maximum, standardised, unblurred
    assert float(score_f) > float(score_s)
    with pytest.raises(ValueError, match="image_score_from"):
        _generator(image_score_from="residual_map")


def test_mahalanobis_ridge_adds_a_share_of_the_mean_variance_and_is_a_scoring_option() -> None:
    images, reconstruction, fen, encoder = _inputs()
    plain = _generator(feature_map_weight=1.0, feature_distance="mahalanobis", feature_shape=(4, 2, 2))
    train_fen = torch.stack([torch.full((4, 2, 2), 1.0), torch.full((4, 2, 2), 3.0)])
    train_fen[:, 0, 1, 1] = torch.tensor([0.0, 4.0])  # variances: 1 everywhere, 4 at channel 0 of cell (1, 1)
    moments = sum(plain.feature_residual_moments(train_fen[i : i + 1], torch.zeros(1, 4, 2, 2)) for i in range(2))
    plain.set_feature_residual_stats(moments, count=2)
    ridged = _generator(
        feature_map_weight=1.0, feature_distance="mahalanobis", feature_shape=(4, 2, 2), mahalanobis_ridge=1.0
    )
    ridged.load_state_dict(plain.state_dict())  # the same stored statistics: the ridge is applied when scoring
    mean_variance = (15 * 1.0 + 4.0) / 16
    # cell (0, 0): residual 0 - mean 2 in 4 channels of variance 1 -> sqrt(4 * 4 / (1 + mean_variance))
    anomaly_map = ridged(images, reconstruction, fen, encoder)
    assert anomaly_map[0, 0, 0] == pytest.approx((16 / (1 + mean_variance)) ** 0.5)
    assert anomaly_map[0, 0, 0] < plain(images, reconstruction, fen, encoder)[0, 0, 0]
    with pytest.raises(ValueError, match="mahalanobis_ridge"):
        _generator(mahalanobis_ridge=-0.1)


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


def _block(grid: int, top: int, pattern: torch.Tensor) -> torch.Tensor:
    """(1, C, grid, grid) residuals: ``pattern`` (C,) in a 3×3 block of cells from (top, top), 0 elsewhere."""
    residual = torch.zeros(1, pattern.shape[0], grid, grid)
    residual[0, :, top : top + 3, top : top + 3] = pattern[:, None, None]
    return residual


@pytest.mark.parametrize("memory_size", [7, 40, 100, 500])
def test_nearest_scores_a_pattern_as_normal_wherever_it_sat_for_any_memory_that_holds_its_cells(
    memory_size: int,
) -> None:
    """A 10×10 grid, larger than the 3×3 window: a block seen at one place in training is normal at another.

    Every 3×3 window that touches the block lies inside the grid at both places, so each test cell's averaged residual
    is some training cell's: F is 0 everywhere. The training image has 7 distinct averaged cells (a window overlaps the
    block in 1, 2, 3, 4, 6 or 9 cells, or not): any memory of at least 7 keeps them all (k-center stops at the 7
    distinct rows, never repeating one; 100 and 500 keep all 100 cells), one of 5 cannot.
    """
    pattern = torch.tensor([3.0, -1.0, 2.0, 0.5])
    generator = _generator(feature_map_weight=1.0, feature_distance="nearest", feature_shape=(4, 10, 10))
    generator.memory_size = memory_size
    assert generator.needs_train_stats  # an empty memory: test, predict and export refuse it
    training = _block(10, 2, pattern)
    generator.set_memory(generator.memory_cells(training, torch.zeros_like(training)), torch.Generator())
    assert generator.memory_bank.shape == (7 if memory_size < 100 else 100, 4)
    assert generator.memory_bank.unique(dim=0).shape[0] == 7  # no row twice below 100 (a coreset)
    image = torch.zeros(1, 3, 40, 40)
    moved = _block(10, 5, pattern)
    same = generator(image, image, moved, torch.zeros_like(moved))
    assert same.abs().max() < 1e-3  # the block moved by 3 cells: normal everywhere
    novel = generator(image, image, _block(10, 5, 2 * pattern), torch.zeros_like(moved))
    assert novel.max() > 1.0
    small = _generator(feature_map_weight=1.0, feature_distance="nearest", feature_shape=(4, 10, 10), memory_size=5)
    small.set_memory(small.memory_cells(training, torch.zeros_like(training)), torch.Generator())
    assert small.memory_bank.shape == (5, 4) and small(image, image, moved, torch.zeros_like(moved)).max() > 0.1
    with pytest.raises(ValueError, match="memory_size must be a positive"):
        _generator(feature_distance="nearest", feature_shape=(4, 2, 2), memory_size=0)


def test_the_per_cell_half_learns_where_things_are_and_refuses_another_grid() -> None:
    """The same moved block is abnormal to the per-cell statistics (they learnt where it sat); another grid fails."""
    generator = _generator(feature_map_weight=1.0, feature_distance="mahalanobis", feature_shape=(4, 10, 10))
    pattern = torch.tensor([3.0, -1.0, 2.0, 0.5])
    training = torch.cat([_block(10, 2, pattern), _block(10, 2, 1.1 * pattern)])
    moments = generator.feature_residual_moments(training, torch.zeros_like(training))
    generator.set_feature_residual_stats(moments, count=2)
    image = torch.zeros(1, 3, 40, 40)
    moved = _block(10, 5, pattern)
    assert generator(image, image, moved, torch.zeros_like(moved)).max() > 10.0
    with pytest.raises(ValueError, match=r"10x10 tap grid, this input gives 8x8: resize images"):
        generator(
            torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8)
        )


def test_a_measured_memory_loads_into_an_unmeasured_model_of_any_memory_size() -> None:
    source = _generator(feature_distance="nearest", feature_shape=(4, 2, 2))
    source.set_memory(torch.randn(37, 4), torch.Generator())
    target = _generator(feature_distance="nearest", feature_shape=(4, 2, 2), memory_size=8)
    target.load_state_dict(source.state_dict())  # anomalib's DynamicBufferMixin resizes the empty buffer
    assert torch.equal(target.memory_bank, source.memory_bank)


def test_reset_statistics_forgets_every_measurement() -> None:
    generator = _generator(
        feature_distance="mahalanobis+nearest", feature_shape=(4, 2, 2), component_norm="train_stats"
    )
    generator.set_memory(torch.randn(5, 4), torch.Generator())
    generator.set_feature_residual_stats(torch.ones(2, 4, 2, 2, dtype=torch.float64), count=2)
    generator.distance_stats.fill_(1.0)
    generator.set_train_stats((0.0, 1.0), (0.0, 1.0))
    assert not generator.needs_train_stats
    generator.reset_statistics()
    assert generator.needs_train_stats and generator.memory_bank.shape == (0, 4)
    assert all(torch.isnan(b).all() for n, b in generator.named_buffers() if n != "memory_bank")


def test_the_generator_defaults_are_the_settings_table() -> None:
    generator = AnomalyMapGenerator(feature_shape=(4, 2, 2))
    for name in (
        "feature_map_weight",
        "component_norm",
        "feature_distance",
        "image_score_top_ratio",
        "image_score_from",
        "density_reweighting",
    ):
        assert getattr(generator, name) == DEFAULTS[name], name
    assert (generator.mahalanobis_ridge, generator.memory_size) == (
        DEFAULTS["mahalanobis_ridge"],
        DEFAULTS["memory_size"],
    )


def test_memory_spacing_is_the_mean_distance_to_the_nearest_other_rows() -> None:
    """Rows on a line at 0, 1, 3 and 7: each row's two nearest others, by hand; duplicates are floored, not 0."""
    memory = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]])
    torch.testing.assert_close(memory_spacing(memory, 1), torch.tensor([1.0, 1.0, 2.0, 4.0]))
    torch.testing.assert_close(memory_spacing(memory, 2), torch.tensor([2.0, 1.5, 2.5, 5.0]))
    assert memory_spacing(memory, 8).shape == (4,)  # more neighbours than rows: all the others
    twice = memory_spacing(torch.tensor([[1.0, 2.0], [1.0, 2.0], [5.0, 2.0]]), 1)
    assert twice[0] == pytest.approx(1e-3 * 4.0 / 3) and twice[2] == pytest.approx(4.0)  # floored: 1e-3 of the mean
    assert torch.equal(memory_spacing(torch.ones(1, 3)), torch.ones(1))  # no neighbour: divided by 1
    big = torch.randn(5000, 3, generator=torch.Generator().manual_seed(0))  # two chunks of the row loop
    expected = torch.cdist(big.double(), big.double()).fill_diagonal_(float("inf")).topk(8, largest=False).values
    torch.testing.assert_close(memory_spacing(big), expected.mean(1).float(), atol=1e-4, rtol=1e-4)


def test_density_reweighting_divides_the_nearest_distance_by_its_rows_spacing() -> None:
    """A cell 1 from a row in a dense region stands out more than a cell 1 from a row in a sparse one."""
    memory = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]])
    cells = torch.tensor([[0.5, 0.0], [8.0, 0.0], [6.0, 0.0]])
    spacing = memory_spacing(memory, 1)  # 1, 1, 2, 4
    torch.testing.assert_close(nearest_distance(cells, memory), torch.tensor([0.5, 1.0, 1.0]))
    torch.testing.assert_close(nearest_distance(cells, memory, spacing=spacing), torch.tensor([0.5, 0.25, 0.25]))
    # the nearest row is chosen before the division (not the smallest ratio), also across chunks and left out images
    generator = torch.Generator().manual_seed(1)
    cells, rows = torch.randn(40, 6, generator=generator), torch.randn(9000, 6, generator=generator)
    spacing = torch.rand(9000, generator=generator) + 0.5
    cell_images, row_images = torch.zeros(40, dtype=torch.long), torch.randint(0, 3, (9000,), generator=generator)
    distances = torch.cdist(cells.double(), rows.double()).masked_fill(row_images[None] == 0, float("inf"))
    least, index = distances.min(1)
    expected = (least / spacing.double()[index]).float()
    actual = nearest_distance(cells, rows, cell_images, row_images, spacing)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_density_reweighting_derives_the_spacing_from_the_memory_set_or_loaded() -> None:
    """The spacing is measured when the memory is set and again when a state dict brings one; it is never saved."""
    shape = (4, 2, 2)
    source = _generator(feature_distance="nearest", feature_shape=shape, density_reweighting=True)
    source.set_memory(torch.randn(37, 4, generator=torch.Generator().manual_seed(0)), torch.Generator())
    torch.testing.assert_close(source.memory_spacing, memory_spacing(source.memory_bank))
    assert "memory_spacing" not in source.state_dict()
    target = _generator(feature_distance="mahalanobis+nearest", feature_shape=shape, density_reweighting=True)
    missing = target.load_state_dict(source.state_dict(), strict=False).missing_keys
    assert "memory_spacing" not in missing
    torch.testing.assert_close(target.memory_spacing, source.memory_spacing)
    plain = _generator(feature_distance="nearest", feature_shape=shape)
    plain.load_state_dict(source.state_dict())  # a memory measured either way loads into the other
    residual = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(2))
    zeros = torch.zeros_like(residual)
    weighed, unweighed = source.cell_distances(residual, zeros)["nearest"], plain.cell_distances(residual, zeros)
    assert not torch.allclose(weighed, unweighed["nearest"])
    source.memory_bank = torch.randn(5, 4)  # replaced by hand (as benchmarks/inference.py does): derived again
    assert source.spacing.shape == (5,)
    source.reset_statistics()
    assert source.memory_spacing.shape == (0,) and source.needs_train_stats
    with pytest.raises(ValueError, match="density_reweighting re-weighs the nearest-neighbour distance"):
        _generator(feature_distance="mahalanobis", feature_shape=shape, density_reweighting=True)


def test_density_reweighting_is_dropped_with_f_where_the_model_has_no_fen() -> None:
    """use_fen=False scores R alone and sets F's options aside, this one too, not refusing a setting not typed."""
    from fegan_anomalib.models.fegan.torch_model import FeganModel

    model = FeganModel((32, 32), pre_trained=False, use_fen=False, density_reweighting=True)
    assert model.anomaly_map_generator.density_reweighting is False
