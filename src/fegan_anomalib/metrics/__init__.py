"""Metrics anomalib lacks: the IoU of FEGAN's Table 3, two ways, and the AUROC of each score component."""

from .component import ComponentAUROC, map_aurocs, rank_auroc
from .iou import BestIoU, ThresholdIoU

__all__ = ["BestIoU", "ComponentAUROC", "ThresholdIoU", "map_aurocs", "rank_auroc"]
