"""Training augmentations: M-SE **[A9]** (``m_se``), the Table 6 comparators (``baselines``), the name registry.

Re-exports every public name, so ``fegan_anomalib.models.fegan.augmentation.X`` (imports and dotted class paths
in configs) keeps resolving as when this was one module.
"""

from .baselines import RIAD, SCADN, Cutout, CutoutColour
from .m_se import GRAY_WEIGHTS, MultiScaleSelfEnhancement, PatchDraws, grayscale, shift_hue
from .registry import AUGMENTATIONS, build_augmentation, step_generator

__all__ = [
    "AUGMENTATIONS",
    "GRAY_WEIGHTS",
    "RIAD",
    "SCADN",
    "Cutout",
    "CutoutColour",
    "MultiScaleSelfEnhancement",
    "PatchDraws",
    "build_augmentation",
    "grayscale",
    "shift_hue",
    "step_generator",
]
