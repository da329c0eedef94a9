"""fegan-anomalib: FEGAN (Fan, Zhang, Dai, IEEE Access 2024) as an anomalib model.

The public names load lazily so that ``import fegan_anomalib`` (done by anomalib's CLI through
the registration hook) costs nothing until a model is actually used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Fegan, FeganModel, MultiScaleSelfEnhancement

__version__ = "0.3.0.dev0"
__all__ = ["Fegan", "FeganModel", "MultiScaleSelfEnhancement"]


def __getattr__(name: str) -> object:
    if name in __all__:
        return getattr(import_module(".models", __name__), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
