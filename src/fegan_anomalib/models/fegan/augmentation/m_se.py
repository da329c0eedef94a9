"""M-SE, FEGAN's Multi-scale Self-Enhancement augmentation **[A9]** (Table 6's comparators: ``baselines``).

During training FEGAN pastes colour-jittered patches cut from the image itself onto the image,
so the generator must map a locally "defective" input back to the clean image and its clean
features. Patches are cut from the original image (not from the already-pasted copy), their
total area is ``area_ratio`` of the image, each at most ``max_patch_ratio``, with log-uniform
aspect ratios; overlaps are allowed, a later patch covering an earlier one. Like DRAEM's augmenter,
it runs inside ``training_step`` on the already-resized batch, and it is never part of the inference graph.

Batched, not looped: every patch of every image is drawn at once (one ``torch.rand`` on the step's CPU
generator), then cut, jittered and pasted with a fixed number of tensor operations, whatever the batch
size and the patch count. A per-image, per-patch loop cost ~22,000 kernel launches per step at batch 16 on a
GPU, 88 % of the step (BENCHMARKS.md, "Training speed"). The draws stay on the CPU generator, so a seed
gives the same patches on CPU and GPU, and a resumed run repeats them (``step_generator``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .draws import _integers, _to

# ITU-R 601 luma, as torchvision's rgb_to_grayscale (contrast and saturation blend towards it)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


class PatchDraws(NamedTuple):
    """Every patch of one batch, each field (B, n): size, source and destination corners, jitter factors."""

    height: torch.Tensor
    width: torch.Tensor
    src_y: torch.Tensor
    src_x: torch.Tensor
    dst_y: torch.Tensor
    dst_x: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(..., C) → (..., 1) luma of channel-last pixels; a 1-channel image is its own."""
    if images.shape[-1] == 1:
        return images
    weights = images.new_tensor(GRAY_WEIGHTS)
    return (images * weights).sum(-1, keepdim=True)


def shift_hue(images: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Shift the hue of channel-last RGB pixels (..., 3) by ``hue`` (broadcast to (..., 1)), as torchvision does.

    torchvision's ``adjust_hue`` takes one factor per call; this is its RGB → HSV → RGB with a factor per
    patch (Pillow's hexcone model), equal to it to float rounding (tests/test_m_se.py).
    """
    maxc, _ = images.max(-1, keepdim=True)
    minc, _ = images.min(-1, keepdim=True)
    span = maxc - minc
    flat = span == 0
    saturation = span / torch.where(flat, torch.ones_like(maxc), maxc)
    rc, gc, bc = ((maxc - images) / torch.where(flat, torch.ones_like(span), span)).unbind(-1)
    r, g = images[..., 0], images[..., 1]
    is_r = maxc[..., 0] == r
    is_g = (maxc[..., 0] == g) & ~is_r
    is_b = ~is_r & ~is_g
    h = (bc - gc) * is_r + (2.0 + rc - bc) * is_g + (4.0 + gc - rc) * is_b
    h = ((h / 6.0 + 1.0).fmod(1.0) + hue[..., 0]).remainder(1.0)
    v, s = maxc[..., 0], saturation[..., 0]
    h6 = h * 6
    sector = h6.floor()
    f = h6 - sector
    sector = sector.long().remainder(6)
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s + s * f)).clamp(0, 1)
    vpqt = torch.stack((v, p, q, t), -1)
    select = images.new_tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]]).long()
    return vpqt.gather(-1, select[sector])


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
    so no patch ever exceeds ``max_patch_ratio``. The jitter applies brightness, contrast (towards the
    patch's mean luma), saturation, hue in that fixed order, each clamped to [0, 1] as torchvision's
    functional ops do (torchvision's ``ColorJitter`` shuffles the order from the global RNG, which would
    break seeding). Grey-scale images take brightness and contrast only.

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
        if not 0.0 <= hue <= 0.5:
            msg = f"hue must lie in [0, 0.5] (a shift of the hue circle), got {hue}."
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

    def patch_area(self, height: int, width: int) -> float:
        """Area of every patch before its sides are floored: ``area_ratio·H·W / n``."""
        return self.area_ratio * height * width / self.num_patches

    def box(self, height: int, width: int) -> tuple[int, int]:
        """Bound the patch height and width the draws can give: the fixed box every patch is cut into."""
        area = self.patch_area(height, width)
        # one pixel of margin on each side: exp(log(a)) may round past a, and the draws floor
        tallest = min(height, math.floor(math.sqrt(area * math.exp(self.log_aspect[1]))) + 1)
        flattest = max(1, math.floor(math.sqrt(area * math.exp(self.log_aspect[0]))) - 1)
        return max(1, tallest), min(width, math.floor(area / flattest) + 1)

    def sample_patches(
        self, batch: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> PatchDraws:
        """Draw every patch of a batch of (height, width) images at once, on the CPU."""
        uniform = torch.rand(batch, self.num_patches, 9, generator=generator, dtype=torch.float64)
        low, high = self.log_aspect
        aspect = torch.exp(low + (high - low) * uniform[..., 0])
        area = self.patch_area(height, width)
        patch_h = torch.sqrt(area * aspect).floor().long().clamp(1, height)
        patch_w = (area / patch_h).floor().long().clamp(1, width)

        def factor(column: int, spread: float) -> torch.Tensor:
            return (1 - spread + 2 * spread * uniform[..., column]).float()

        return PatchDraws(
            height=patch_h,
            width=patch_w,
            src_y=_integers(uniform[..., 1], height - patch_h),
            src_x=_integers(uniform[..., 2], width - patch_w),
            dst_y=_integers(uniform[..., 3], height - patch_h),
            dst_x=_integers(uniform[..., 4], width - patch_w),
            brightness=factor(5, self.brightness),
            contrast=factor(6, self.contrast),
            saturation=factor(7, self.saturation),
            hue=(self.hue * (2 * uniform[..., 8] - 1)).float(),
        )

    def jitter(self, patches: torch.Tensor, valid: torch.Tensor, draws: PatchDraws) -> torch.Tensor:
        """Colour-jitter channel-last patches (B, n, h, w, C); ``valid`` (B, n, h, w, 1) marks each patch's pixels.

        Contrast blends towards the mean luma of the patch's own pixels, as ``adjust_contrast`` on the cut patch.
        """
        brightness, contrast, saturation, hue = (
            value.to(patches.dtype)[..., None, None, None]
            for value in (draws.brightness, draws.contrast, draws.saturation, draws.hue)
        )
        patches = (patches * brightness).clamp(0, 1)
        mean = (grayscale(patches) * valid).sum((2, 3, 4), keepdim=True) / valid.sum((2, 3, 4), keepdim=True)
        patches = (contrast * patches + (1 - contrast) * mean).clamp(0, 1)
        if patches.shape[-1] == 3:
            patches = (saturation * patches + (1 - saturation) * grayscale(patches)).clamp(0, 1)
            patches = shift_hue(patches, hue)
        return patches.clamp(0, 1)

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the augmented batch and the mask of pasted pixels."""
        batch, channels, height, width = images.shape
        draws = PatchDraws(*_to(images.device, *self.sample_patches(batch, height, width, generator)))
        box_h, box_w = self.box(height, width)
        rows = torch.arange(box_h, device=images.device)
        cols = torch.arange(box_w, device=images.device)
        inside = (rows < draws.height[..., None])[..., :, None] & (cols < draws.width[..., None])[..., None, :]
        # cut: (B, n, box_h, box_w, C) from the original image, rows and columns clamped inside the frame
        index = torch.arange(batch, device=images.device)[:, None, None, None]
        src_rows = (draws.src_y[..., None] + rows).clamp(max=height - 1)[..., :, None]
        src_cols = (draws.src_x[..., None] + cols).clamp(max=width - 1)[..., None, :]
        patches = images.permute(0, 2, 3, 1)[index, src_rows, src_cols]
        patches = self.jitter(patches, inside[..., None].to(images.dtype), draws)
        # paste: each pixel takes the last patch that covers it (patch k+1 over patch k), found by a max-scatter
        dst_rows = (draws.dst_y[..., None] + rows).clamp(max=height - 1)[..., :, None]
        dst_cols = (draws.dst_x[..., None] + cols).clamp(max=width - 1)[..., None, :]
        order = torch.arange(1, draws.height.shape[1] + 1, device=images.device)[None, :, None, None] * inside
        winner = torch.zeros(batch, height * width, dtype=torch.long, device=images.device)
        winner.scatter_reduce_(1, (dst_rows * width + dst_cols).flatten(1), order.flatten(1), reduce="amax")
        covered = winner > 0
        last = (winner - 1).clamp(min=0)
        pixel = torch.arange(height * width, device=images.device)
        offset_y = pixel // width - draws.dst_y.gather(1, last)
        offset_x = pixel % width - draws.dst_x.gather(1, last)
        source = (last * box_h + offset_y.clamp(0, box_h - 1)) * box_w + offset_x.clamp(0, box_w - 1)
        pasted = patches.reshape(batch, -1, channels).gather(1, source[..., None].expand(-1, -1, channels))
        pasted = pasted.permute(0, 2, 1).reshape(batch, channels, height, width)
        mask = covered.view(batch, 1, height, width)
        return torch.where(mask, pasted, images), mask.to(images.dtype)
