"""IoU metrics for anomaly segmentation, as anomalib metrics.

anomalib ships AUROC, AUPRO, F1 and PIMO but no IoU. FEGAN's paper (Table 3) reports IoU with
the protocol of DFC (Shi et al.): sweep thresholds over the anomaly maps and report the best mean
IoU of the anomalous images. That threshold is chosen with the ground truth, so it is an oracle;
``ThresholdIoU`` gives the deployable figure at the threshold anomalib's PostProcessor picked on
validation.

Both metrics keep only running sums (memory independent of the number of images) and reduce them
with ``sum`` across DDP processes. Anomalous images are those whose ground-truth mask has at least
one positive pixel; images without a defect region are not part of either mean.
"""

from __future__ import annotations

import torch
from anomalib.metrics import AnomalibMetric
from torchmetrics import Metric


def _flatten(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, [1,] H, W) maps and masks → (B, H·W), keeping only images with a defect region."""
    preds = preds.reshape(preds.shape[0], -1)
    target = target.reshape(target.shape[0], -1).bool()
    if preds.shape != target.shape:
        msg = f"anomaly map {tuple(preds.shape)} and mask {tuple(target.shape)} hold different pixel counts."
        raise ValueError(msg)
    anomalous = target.any(dim=1)
    return preds[anomalous], target[anomalous]


class _BestIoU(Metric):
    """Best mean IoU over ``num_thresholds`` thresholds evenly spaced over ``value_range`` (DFC protocol).

    DFC spans the thresholds between the global min and max of the maps. anomalib's PostProcessor
    normalises test maps and clamps them to [0, 1], so the default grid over [0, 1] is that protocol
    on anomalib's maps; keeping the grid fixed is what lets the metric stream with bounded memory.
    For raw maps, pass their ``value_range``. Values outside the range act as its ends.

    ``compute()`` returns the best mean IoU; ``best_threshold`` holds the threshold that gave it.
    It is an oracle: the threshold is chosen with the test masks.

    Args:
        num_thresholds: thresholds in the sweep. Defaults to ``5000``.
        value_range: (low, high) of the sweep. Defaults to ``(0.0, 1.0)``.

    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_thresholds: int = 5000, value_range: tuple[float, float] = (0.0, 1.0), **kwargs) -> None:
        super().__init__(**kwargs)
        if num_thresholds < 2 or value_range[1] <= value_range[0]:
            msg = f"need num_thresholds >= 2 and low < high, got {num_thresholds} and {value_range}."
            raise ValueError(msg)
        self.register_buffer("thresholds", torch.linspace(value_range[0], value_range[1], num_thresholds))
        self.add_state("iou_sum", default=torch.zeros(num_thresholds, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.best_threshold: torch.Tensor | None = None

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add the per-threshold IoU of each anomalous image to the running sum."""
        preds, target = _flatten(preds, target)
        thresholds = self.thresholds.to(preds.device)
        for values, mask in zip(preds, target, strict=True):
            # pixels >= t, counted through a histogram of bucket indices: O(H·W + T), not O(H·W·T)
            buckets = torch.bucketize(values.float(), thresholds, right=True)  # #thresholds <= value
            counts = torch.bincount(buckets, minlength=len(thresholds) + 1).flip(0).cumsum(0).flip(0)[1:]
            true_counts = torch.bincount(buckets[mask], minlength=len(thresholds) + 1).flip(0).cumsum(0).flip(0)[1:]
            union = mask.sum() + counts - true_counts
            self.iou_sum += (true_counts.double() / union.double()).to(self.iou_sum.device)
            self.num_images += 1

    def compute(self) -> torch.Tensor:
        """Best mean IoU over the sweep (0 when no anomalous image was seen)."""
        if self.num_images == 0:
            self.best_threshold = None
            return torch.tensor(0.0)
        mean_iou = self.iou_sum / self.num_images
        best = int(torch.argmax(mean_iou))
        self.best_threshold = self.thresholds[best]
        return mean_iou[best].float()


class _ThresholdIoU(Metric):
    """Mean IoU of predicted masks (``pred_mask``, the PostProcessor's threshold) over anomalous images."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("iou_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add the IoU of each anomalous image."""
        preds, target = _flatten(preds, target)
        preds = preds.bool()
        intersection = (preds & target).sum(dim=1).double()
        union = (preds | target).sum(dim=1).double()
        self.iou_sum += (intersection / union).sum()
        self.num_images += len(target)

    def compute(self) -> torch.Tensor:
        """Mean IoU over anomalous images (0 when none was seen)."""
        if self.num_images == 0:
            return torch.tensor(0.0)
        return (self.iou_sum / self.num_images).float()


class BestIoU(AnomalibMetric, _BestIoU):  # type: ignore[misc]
    """Oracle-threshold IoU (DFC protocol, FEGAN's Table 3) on ``anomaly_map`` vs ``gt_mask``.

    Example:
        >>> metric = BestIoU(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False)

    """

    default_fields = ("anomaly_map", "gt_mask")


class ThresholdIoU(AnomalibMetric, _ThresholdIoU):  # type: ignore[misc]
    """Deployable IoU on ``pred_mask`` vs ``gt_mask``.

    Example:
        >>> metric = ThresholdIoU(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False)

    """

    default_fields = ("pred_mask", "gt_mask")
