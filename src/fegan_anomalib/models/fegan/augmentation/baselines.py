"""The Table 6 comparators of M-SE: Cutout, Cutout-colour, RIAD-style grid and SCADN-style stripe erasing.

Each has M-SE's interface: ``(images, generator) -> (augmented, mask)``,
the same ``area_ratio`` budget (fraction of the image altered) and seeded draws, batched like M-SE (the
draws on the CPU generator, the masks built by broadcasting on the images' device). anomalib has
DRAEM's Perlin augmenter only; these are written here because FEGAN's Table 6 needs them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .draws import _integers, _to


class _MaskAugmentation(nn.Module):
    """Shared frame of the comparators: draw every image's mask at once, then fill the masked pixels.

    Subclasses draw the (B, 1, H, W) masks in ``draw_masks`` and may override ``fill_values`` (default: black).
    """

    def __init__(self, area_ratio: float) -> None:
        super().__init__()
        if not 0.0 < area_ratio <= 1.0:
            msg = f"area_ratio must lie in (0, 1], got {area_ratio}."
            raise ValueError(msg)
        self.area_ratio = area_ratio

    def draw_masks(
        self, batch: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """Return the batch's (B, 1, H, W) boolean masks on ``device``."""
        raise NotImplementedError

    def fill_values(self, batch: int, channels: int, generator: torch.Generator | None) -> torch.Tensor:
        """Return the (B, C) values the masked pixels take: black."""
        del generator
        return torch.zeros(batch, channels)

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the augmented batch and the mask of altered pixels."""
        batch, channels, height, width = images.shape
        mask = self.draw_masks(batch, height, width, generator, images.device)
        (fills,) = _to(images.device, self.fill_values(batch, channels, generator))
        return torch.where(mask, fills.to(images.dtype)[..., None, None], images), mask.to(images.dtype)


def _positive_sizes(sizes: tuple[int, ...], name: str) -> tuple[int, ...]:
    if not sizes or min(sizes) < 1:
        msg = f"{name} must be positive pixel sizes, got {sizes}."
        raise ValueError(msg)
    return tuple(sizes)


def _inside(start: torch.Tensor, length: int, size: int, device: torch.device) -> torch.Tensor:
    """(B, size) booleans: positions in [start, start + length) of each row of ``start`` (B,)."""
    positions = torch.arange(size, device=device)
    return (positions >= start[:, None]) & (positions < start[:, None] + length)


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

    def draw_masks(
        self, batch: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """One square (as near as the image allows) per image, at a uniform position."""
        side_h = min(height, max(1, math.floor(math.sqrt(self.area_ratio * height * width))))
        side_w = min(width, max(1, math.floor(self.area_ratio * height * width / side_h)))
        uniform = torch.rand(batch, 2, generator=generator, dtype=torch.float64)
        top, left = _to(device, _integers(uniform[:, 0], height - side_h), _integers(uniform[:, 1], width - side_w))
        rows, cols = _inside(top, side_h, height, device), _inside(left, side_w, width, device)
        return (rows[:, :, None] & cols[:, None, :])[:, None]

    def fill_values(self, batch: int, channels: int, generator: torch.Generator | None) -> torch.Tensor:
        """Black, or one uniform random colour per square."""
        if self.fill == "colour":
            return torch.rand(batch, channels, generator=generator)
        return super().fill_values(batch, channels, generator)


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

    def draw_masks(
        self, batch: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """Erase ``round(area_ratio · cells)`` cells of a grid of a drawn cell size, per image."""
        sizes = torch.tensor(self.cell_sizes)
        cell = sizes[_integers(torch.rand(batch, generator=generator, dtype=torch.float64), len(sizes) - 1)]
        cols = (width + cell - 1) // cell
        cells = ((height + cell - 1) // cell) * cols
        # a random rank for every cell of the finest grid; each image erases its lowest-ranked valid cells
        keys = torch.rand(batch, int(cells.max()), generator=generator, dtype=torch.float64)
        keys = keys.masked_fill(torch.arange(keys.shape[1]) >= cells[:, None], 2.0)
        rank = keys.argsort(1).argsort(1)
        chosen = rank < torch.round(self.area_ratio * cells)[:, None]
        chosen, cell, cols = _to(device, chosen, cell, cols)
        rows_index = torch.arange(height, device=device)[None, :, None] // cell[:, None, None]
        cols_index = torch.arange(width, device=device)[None, None, :] // cell[:, None, None]
        return chosen.gather(1, (rows_index * cols[:, None, None] + cols_index).flatten(1)).view(
            batch, 1, height, width
        )


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

    def draw_masks(
        self, batch: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """Evenly spaced stripes of a drawn width and orientation per image, wrapping around the border."""
        uniform = torch.rand(batch, 3, generator=generator, dtype=torch.float64)
        widths = torch.tensor(self.widths)
        vertical = _integers(uniform[:, 1], 1).bool()
        length = torch.where(vertical, width, height)
        stripe = widths[_integers(uniform[:, 0], len(widths) - 1)].minimum(length)
        count = torch.round(self.area_ratio * length / stripe).long().clamp(min=1)
        offset = _integers(uniform[:, 2], length - 1)
        # line position p is erased when (p - offset) mod L falls within a stripe's [start_k, start_k + width)
        positions = torch.arange(max(height, width))
        k = torch.arange(int(count.max()))
        start = torch.round(k * length[:, None].double() / count[:, None]).long()  # (B, K), as round(k·L/count)
        shifted = (positions - offset[:, None]).remainder(length[:, None])  # (B, P)
        within = (shifted[:, :, None] - start[:, None, :]).remainder(length[:, None, None]) < stripe[:, None, None]
        lines = (within & (k < count[:, None])[:, None, :]).any(-1)
        lines, vertical = _to(device, lines, vertical)
        by_column = lines[:, None, :width].expand(-1, height, -1)
        by_row = lines[:, :height, None].expand(-1, -1, width)
        return torch.where(vertical[:, None, None], by_column, by_row)[:, None]
