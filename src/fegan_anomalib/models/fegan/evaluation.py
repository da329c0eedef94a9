"""What FEGAN reports and draws: its evaluator (the paper's figures plus AUPRO and F1) and its visualizer.

Shared with the benchmark peers (``BenchPadim``, ``BenchPatchcore``, ``BenchDraem``), so every
model in a comparison is scored by the same metrics.
"""

from __future__ import annotations

from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Score
from anomalib.visualization import ImageVisualizer

from fegan_anomalib.metrics import BestIoU, ThresholdIoU


def fegan_evaluator() -> Evaluator:
    """Image/pixel AUROC, IoU two ways **[A10]**, AUPRO and F1 in test; image/pixel AUROC and AUPRO in validation.

    The validation metrics (``val_`` prefix) are logged every time validation runs, so any logger
    records the learning curve.
    """
    val_metrics = [
        AUROC(fields=["pred_score", "gt_label"], prefix="val_image_"),
        AUROC(fields=["anomaly_map", "gt_mask"], prefix="val_pixel_", strict=False),
        AUPRO(fields=["anomaly_map", "gt_mask"], prefix="val_pixel_", strict=False),
    ]
    test_metrics = [
        AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
        F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
        AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        F1Score(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
        BestIoU(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        ThresholdIoU(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
    ]
    return Evaluator(val_metrics=val_metrics, test_metrics=test_metrics)


HEAT_MAP_SCALES = ("dataset", "per_image")


class FeganVisualizer(ImageVisualizer):
    """Draw the paper's four panels (Figs. 6-8): image, ground truth, heat map, segmentation.

    The segmentation fills the predicted region and draws the true boundary. The per-image view:
    ``--model.visualizer fegan_anomalib.models.fegan.evaluation.FeganVisualizer``
    ``--model.visualizer.heat_map per_image``.

    Args:
        heat_map: ``"dataset"`` (default): the heat map on one scale for every image, the post-processed
            map anomalib normalises over the data set (its threshold at 0.5), so a normal part looks cool and
            a defective one hot; ``"per_image"``: min-max per image, Eq. 9 **[A8]** (every image then has a red
            spot, normal ones too: for the shape of a map, not for whether it is anomalous).

    """

    def __init__(self, heat_map: str = "dataset") -> None:
        if heat_map not in HEAT_MAP_SCALES:
            msg = f"heat_map must be one of {HEAT_MAP_SCALES}, got '{heat_map}'."
            raise ValueError(msg)
        self.heat_map = heat_map
        super().__init__(
            fields=["image", "gt_mask"],
            overlay_fields=[("image", ["anomaly_map"]), ("image", ["pred_mask", "gt_mask"])],
            overlay_fields_config={
                "anomaly_map": {"colormap": True, "normalize": heat_map == "per_image"},
                "pred_mask": {"mode": "fill", "color": (255, 0, 0), "alpha": 0.45},
                "gt_mask": {"mode": "contour", "color": (0, 255, 0), "alpha": 1.0},
            },
        )


def fegan_visualizer() -> FeganVisualizer:
    """FEGAN's default visualizer: the four panels, heat maps on the data set's scale."""
    return FeganVisualizer()
