"""Table 6 comparators: the altered area, what happens to masked and unmasked pixels, seeding, selection."""

from __future__ import annotations

import pytest
import torch

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan.augmentation import (
    RIAD,
    SCADN,
    Cutout,
    CutoutColour,
    MultiScaleSelfEnhancement,
    build_augmentation,
)

SIZE = 64


@pytest.mark.parametrize(
    ("augmentation", "tolerance"),
    [(Cutout(0.2), 0.02), (CutoutColour(0.2), 0.02), (RIAD(0.2), 0.05), (SCADN(0.2), 0.06)],
)
def test_area_and_untouched_pixels(augmentation: torch.nn.Module, tolerance: float) -> None:
    images = torch.rand(4, 3, SIZE, SIZE) * 0.8 + 0.1  # no pixel is exactly 0
    augmented, mask = augmentation(images, generator=torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape and mask.shape == (4, 1, SIZE, SIZE)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    fractions = mask.mean(dim=(1, 2, 3))
    assert torch.all((fractions - 0.2).abs() <= tolerance), fractions
    keep = mask.expand_as(images) == 0
    assert torch.equal(augmented[keep], images[keep])  # only masked pixels change
    changed = augmented[~keep]
    if isinstance(augmentation, CutoutColour):
        per_image = [augmented[i][:, mask[i, 0] > 0].reshape(3, -1) for i in range(4)]
        assert all(torch.allclose(p, p[:, :1].expand_as(p)) for p in per_image)  # one colour per square
        assert not torch.equal(per_image[0][:, 0], per_image[1][:, 0])  # drawn per image
    else:
        assert torch.all(changed == 0)  # erased to black


def test_cutout_is_one_square() -> None:
    _, mask = Cutout(0.25)(torch.rand(1, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(3))
    rows, cols = mask[0, 0].nonzero(as_tuple=True)
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert (height, width) == (32, 32) and int(mask.sum()) == 32 * 32


def test_scadn_draws_stripes() -> None:
    _, mask = SCADN(0.25, widths=(4,))(torch.rand(6, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    for image_mask in mask[:, 0]:
        rows_constant = torch.all(image_mask == image_mask[:1, :])  # vertical stripes: every row the same
        cols_constant = torch.all(image_mask == image_mask[:, :1])
        assert rows_constant or cols_constant
        line = image_mask[0] if rows_constant else image_mask[:, 0]
        assert int(line.sum()) == 16  # round(0.25 * 64 / 4) = 4 stripes of 4 px


@pytest.mark.parametrize("cls", [Cutout, CutoutColour, RIAD, SCADN])
def test_seeded(cls: type) -> None:
    images = torch.rand(2, 3, SIZE, SIZE)
    first = cls(0.2)(images, generator=torch.Generator().manual_seed(5))
    second = cls(0.2)(images, generator=torch.Generator().manual_seed(5))
    other = cls(0.2)(images, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


def test_build_by_name_and_class_path() -> None:
    assert isinstance(build_augmentation("RIAD", 0.3, 0.01), RIAD)
    m_se = build_augmentation("MultiScaleSelfEnhancement", 0.3, 0.05)
    assert isinstance(m_se, MultiScaleSelfEnhancement) and m_se.num_patches == 6
    cutout = build_augmentation("fegan_anomalib.models.fegan.augmentation.Cutout", 0.1, 0.01, fill="colour")
    assert isinstance(cutout, Cutout) and cutout.fill == "colour" and cutout.area_ratio == 0.1
    with pytest.raises(ValueError, match="Unknown augmentation 'Mixup'"):
        build_augmentation("Mixup", 0.2, 0.01)
    with pytest.raises(ValueError, match="cannot be imported"):
        build_augmentation("no_such_package.Mixup", 0.2, 0.01)
    with pytest.raises(ValueError, match="area_ratio must lie in"):
        SCADN(0.0)


def test_fegan_uses_the_configured_augmentation() -> None:
    model = Fegan(image_size=32, pre_trained=False, augmenter="SCADN", augmenter_area_ratio=0.3)
    assert isinstance(model.augmenter, SCADN) and model.augmenter.area_ratio == 0.3
    assert model.hparams.augmenter == "SCADN"  # plain data in the checkpoint
