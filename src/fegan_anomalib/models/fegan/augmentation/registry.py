"""Augmenters by name (``Fegan(augmenter=...)``) and the per-step generator that seeds them."""

from __future__ import annotations

import torch
from torch import nn

from .baselines import RIAD, SCADN, Cutout, CutoutColour
from .m_se import MultiScaleSelfEnhancement

AUGMENTATIONS = {cls.__name__: cls for cls in (MultiScaleSelfEnhancement, Cutout, CutoutColour, RIAD, SCADN)}


def build_augmentation(name: str, area_ratio: float, max_patch_ratio: float, **kwargs: object) -> nn.Module:
    """Build a training augmentation from a class name of this package or a dotted class path.

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
