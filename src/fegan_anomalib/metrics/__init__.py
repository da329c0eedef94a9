"""Metrics anomalib lacks: the IoU of FEGAN's Table 3, two ways."""

from .iou import BestIoU, ThresholdIoU

__all__ = ["BestIoU", "ThresholdIoU"]
