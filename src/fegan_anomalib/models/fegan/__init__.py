"""FEGAN model folder, laid out like anomalib's own models."""

from .augmentation import MultiScaleSelfEnhancement
from .lightning_model import Fegan
from .torch_model import FeganModel

__all__ = ["Fegan", "FeganModel", "MultiScaleSelfEnhancement"]
