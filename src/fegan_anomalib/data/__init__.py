"""Data for fegan-anomalib: the offline synthetic data set and the Bottle-Cap datamodule.

``BottleCap`` imports anomalib, so it loads on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .synthetic import make_synthetic_dataset

if TYPE_CHECKING:
    from .bottle_cap import BottleCap

__all__ = ["BottleCap", "make_synthetic_dataset"]


def __getattr__(name: str) -> object:
    if name == "BottleCap":
        return import_module(".bottle_cap", __name__).BottleCap
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
