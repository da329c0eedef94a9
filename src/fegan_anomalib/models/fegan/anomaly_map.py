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
a non-persistent buffer, so ``--model.sigma`` and ``--model.score_lambda`` can be changed on a
trained checkpoint.
"""

from __future__ import annotations

import torch
from anomalib.models.components import GaussianBlur2d
from torch import nn
from torch.nn import functional as F  # noqa: N812

COMPONENT_NORMS = ("none", "train_stats")


class AnomalyMapGenerator(nn.Module):
    """Fuse FEGAN's feature map F and reconstruction map R into the anomaly map S.

    Args:
        score_lambda: λ of Eq. 8, the weight of F. Defaults to ``0.6``.
        component_norm: ``"none"`` or ``"train_stats"``. Defaults to ``"none"``.
        sigma: standard deviation of an optional Gaussian smoothing; ``0`` (default, the paper's) is none.

    Example:
        >>> generator = AnomalyMapGenerator(score_lambda=1.0)
        >>> image = torch.zeros(1, 3, 32, 32)
        >>> generator(image, image, torch.ones(1, 8, 2, 2), torch.zeros(1, 8, 2, 2)).shape
        torch.Size([1, 32, 32])

    """

    def __init__(self, score_lambda: float = 0.6, component_norm: str = "none", sigma: float = 0.0) -> None:
        super().__init__()
        if component_norm not in COMPONENT_NORMS:
            msg = f"component_norm must be one of {COMPONENT_NORMS}, got '{component_norm}'."
            raise ValueError(msg)
        if not 0.0 <= score_lambda <= 1.0:
            msg = f"score_lambda must lie in [0, 1], got {score_lambda}."
            raise ValueError(msg)
        self.score_lambda = score_lambda
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

    def fuse(self, residual: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor:
        """Eq. 8 on the (optionally standardised) components, then the optional blur."""
        if self.component_norm == "train_stats":
            residual = (residual - self.residual_stats[0]) / self.residual_stats[1]
        if feature is None:
            anomaly_map = residual
        else:
            if self.component_norm == "train_stats":
                feature = (feature - self.feature_stats[0]) / self.feature_stats[1]
            anomaly_map = self.score_lambda * feature + (1.0 - self.score_lambda) * residual
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
