"""The FEGAN model. ``fegan_anomalib.registration`` (run by the start-up hook) registers it with anomalib."""

from .fegan import Fegan, FeganModel, MultiScaleSelfEnhancement

__all__ = ["Fegan", "FeganModel", "MultiScaleSelfEnhancement"]
