"""The FEGAN model, registered with anomalib on import (see ``registration``)."""

from .fegan import Fegan, FeganModel, MultiScaleSelfEnhancement
from .registration import register_with_anomalib

register_with_anomalib()

__all__ = ["Fegan", "FeganModel", "MultiScaleSelfEnhancement"]
