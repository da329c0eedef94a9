"""What FEGAN reports and draws: its evaluator (the paper's figures plus AUPRO and F1) and its visualizer.

Shared with the benchmark peers (``BenchPadim``/``BenchDraem`` take the same evaluator), so every
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


def fegan_visualizer() -> ImageVisualizer:
    """Draw the paper's four panels (Figs. 6-8): image, ground truth, heat map, segmentation.

    The heat map is min-max normalised per image (Eq. 9, **[A8]**: for display only); the
    segmentation fills the predicted region and draws the true boundary.
    """
    return ImageVisualizer(
        fields=["image", "gt_mask"],
        overlay_fields=[("image", ["anomaly_map"]), ("image", ["pred_mask", "gt_mask"])],
        overlay_fields_config={
            "anomaly_map": {"colormap": True, "normalize": True},
            "pred_mask": {"mode": "fill", "color": (255, 0, 0), "alpha": 0.45},
            "gt_mask": {"mode": "contour", "color": (0, 255, 0), "alpha": 1.0},
        },
    )
