"""FEGAN's scoring step: feature and reconstruction distances fused into one anomaly map.

Eq. 6-8 of the paper: ``F_ij = ‖θ*(x) − θ(x)‖₂`` over the tap's channels, bilinearly upsampled to
the input; ``R_ij = ‖x − G(x)‖₂`` over RGB in [-1, 1]; ``S = λ·F + (1 − λ)·R``.

**[A7]** F is in feature units and R at most 2√3, so the printed λ barely weighs R. With
``component_norm="train_stats"`` each map is standardised by its mean and standard deviation on
normal training images first; the statistics are buffers, so checkpoints and exported graphs
carry them. They start unset (NaN) and the Lightning module refuses to test, predict or export
until training has measured them, rather than scoring with a silent identity. ``"none"`` is the
literal paper.

Everything else here is derived from the scoring options (λ, σ), not learnt: the blur kernel is
a non-persistent buffer, so ``--model.sigma`` and ``--model.feature_map_weight`` can be changed on a
trained checkpoint.
"""

from __future__ import annotations

import logging

import torch
from anomalib.models.components import GaussianBlur2d
from torch import nn
from torch.nn import functional as F  # noqa: N812

logger = logging.getLogger(__name__)

COMPONENT_NORMS = ("none", "train_stats")


class AnomalyMapGenerator(nn.Module):
    """Fuse FEGAN's feature map F and reconstruction map R into the anomaly map S.

    Args:
        feature_map_weight: λ of Eq. 8, the weight of F. Defaults to ``0.6``.
        component_norm: ``"none"`` or ``"train_stats"``. Defaults to ``"none"``.
        sigma: standard deviation of an optional Gaussian smoothing; ``0`` (default, the paper's) is none.

    Example:
        >>> generator = AnomalyMapGenerator(feature_map_weight=1.0)
        >>> image = torch.zeros(1, 3, 32, 32)
        >>> generator(image, image, torch.ones(1, 8, 2, 2), torch.zeros(1, 8, 2, 2)).shape
        torch.Size([1, 32, 32])

    """

    def __init__(self, feature_map_weight: float = 0.6, component_norm: str = "none", sigma: float = 0.0) -> None:
        super().__init__()
        if component_norm not in COMPONENT_NORMS:
            msg = f"component_norm must be one of {COMPONENT_NORMS}, got '{component_norm}'."
            raise ValueError(msg)
        if not 0.0 <= feature_map_weight <= 1.0:
            msg = f"feature_map_weight must lie in [0, 1], got {feature_map_weight}."
            raise ValueError(msg)
        self.feature_map_weight = feature_map_weight
        self.component_norm = component_norm
        self.blur = GaussianBlur2d(sigma=sigma, channels=1) if sigma > 0 else None
        if self.blur is not None:  # derived from sigma, not learnt: neither saved nor expected in checkpoints
            for name in list(self.blur._buffers):
                self.blur._non_persistent_buffers_set.add(name)
        self.register_buffer("feature_stats", torch.full((2,), float("nan")))
        self.register_buffer("residual_stats", torch.full((2,), float("nan")))

    @property
    def needs_train_stats(self) -> bool:
        """True while ``component_norm="train_stats"`` and the statistics have not been measured."""
        if self.component_norm != "train_stats":
            return False
        return bool(torch.isnan(self.residual_stats).any())

    @staticmethod
    def components(
        images: torch.Tensor,
        reconstruction: torch.Tensor,
        fen_features: torch.Tensor | None,
        encoder_features: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return R (B, H, W) and, when the FEN is used, F (B, H, W) upsampled to the input size.

        ``align_corners=False`` as in anomalib's own models: each tap cell covers its stride-sized
        patch, without the up-to-half-cell shift of ``True`` towards the borders. The distances are taken
        in float32 even under bf16/fp16 autocast: half-precision maps would tie many pixels in AUROC.
        """
        residual = torch.linalg.vector_norm(images.float() - reconstruction.float(), dim=1)
        if fen_features is None:
            return residual, None
        feature = torch.linalg.vector_norm(fen_features.float() - encoder_features.float(), dim=1, keepdim=True)
        feature = F.interpolate(feature, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return residual, feature.squeeze(1)

    def set_train_stats(self, residual: tuple[float, float], feature: tuple[float, float] | None) -> None:
        """Store (mean, std) of R and F measured on normal training images."""
        self.residual_stats.copy_(torch.tensor(residual))
        if feature is not None:
            self.feature_stats.copy_(torch.tensor(feature))

    @staticmethod
    def moments(residual: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor:
        """(sum R, sum R², sum F, sum F², pixels) of one batch in float64: summed over batches and DDP ranks."""
        values = [residual.double().sum(), residual.double().square().sum()]
        values += [feature.double().sum(), feature.double().square().sum()] if feature is not None else [0.0, 0.0]
        return torch.tensor([*[float(v) for v in values], residual.numel()], dtype=torch.float64)

    def set_train_stats_from_moments(self, moments: torch.Tensor, use_fen: bool) -> None:
        """Store the pixel mean and std of R and F from summed :meth:`moments`."""
        sums, count = moments[:4].view(2, 2), moments[4].item()
        mean = sums[:, 0] / count
        std = (sums[:, 1] / count - mean.square()).clamp_min(1e-12).sqrt()
        feature = (mean[1].item(), std[1].item()) if use_fen else None
        self.set_train_stats((mean[0].item(), std[0].item()), feature)
        logger.info("FEGAN train_stats: R mean/std %.4g/%.4g, F %s", mean[0], std[0], feature)

    def fuse(self, residual: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor:
        """Eq. 8 on the (optionally standardised) components, then the optional blur."""
        if self.component_norm == "train_stats":
            residual = (residual - self.residual_stats[0]) / self.residual_stats[1]
        if feature is None:
            anomaly_map = residual
        else:
            if self.component_norm == "train_stats":
                feature = (feature - self.feature_stats[0]) / self.feature_stats[1]
            anomaly_map = self.feature_map_weight * feature + (1.0 - self.feature_map_weight) * residual
        if self.blur is not None:
            anomaly_map = self.blur(anomaly_map.unsqueeze(1)).squeeze(1)
        return anomaly_map

    def forward(
        self,
        images: torch.Tensor,
        reconstruction: torch.Tensor,
        fen_features: torch.Tensor | None,
        encoder_features: torch.Tensor,
    ) -> torch.Tensor:
        """Return the anomaly map S (B, H, W); ``images`` and ``reconstruction`` are in [-1, 1]."""
        return self.fuse(*self.components(images, reconstruction, fen_features, encoder_features))
