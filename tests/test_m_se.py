"""M-SE: the batched augmenter against a per-patch reference, its draws' statistics, seeding, bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from fegan_anomalib import MultiScaleSelfEnhancement
from fegan_anomalib.models.fegan.augmentation import PatchDraws


def _reference(images: torch.Tensor, draws: PatchDraws) -> tuple[torch.Tensor, torch.Tensor]:
    """The method as written: patch after patch, cut from the original, torchvision's jitter, pasted in order."""
    augmented, mask = images.clone(), torch.zeros(images.shape[0], 1, *images.shape[-2:])
    for b in range(images.shape[0]):
        for k in range(draws.height.shape[1]):
            h, w, sy, sx, dy, dx = (int(getattr(draws, f)[b, k]) for f in PatchDraws._fields[:6])
            patch = images[b, :, sy : sy + h, sx : sx + w]
            patch = TF.adjust_brightness(patch, float(draws.brightness[b, k]))
            patch = TF.adjust_contrast(patch, float(draws.contrast[b, k]))
            if images.shape[1] == 3:
                patch = TF.adjust_saturation(patch, float(draws.saturation[b, k]))
                patch = TF.adjust_hue(patch, float(draws.hue[b, k]))
            augmented[b, :, dy : dy + h, dx : dx + w] = patch.clamp(0, 1)
            mask[b, :, dy : dy + h, dx : dx + w] = 1.0
    return augmented, mask


@pytest.mark.parametrize(("channels", "size", "area_ratio"), [(3, 64, 0.2), (1, 48, 0.05), (3, 40, 0.3)])
def test_batched_augmenter_equals_the_per_patch_method(channels: int, size: int, area_ratio: float) -> None:
    images = torch.rand(3, channels, size, size, generator=torch.Generator().manual_seed(size))
    m_se = MultiScaleSelfEnhancement(area_ratio=area_ratio, max_patch_ratio=0.01)
    draws = m_se.sample_patches(3, size, size, torch.Generator().manual_seed(5))
    augmented, mask = m_se(images, generator=torch.Generator().manual_seed(5))
    expected, expected_mask = _reference(images, draws)
    assert torch.equal(mask, expected_mask)  # overlaps: the later patch wins, as pasting in order
    torch.testing.assert_close(augmented, expected, atol=2e-6, rtol=0)  # torchvision's HSV round trip, to rounding


def test_draws_follow_the_rules_over_many_images() -> None:
    size, count = 128, 20
    m_se = MultiScaleSelfEnhancement(area_ratio=0.2, max_patch_ratio=0.01)
    draws = m_se.sample_patches(2000, size, size, torch.Generator().manual_seed(1))
    assert draws.height.shape == (2000, count)  # ceil(0.2 / 0.01) patches per image
    areas = draws.height * draws.width
    assert int(areas.max()) <= 0.01 * size * size  # floored sides: never over max_patch_ratio
    per_image = areas.sum(1).double()
    # each floored side loses less than a row or column: total within 15 % under the budget, never over
    assert float(per_image.min()) >= 0.85 * 0.2 * size * size and float(per_image.max()) <= 0.2 * size * size
    log_aspect = (draws.height.double() / draws.width).log()
    assert math.log(0.3) - 0.2 <= float(log_aspect.min()) and float(log_aspect.max()) <= math.log(1 / 0.3) + 0.2
    # log-uniform on a symmetric range: centred on 1, less the flooring (height floored first, width from it:
    # h/w a little low, -0.04 in log at 128²), with a uniform's spread
    assert -0.06 < float(log_aspect.mean()) < 0.0
    assert float(log_aspect.std()) == pytest.approx(2 * math.log(1 / 0.3) / math.sqrt(12), rel=0.1)
    for corner, side in (("src_y", "height"), ("dst_y", "height"), ("src_x", "width"), ("dst_x", "width")):
        position, free = getattr(draws, corner), size - getattr(draws, side)
        assert int(position.min()) == 0 and bool((position <= free).all())  # inside the frame, edges reached
        assert float((position.double() / free).mean()) == pytest.approx(0.5, abs=0.01)  # uniform
    for name, low, high in (("brightness", 0.6, 1.4), ("contrast", 0.6, 1.4), ("saturation", 0.6, 1.4)):
        factor = getattr(draws, name)
        assert low <= float(factor.min()) < low + 0.01 and high - 0.01 < float(factor.max()) <= high, name
        assert float(factor.mean()) == pytest.approx(1.0, abs=0.005), name
    assert -0.1 <= float(draws.hue.min()) < -0.099 and 0.099 < float(draws.hue.max()) <= 0.1


def test_pixels_outside_mask_unchanged_and_inside_changed() -> None:
    images = torch.rand(2, 3, 64, 64)
    augmented, mask = MultiScaleSelfEnhancement()(images, generator=torch.Generator().manual_seed(3))
    outside = mask.expand_as(images) == 0
    assert torch.equal(augmented[outside], images[outside])
    assert not torch.equal(augmented[~outside], images[~outside])
    assert augmented.min() >= 0 and augmented.max() <= 1
    assert set(mask.unique().tolist()) == {0.0, 1.0}


def test_same_seed_same_output_other_seed_other_output() -> None:
    images = torch.rand(2, 3, 64, 64)
    m_se = MultiScaleSelfEnhancement()
    first = m_se(images, generator=torch.Generator().manual_seed(7))
    second = m_se(images, generator=torch.Generator().manual_seed(7))
    third = m_se(images, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], third[1])


def test_area_equal_to_max_patch_gives_one_patch() -> None:
    m_se = MultiScaleSelfEnhancement(area_ratio=0.01, max_patch_ratio=0.01)
    draws = m_se.sample_patches(50, 256, 256, torch.Generator().manual_seed(0))
    areas = draws.height * draws.width
    assert draws.height.shape == (50, 1)
    assert int(areas.max()) <= 0.01 * 256 * 256
    assert int(areas.min()) >= 0.01 * 256 * 256 - math.sqrt(0.01 * 256 * 256 / 0.3)


def test_grayscale_batch_and_bad_arguments() -> None:
    augmented, mask = MultiScaleSelfEnhancement()(torch.rand(1, 1, 32, 32), generator=torch.Generator().manual_seed(0))
    assert augmented.shape == (1, 1, 32, 32) and mask.shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="must not exceed"):
        MultiScaleSelfEnhancement(area_ratio=0.01, max_patch_ratio=0.05)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        MultiScaleSelfEnhancement(area_ratio=0.0)
    with pytest.raises(ValueError, match=r"hue must lie in \[0, 0.5\]"):
        MultiScaleSelfEnhancement(hue=0.7)
