"""IoU metrics against answers computed by hand."""

from __future__ import annotations

import pytest
import torch
from anomalib.data import ImageBatch

from fegan_anomalib.metrics import BestIoU
from fegan_anomalib.metrics.iou import _BestIoU, _ThresholdIoU


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    # image 0: values 0.1..0.9 on a 3x3 grid, defect = the three largest values
    first = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
    first_mask = first > 0.65
    # image 1: defect is the top-left pixel, which scores 0.6; one normal pixel scores 0.9
    second = torch.full((3, 3), 0.2)
    second[0, 0], second[2, 2] = 0.6, 0.9
    second_mask = torch.zeros(3, 3, dtype=torch.bool)
    second_mask[0, 0] = True
    # image 2: normal (empty mask) - must not count
    third = torch.rand(3, 3)
    return torch.stack([first, second, third]), torch.stack([first_mask, second_mask, torch.zeros(3, 3, dtype=bool)])


def _iou(pred: torch.Tensor, mask: torch.Tensor) -> float:
    return float((pred & mask).sum() / (pred | mask).sum())


def test_best_iou_matches_a_brute_force_sweep() -> None:
    maps, masks = _maps()
    metric = _BestIoU(num_thresholds=11)  # thresholds 0.0, 0.1, ..., 1.0
    metric.update(maps[:2], masks[:2])
    metric.update(maps[2:], masks[2:])
    expected = max((_iou(maps[0] >= t, masks[0]) + _iou(maps[1] >= t, masks[1])) / 2 for t in torch.linspace(0, 1, 11))
    # by hand: at t=0.7 image 0 is exact (1.0) and image 1 predicts only (2,2): IoU 0 -> 0.5;
    # at t=0.6 image 0 gets 4 px for 3 true (0.75), image 1 gets {(0,0),(2,2)} for 1 (0.5) -> 0.625
    assert expected == pytest.approx(0.625)
    assert float(metric.compute()) == pytest.approx(expected)
    assert float(metric.best_threshold) == pytest.approx(0.6)


def test_threshold_iou_uses_pred_mask_over_anomalous_images_only() -> None:
    maps, masks = _maps()
    metric = _ThresholdIoU()
    metric.update(maps > 0.55, masks)
    assert float(metric.compute()) == pytest.approx((_iou(maps[0] > 0.55, masks[0]) + 0.5) / 2)  # 0.75, 0.5


def test_metrics_work_in_anomalib_fields_and_handle_no_anomalies() -> None:
    maps, masks = _maps()
    batch = ImageBatch(
        image=torch.rand(3, 3, 3, 3),
        anomaly_map=maps,
        gt_mask=masks,
        pred_mask=maps > 0.55,
        gt_label=torch.tensor([1, 1, 0]),
    )
    best = BestIoU(fields=["anomaly_map", "gt_mask"], prefix="pixel_", num_thresholds=11)
    best.update(batch)
    assert best.name == "pixel_BestIoU"
    assert float(best.compute()) == pytest.approx(0.625)
    empty = _ThresholdIoU()
    empty.update(maps[2:], masks[2:])
    assert float(empty.compute()) == 0.0
    with pytest.raises(ValueError, match="different pixel counts"):
        _ThresholdIoU().update(torch.rand(1, 4, 4), torch.ones(1, 3, 3))


def test_best_iou_state_is_bounded_and_sums_across_processes() -> None:
    metric = _BestIoU()
    for _ in range(4):
        metric.update(torch.rand(8, 64, 64), torch.rand(8, 64, 64) > 0.9)
    assert metric.iou_sum.shape == (5000,)  # memory does not grow with the images seen
    assert metric._reductions["iou_sum"].__name__ == "dim_zero_sum"
    # two halves merged (what DDP's sum reduction does) equal one pass
    maps, masks = torch.rand(6, 16, 16), torch.rand(6, 16, 16) > 0.8
    whole, first, second = _BestIoU(), _BestIoU(), _BestIoU()
    whole.update(maps, masks)
    first.update(maps[:3], masks[:3])
    second.update(maps[3:], masks[3:])
    first.iou_sum += second.iou_sum
    first.num_images += second.num_images
    assert float(first.compute()) == pytest.approx(float(whole.compute()))
