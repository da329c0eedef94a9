"""Models of fegan-anomalib: FEGAN, and PaDiM/DRAEM set up to run beside it in a benchmark grid."""

from .fegan import Fegan, FeganModel, MultiScaleSelfEnhancement
from .peers import BenchDraem, BenchPadim

__all__ = ["BenchDraem", "BenchPadim", "Fegan", "FeganModel", "MultiScaleSelfEnhancement"]
