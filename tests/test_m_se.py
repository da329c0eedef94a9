"""M-SE: area, patch bound, untouched pixels, seeding."""

from __future__ import annotations

import math

import pytest
import torch

from fegan_anomalib import MultiScaleSelfEnhancement


def _union_area(patches, size: int) -> int:
    covered = torch.zeros(size, size, dtype=torch.bool)
    for p in patches:
        covered[p.dst[0] : p.dst[0] + p.height, p.dst[1] : p.dst[1] + p.width] = True
    return int(covered.sum())


@pytest.mark.parametrize(("area_ratio", "count"), [(0.2, 20), (0.05, 5), (0.3, 30)])
def test_covered_area_and_patch_bound(area_ratio: float, count: int) -> None:
    size = 128
    m_se = MultiScaleSelfEnhancement(area_ratio=area_ratio, max_patch_ratio=0.01)
    generator = torch.Generator().manual_seed(1)
    patches = m_se.sample_patches(size, size, generator)
    assert len(patches) == count
    areas = [p.height * p.width for p in patches]
    assert max(areas) <= 0.01 * size * size
    # floored sides lose a little area, never more than one row/column per patch
    total = sum(areas)
    assert area_ratio * size * size * 0.85 <= total <= area_ratio * size * size
    for p in patches:
        assert 0 <= p.dst[0] <= size - p.height and 0 <= p.dst[1] <= size - p.width
        assert 0.3 / 1.5 <= p.height / p.width <= 1.5 / 0.3

    images = torch.rand(1, 3, size, size)
    _, mask = m_se(images, generator=torch.Generator().manual_seed(1))
    assert int(mask.sum()) == _union_area(patches, size)  # covered = pasted area minus overlaps


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
    patches = m_se.sample_patches(256, 256, torch.Generator().manual_seed(0))
    assert len(patches) == 1
    assert patches[0].height * patches[0].width <= 0.01 * 256 * 256
    assert patches[0].height * patches[0].width >= 0.01 * 256 * 256 - math.sqrt(0.01 * 256 * 256 / 0.3)


def test_grayscale_batch_and_bad_ratios() -> None:
    augmented, mask = MultiScaleSelfEnhancement()(torch.rand(1, 1, 32, 32), generator=torch.Generator().manual_seed(0))
    assert augmented.shape == (1, 1, 32, 32) and mask.shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="must not exceed"):
        MultiScaleSelfEnhancement(area_ratio=0.01, max_patch_ratio=0.05)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        MultiScaleSelfEnhancement(area_ratio=0.0)
