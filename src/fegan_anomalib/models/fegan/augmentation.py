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


# Table 6 comparators, each with M-SE's interface: ``(images, generator) -> (augmented, mask)``,
# the same ``area_ratio`` budget (fraction of the image altered) and seeded draws. anomalib has
# DRAEM's Perlin augmenter only; these are written here because FEGAN's Table 6 needs them.


class _MaskAugmentation(nn.Module):
    """Shared frame of the comparators: per image, draw a mask, then fill the masked pixels.

    Subclasses draw the (H, W) mask in ``draw_mask`` and may override ``fill_value`` (default: black).
    """

    def __init__(self, area_ratio: float) -> None:
        super().__init__()
        if not 0.0 < area_ratio <= 1.0:
            msg = f"area_ratio must lie in (0, 1], got {area_ratio}."
            raise ValueError(msg)
        self.area_ratio = area_ratio

    def draw_mask(self, height: int, width: int, generator: torch.Generator | None) -> torch.Tensor:
        """Return one image's (H, W) mask of 0/1 floats."""
        raise NotImplementedError

    def fill_value(self, channels: int, generator: torch.Generator | None) -> torch.Tensor:
        """Return the (C, 1, 1) value the masked pixels take: black."""
        del generator
        return torch.zeros(channels, 1, 1)

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the augmented batch and the mask of altered pixels."""
        batch, channels, height, width = images.shape
        mask = torch.zeros(batch, 1, height, width, dtype=images.dtype, device=images.device)
        fills = torch.zeros(batch, channels, 1, 1, dtype=images.dtype, device=images.device)
        for index in range(batch):
            mask[index, 0] = self.draw_mask(height, width, generator).to(mask)
            fills[index] = self.fill_value(channels, generator).to(fills)
        return torch.where(mask > 0, fills, images), mask


def _positive_sizes(sizes: tuple[int, ...], name: str) -> tuple[int, ...]:
    if not sizes or min(sizes) < 1:
        msg = f"{name} must be positive pixel sizes, got {sizes}."
        raise ValueError(msg)
    return tuple(sizes)


class Cutout(_MaskAugmentation):
    """Cutout (DeVries & Taylor, 2017): one square of ``area_ratio`` of the image set to ``fill``.

    Args:
        area_ratio: square area over image area. Defaults to ``0.20``.
        fill: ``"black"`` (the original Cutout) or ``"colour"`` (one random RGB colour per square,
            the paper's Cutout-colour). Defaults to ``"black"``.

    """

    def __init__(self, area_ratio: float = 0.20, fill: str = "black") -> None:
        super().__init__(area_ratio)
        if fill not in {"black", "colour"}:
            msg = f"fill must be 'black' or 'colour', got '{fill}'."
            raise ValueError(msg)
        self.fill = fill

    def draw_mask(self, height: int, width: int, generator: torch.Generator | None) -> torch.Tensor:
        """One square (as near as the image allows) at a uniform position."""
        side_h = min(height, max(1, math.floor(math.sqrt(self.area_ratio * height * width))))
        side_w = min(width, max(1, math.floor(self.area_ratio * height * width / side_h)))
        top, left = _randint(height - side_h, generator), _randint(width - side_w, generator)
        mask = torch.zeros(height, width)
        mask[top : top + side_h, left : left + side_w] = 1.0
        return mask

    def fill_value(self, channels: int, generator: torch.Generator | None) -> torch.Tensor:
        """Black, or one uniform random colour per square."""
        if self.fill == "colour":
            return torch.rand(channels, generator=generator)[:, None, None]
        return super().fill_value(channels, generator)


class CutoutColour(Cutout):
    """Cutout-colour: a Cutout square filled with one random colour (Table 6)."""

    def __init__(self, area_ratio: float = 0.20) -> None:
        super().__init__(area_ratio=area_ratio, fill="colour")


class RIAD(_MaskAugmentation):
    """RIAD-style (Zavrtanik et al., 2021) grid erasing: a random subset of K×K cells set to zero.

    Per image a cell size K is drawn from ``cell_sizes`` and ``round(area_ratio · cells)`` of the
    grid's cells are erased. RIAD itself inpaints the erased cells over several disjoint masks;
    as a training augmentation only its masks are used here.

    Args:
        area_ratio: fraction of the cells erased. Defaults to ``0.20``.
        cell_sizes: cell sides in pixels, one drawn per image. Defaults to ``(4, 8, 16)``.

    """

    def __init__(self, area_ratio: float = 0.20, cell_sizes: tuple[int, ...] = (4, 8, 16)) -> None:
        super().__init__(area_ratio)
        self.cell_sizes = _positive_sizes(cell_sizes, "cell_sizes")

    def draw_mask(self, height: int, width: int, generator: torch.Generator | None) -> torch.Tensor:
        """Erase ``round(area_ratio · cells)`` cells of a grid of a drawn cell size."""
        cell = self.cell_sizes[_randint(len(self.cell_sizes) - 1, generator)]
        rows, cols = math.ceil(height / cell), math.ceil(width / cell)
        chosen = torch.randperm(rows * cols, generator=generator)[: round(self.area_ratio * rows * cols)]
        grid = torch.zeros(rows * cols)
        grid[chosen] = 1.0
        cells = grid.view(rows, cols).repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        return cells[:height, :width]


class SCADN(_MaskAugmentation):
    """SCADN-style (Yan et al., 2021) stripe erasing: horizontal or vertical stripes set to zero.

    Per image an orientation and a stripe width W from ``widths`` are drawn, then
    ``round(area_ratio · L / W)`` stripes (at least one) evenly spaced from a random offset, wrapping
    around the border, so about ``area_ratio`` of the image is erased at every scale.

    Args:
        area_ratio: fraction of the image erased. Defaults to ``0.20``.
        widths: stripe widths in pixels, one drawn per image. Defaults to ``(2, 4, 8, 16)``.

    """

    def __init__(self, area_ratio: float = 0.20, widths: tuple[int, ...] = (2, 4, 8, 16)) -> None:
        super().__init__(area_ratio)
        self.widths = _positive_sizes(widths, "widths")

    def draw_mask(self, height: int, width: int, generator: torch.Generator | None) -> torch.Tensor:
        """Evenly spaced stripes of a drawn width and orientation, wrapping around the border."""
        stripe = self.widths[_randint(len(self.widths) - 1, generator)]
        vertical = bool(_randint(1, generator))
        length = width if vertical else height
        stripe = min(stripe, length)
        count = max(1, round(self.area_ratio * length / stripe))
        offset = _randint(length - 1, generator)
        positions = torch.zeros(length, dtype=torch.bool)
        for k in range(count):  # exactly count·stripe lines
            start = offset + round(k * length / count)
            positions[(start + torch.arange(stripe)) % length] = True
        mask = torch.zeros(height, width)
        if vertical:
            mask[:, positions] = 1.0
        else:
            mask[positions, :] = 1.0
        return mask


AUGMENTATIONS = {cls.__name__: cls for cls in (MultiScaleSelfEnhancement, Cutout, CutoutColour, RIAD, SCADN)}


def build_augmentation(name: str, area_ratio: float, max_patch_ratio: float, **kwargs: object) -> nn.Module:
    """Build a training augmentation from a class name of this module or a dotted class path.

    ``area_ratio`` goes to every strategy (the Table 6 comparison holds the altered area fixed);
    ``max_patch_ratio`` only to M-SE. Any other constructor argument comes in ``kwargs``.
    """
    if name in AUGMENTATIONS:
        cls = AUGMENTATIONS[name]
    elif "." in name:
        from importlib import import_module  # noqa: PLC0415

        module_name, _, class_name = name.rpartition(".")
        try:
            cls = getattr(import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            msg = f"augmentation '{name}' cannot be imported ({error}); give a class path 'package.module.Class'."
            raise ValueError(msg) from error
    else:
        msg = f"Unknown augmentation '{name}'. Choose one of {', '.join(AUGMENTATIONS)} or a dotted class path."
        raise ValueError(msg)
    if cls is MultiScaleSelfEnhancement:
        kwargs = {"max_patch_ratio": max_patch_ratio, **kwargs}
    return cls(area_ratio=area_ratio, **kwargs)


# (seed, global step, rank) → one integer without collisions for any realistic run: primes larger than
# any step count per seed and any world size
_SEED_STRIDE = 1_000_003
_STEP_STRIDE = 4099


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """Return one training step's augmentation generator, seeded from (seed, step, rank), not the global RNG.

    A resumed run then repeats the uninterrupted one's augmentations, and DDP ranks augment differently.
    """
    return torch.Generator().manual_seed(((seed * _SEED_STRIDE + step) * _STEP_STRIDE + rank) % (2**63))
