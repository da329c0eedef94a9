"""Helpers shared by M-SE and the Table 6 comparators: turn CPU draws into integers and move them to the device.

Every augmenter draws on the step's CPU generator (so a seed gives the same draws on CPU and GPU); these two
keep that cheap: integers from uniforms without a second draw, and one asynchronous copy to the device.
"""

from __future__ import annotations

import torch


def _integers(uniform: torch.Tensor, high: torch.Tensor | int) -> torch.Tensor:
    """Uniform integers in [0, high] from uniforms in [0, 1) (elementwise ``high``)."""
    high = torch.as_tensor(high, dtype=torch.long)
    return (uniform * (high + 1)).floor().long().clamp(min=0).minimum(high)


def _to(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Move small CPU draws to ``device`` in one copy, pinned and asynchronous on CUDA (no host wait)."""
    if device.type == "cpu":
        return tensors
    packed = torch.cat([t.double().flatten() for t in tensors])
    packed = packed.pin_memory() if device.type == "cuda" else packed
    moved = packed.to(device, non_blocking=True).split([t.numel() for t in tensors])
    return tuple(m.view(t.shape).to(t.dtype) for m, t in zip(moved, tensors, strict=True))
