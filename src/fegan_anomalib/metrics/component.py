"""AUROC of FEGAN's two score components on their own, for the learning curves.

anomalib's metrics read the fields of a batch (``pred_score``, ``anomaly_map``), and FEGAN's
batch carries only the fused map S and one image score (read from F by default, from S with
``image_score_from: anomaly_map`` [A8c]). Whether the feature branch (F) or the reconstruction branch
(R) carries the signal, and which one the fusion should weigh, is the first question when a
curve stalls, so validation also keeps each component's image maxima and a strided subsample of
its pixels and reports their AUROC (``val_F_image_AUROC``, ``val_R_pixel_AUROC``, ...).

The AUROC is the Mann-Whitney rank statistic on the raw values: torchmetrics' binary AUROC
passes values outside [0, 1] through a sigmoid, which ties every large feature distance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def rank_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC of ``scores`` for binary ``labels`` (ties count one half); NaN without both classes."""
    scores = scores.flatten().double()
    labels = labels.flatten().bool()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(sorted_scores)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average_rank = ends - (counts.double() - 1) / 2  # 1-based mean rank of each run of ties
    ranks[order] = average_rank[inverse]
    rank_sum = ranks[labels].sum().item()
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def map_aurocs(
    maps: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, pixel_stride: int = 2
) -> tuple[float, float]:
    """Image AUROC of the (N, H, W) maps' maxima and pixel AUROC over every ``pixel_stride``-th row and column.

    The benchmarks score whole test sets held in memory; the stride keeps the pixel ranking cheap.
    """
    step = pixel_stride
    return rank_auroc(maps.flatten(1).amax(1), labels), rank_auroc(maps[:, ::step, ::step], masks[:, ::step, ::step])


class ComponentAUROC:
    """Accumulate F and R over a validation epoch; ``compute`` returns their image and pixel AUROCs.

    Args:
        pixel_stride: keep every ``pixel_stride``-th row and column of each map (memory stays
            bounded: 1/16 of the pixels at the default ``4``).
        image_score: (B, H, W) map → (B,) image score, the model's own (FEGAN passes its top-share mean, so
            ``val_F_image_AUROC`` ranks images as the fused score does); the map's maximum without one.

    """

    def __init__(
        self, pixel_stride: int = 4, image_score: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        self.pixel_stride = pixel_stride
        self.image_score = image_score or (lambda maps: torch.amax(maps, dim=(-2, -1)))
        self.reset()

    def reset(self) -> None:
        """Forget the epoch's values."""
        self._values: dict[str, list[torch.Tensor]] = {}

    def _append(self, key: str, value: torch.Tensor) -> None:
        self._values.setdefault(key, []).append(value.detach().float().cpu())

    def update(
        self,
        residual: torch.Tensor,
        feature: torch.Tensor | None,
        gt_label: torch.Tensor | None,
        gt_mask: torch.Tensor | None,
    ) -> None:
        """Add one batch of (B, H, W) component maps with their labels and masks (either may be absent)."""
        step = self.pixel_stride
        for name, component in (("R", residual), ("F", feature)):
            if component is None:
                continue
            if gt_label is not None:
                self._append(f"{name}_image_score", self.image_score(component))
            if gt_mask is not None:
                self._append(f"{name}_pixels", component[..., ::step, ::step])
        if gt_label is not None:
            self._append("image_label", gt_label)
        if gt_mask is not None:
            self._append("pixel_label", gt_mask.reshape(residual.shape)[..., ::step, ::step])

    def compute(self) -> dict[str, float]:
        """``{"val_F_image_AUROC": ..., "val_R_pixel_AUROC": ...}`` for what was seen; NaN-free."""
        values = {key: torch.cat(parts) for key, parts in self._values.items()}
        results = {}
        for name in ("F", "R"):
            for level, label_key, score_key in (
                ("image", "image_label", f"{name}_image_score"),
                ("pixel", "pixel_label", f"{name}_pixels"),
            ):
                if label_key in values and score_key in values:
                    auroc = rank_auroc(values[score_key], values[label_key])
                    if not math.isnan(auroc):  # both classes present
                        results[f"val_{name}_{level}_AUROC"] = auroc
        return results
