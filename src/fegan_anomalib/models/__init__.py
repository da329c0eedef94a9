"""Models of fegan-anomalib."""

from .fegan import Fegan, FeganModel, MultiScaleSelfEnhancement

__all__ = ["Fegan", "FeganModel", "MultiScaleSelfEnhancement"]
