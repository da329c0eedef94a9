"""M-SE, FEGAN's Multi-scale Self-Enhancement augmentation **[A9]**.

During training FEGAN pastes colour-jittered patches cut from the image itself onto the image,
so the generator must map a locally "defective" input back to the clean image and its clean
features. Patches are cut from the original image (not from the already-pasted copy), their
total area is ``area_ratio`` of the image, each at most ``max_patch_ratio``, with log-uniform
aspect ratios; overlaps are allowed. Like DRAEM's augmenter, it runs inside ``training_step``
on the already-resized batch, and it is never part of the inference graph.

Draws come from an optional ``torch.Generator`` so a seed gives the same output.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF  # noqa: N812


class Patch(NamedTuple):
    """One pasted patch: height, width, source and destination top-left corners."""

    height: int
    width: int
    src: tuple[int, int]
    dst: tuple[int, int]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [0, high]."""
    return int(torch.randint(high + 1, (), generator=generator).item())


class MultiScaleSelfEnhancement(nn.Module):
    """M-SE: ``(images[B,C,H,W] in [0,1]) -> (augmented, mask[B,1,H,W])``.

    Args:
        area_ratio: sum of pasted patch areas over the image area. Defaults to ``0.20``.
        max_patch_ratio: largest area of one patch over the image area. Defaults to ``0.01``.
        aspect_ratio: (min, max) of the log-uniform height/width ratio. Defaults to ``(0.3, 1/0.3)``.
        brightness: colour-jitter brightness range, factor in [1-b, 1+b]. Defaults to ``0.4``.
        contrast: colour-jitter contrast range. Defaults to ``0.4``.
        saturation: colour-jitter saturation range. Defaults to ``0.4``.
        hue: colour-jitter hue shift range, in [-h, h]. Defaults to ``0.1``.

    ``n = ceil(area_ratio / max_patch_ratio)`` patches of area ``area_ratio·H·W / n`` each, so
    ``area_ratio == max_patch_ratio`` gives one patch. Patch sides are floored (the spec rounds)
    so no patch ever exceeds ``max_patch_ratio``. The jitter applies brightness, contrast,
    saturation, hue in that fixed order (torchvision's ``ColorJitter`` shuffles the order from the
    global RNG, which would break seeding).

    Example:
        >>> m_se = MultiScaleSelfEnhancement()
        >>> augmented, mask = m_se(torch.rand(2, 3, 64, 64), generator=torch.Generator().manual_seed(0))
        >>> augmented.shape, mask.shape
        (torch.Size([2, 3, 64, 64]), torch.Size([2, 1, 64, 64]))

    """

    def __init__(
        self,
        area_ratio: float = 0.20,
        max_patch_ratio: float = 0.01,
        aspect_ratio: tuple[float, float] = (0.3, 1 / 0.3),
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
    ) -> None:
        super().__init__()
        if not 0.0 < max_patch_ratio <= 1.0 or not 0.0 < area_ratio <= 1.0:
            msg = f"area_ratio and max_patch_ratio must lie in (0, 1], got {area_ratio} and {max_patch_ratio}."
            raise ValueError(msg)
        if max_patch_ratio > area_ratio:
            msg = f"max_patch_ratio ({max_patch_ratio}) must not exceed area_ratio ({area_ratio})."
            raise ValueError(msg)
        self.area_ratio = area_ratio
        self.max_patch_ratio = max_patch_ratio
        self.log_aspect = (math.log(aspect_ratio[0]), math.log(aspect_ratio[1]))
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue

    @property
    def num_patches(self) -> int:
        """``ceil(area_ratio / max_patch_ratio)``, robust to float error (0.2 / 0.01 = 20.000000000000004)."""
        return math.ceil(round(self.area_ratio / self.max_patch_ratio, 9))

    def sample_patches(self, height: int, width: int, generator: torch.Generator | None = None) -> list[Patch]:
        """Draw the patches for one image of size (height, width)."""
        count = self.num_patches
        area = self.area_ratio * height * width / count
        patches = []
        for _ in range(count):
            ratio = math.exp(_uniform(*self.log_aspect, generator))
            patch_h = min(height, max(1, math.floor(math.sqrt(area * ratio))))
            patch_w = min(width, max(1, math.floor(area / patch_h)))
            src = (_randint(height - patch_h, generator), _randint(width - patch_w, generator))
            dst = (_randint(height - patch_h, generator), _randint(width - patch_w, generator))
            patches.append(Patch(patch_h, patch_w, src, dst))
        return patches

    def jitter(self, patch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Colour-jitter one (C, h, w) patch; grayscale-safe (saturation and hue need 3 channels)."""
        patch = TF.adjust_brightness(patch, _uniform(1 - self.brightness, 1 + self.brightness, generator))
        patch = TF.adjust_contrast(patch, _uniform(1 - self.contrast, 1 + self.contrast, generator))
        saturation = _uniform(1 - self.saturation, 1 + self.saturation, generator)
        hue = _uniform(-self.hue, self.hue, generator)
        if patch.shape[0] == 3:
            patch = TF.adjust_saturation(patch, saturation)
            patch = TF.adjust_hue(patch, hue)
        return patch.clamp(0.0, 1.0)

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the augmented batch and the mask of pasted pixels."""
        batch, _, height, width = images.shape
        augmented = images.clone()
        mask = torch.zeros(batch, 1, height, width, dtype=images.dtype, device=images.device)
        for index in range(batch):
            for patch in self.sample_patches(height, width, generator):
                (sy, sx), (dy, dx), h, w = patch.src, patch.dst, patch.height, patch.width
                source = images[index, :, sy : sy + h, sx : sx + w]
                augmented[index, :, dy : dy + h, dx : dx + w] = self.jitter(source, generator)
                mask[index, :, dy : dy + h, dx : dx + w] = 1.0
        return augmented, mask
