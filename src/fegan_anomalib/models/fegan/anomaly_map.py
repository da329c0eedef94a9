"""FEGAN's scoring step: feature and reconstruction distances fused into one anomaly map.

Eq. 6-8 of the paper: ``F_ij = ‖θ*(x) − θ(x)‖₂`` over the tap's channels, bilinearly upsampled to
the input; ``R_ij = ‖x − G(x)‖₂`` over RGB in [-1, 1]; ``S = λ·F + (1 − λ)·R``.

**[A7]** F is in feature units and R at most 2√3, so the printed λ barely weighs R. With
``component_norm="train_stats"`` each map is standardised by its mean and standard deviation on
normal training images first; the statistics are buffers, so checkpoints and exported graphs
carry them. They start unset (NaN) and the Lightning module refuses to test, predict or export
until training has measured them, rather than scoring with a silent identity. ``"none"`` is the
literal paper.

**[A7b]** ``feature_distance="mahalanobis"`` (0.3.0.dev0's default, and half of the Lightning module's
``"mahalanobis+nearest"`` **[A7c]**; ``"l2"``, Eq. 6, is this component's and the paper's) measures F as the diagonal
Mahalanobis distance of the feature residual θ*(x) − θ(x) at each tap cell: each channel at each cell minus its mean
over normal training images, divided by ``sqrt(var + ridge·mean(var))`` there, then the L2 norm over channels. Why: on a
textured surface a few high-variance channels carry the normal texture and dominate the plain L2 norm; Eq. 6 weighs them
by energy, not by surprise. The ridge (``mahalanobis_ridge``, 0.3 in the module) keeps variances estimated from few
images from whitening noise. Measured at the block-4 tap, 128², stand-in VGG16-BN, three seeds: magnetic_tile image /
pixel AUROC 0.748 / 0.684 (L2) → 0.858 / 0.721, hazelnut_mini 1.000 / 0.980 → 1.000 / 0.965 (BENCHMARKS.md, "The 0.3
default"). Like ``train_stats``, the statistics are buffers measured during fit, NaN until then.

**[A8b]** The image score is the mean of the map's top 1 % of pixels (``image_score_top_ratio=0.01``), not
Eq. 10's maximum (``0``, kept): one pixel of a full-resolution map is its noisiest statistic. Measured on
the same checkpoints (128², stand-in VGG16-BN, three seeds): magnetic_tile image AUROC +0.04-0.05,
hazelnut_mini unchanged at 1.000, pixel figures unchanged (BENCHMARKS.md, "Image score").

Everything else here is derived from the scoring options (λ, σ, the image score's ratio), not learnt: the blur kernel is
a non-persistent buffer, so ``--model.sigma`` and ``--model.feature_map_weight`` can be changed on a
trained checkpoint.
"""

from __future__ import annotations

import logging

import torch
from anomalib.models.components import DynamicBufferMixin, GaussianBlur2d
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .memory import k_center_greedy, nearest_distance, neighbourhood

logger = logging.getLogger(__name__)

COMPONENT_NORMS = ("none", "train_stats")
FEATURE_DISTANCES = ("l2", "mahalanobis", "nearest", "mahalanobis+nearest")
# a channel whose residual never varied on the training images (e.g. a ReLU dead at that cell in both
# networks) is floored at this fraction of the mean variance instead of dividing by ~0
VARIANCE_FLOOR = 1e-3


class AnomalyMapGenerator(DynamicBufferMixin, nn.Module):
    """Fuse FEGAN's feature map F and reconstruction map R into the anomaly map S.

    Args:
        feature_map_weight: λ of Eq. 8, the weight of F. Defaults to ``0.6``.
        component_norm: ``"none"`` or ``"train_stats"``. Defaults to ``"none"``.
        sigma: standard deviation of an optional Gaussian smoothing; ``0`` (default, the paper's) is none.
        feature_distance: ``"l2"`` (Eq. 6, default), ``"mahalanobis"`` per tap cell **[A7b]**, ``"nearest"``: the
            distance of each cell's residual (averaged with its 3×3 neighbours) to the nearest such residual of
            any cell of the normal training images, a memory of at most ``memory_size`` of them **[A7c]**, or
            ``"mahalanobis+nearest"``: both, each standardised on the training cells, summed **[A7c]**.
        feature_shape: (channels, height, width) of the tap's features; needed by ``"mahalanobis"`` and ``"nearest"``.
        memory_size: with ``"nearest"``, the most training cells the memory keeps (a k-center coreset beyond it,
            ``memory.k_center_greedy``; ``measure_scoring_statistics`` fills it). Defaults to ``4096``.
        image_score_top_ratio: the image score is the mean of this share of the map's highest pixels
            (default ``0.01``, 1 %); ``0`` is their maximum, Eq. 10 as printed **[A8b]**.
        mahalanobis_ridge: with ``"mahalanobis"``, divide by ``sqrt(var + ridge·mean(var))`` instead of
            ``sqrt(var)``: a ridge from the per-cell whitening (``0``) towards the centred L2 distance, for
            per-cell variances estimated from few images **[A7b]**. Derived from the stored statistics at
            scoring time, so it can be changed on a trained checkpoint.

    Example:
        >>> generator = AnomalyMapGenerator(feature_map_weight=1.0)
        >>> image = torch.zeros(1, 3, 32, 32)
        >>> generator(image, image, torch.ones(1, 8, 2, 2), torch.zeros(1, 8, 2, 2)).shape
        torch.Size([1, 32, 32])

    """

    def __init__(
        self,
        feature_map_weight: float = 0.6,
        component_norm: str = "none",
        sigma: float = 0.0,
        feature_distance: str = "l2",
        feature_shape: tuple[int, int, int] | None = None,
        image_score_top_ratio: float = 0.01,
        mahalanobis_ridge: float = 0.0,
        memory_size: int = 4096,
    ) -> None:
        super().__init__()
        if mahalanobis_ridge < 0:
            msg = f"mahalanobis_ridge must be >= 0, got {mahalanobis_ridge}; 0 is the plain per-cell whitening."
            raise ValueError(msg)
        self.mahalanobis_ridge = mahalanobis_ridge
        if not 0.0 <= image_score_top_ratio < 1.0:
            msg = f"image_score_top_ratio must lie in [0, 1), got {image_score_top_ratio}; 0 is the maximum (Eq. 10)."
            raise ValueError(msg)
        self.image_score_top_ratio = image_score_top_ratio
        if component_norm not in COMPONENT_NORMS:
            msg = f"component_norm must be one of {COMPONENT_NORMS}, got '{component_norm}'."
            raise ValueError(msg)
        if feature_distance not in FEATURE_DISTANCES:
            msg = f"feature_distance must be one of {FEATURE_DISTANCES}, got '{feature_distance}'."
            raise ValueError(msg)
        if feature_distance != "l2" and feature_shape is None:
            msg = (
                f"feature_distance={feature_distance!r} needs feature_shape, the (channels, height, width) of the tap."
            )
            raise ValueError(msg)
        if memory_size < 1:
            msg = f"memory_size must be a positive number of training cells, got {memory_size}."
            raise ValueError(msg)
        self.memory_size = memory_size
        self.feature_shape = feature_shape
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
        self.feature_distance = feature_distance
        if self.per_cell:  # (1, C, h, w): per tap cell and channel, exported with the graph
            self.register_buffer("feature_residual_mean", torch.full((1, *feature_shape), float("nan")))
            self.register_buffer("feature_residual_inv_std", torch.full((1, *feature_shape), float("nan")))
        if self.position_free:  # (M, C): the training cells' residuals, sized when measured (or loaded)
            self.register_buffer("memory_bank", torch.empty(0, feature_shape[0]))
        if self.per_cell and self.position_free:  # (2, 2): (mean, std) of each distance over the training cells
            self.register_buffer("distance_stats", torch.full((2, 2), float("nan")))

    @property
    def per_cell(self) -> bool:
        """True when F uses the per-cell Mahalanobis statistics ("where things usually are")."""
        return self.feature_distance in {"mahalanobis", "mahalanobis+nearest"}

    @property
    def position_free(self) -> bool:
        """True when F uses the nearest-neighbour memory ("what things look like", wherever they sit)."""
        return self.feature_distance in {"nearest", "mahalanobis+nearest"}

    @property
    def measures_train_stats(self) -> bool:
        """True when scoring uses statistics of the normal training images (measured during fit)."""
        return self.component_norm == "train_stats" or self.feature_distance != "l2"

    @property
    def needs_train_stats(self) -> bool:
        """True while a statistic that scoring uses has not been measured."""
        if self.per_cell and bool(torch.isnan(self.feature_residual_mean).any()):
            return True
        if self.position_free and self.memory_bank.shape[0] == 0:
            return True
        if self.per_cell and self.position_free and bool(torch.isnan(self.distance_stats).any()):
            return True
        return self.component_norm == "train_stats" and bool(torch.isnan(self.residual_stats).any())

    def feature_residual(self, fen_features: torch.Tensor, encoder_features: torch.Tensor) -> torch.Tensor:
        """θ*(x) − θ(x) in float32, standardised per cell and channel with ``"mahalanobis"``."""
        residual = fen_features.float() - encoder_features.float()
        if self.per_cell:
            scale = self.feature_residual_inv_std
            if self.mahalanobis_ridge > 0:  # var + ridge·mean(var), from the stored 1/std
                variance = scale.pow(-2)
                scale = (variance + self.mahalanobis_ridge * variance.mean()).rsqrt()
            residual = (residual - self.feature_residual_mean) * scale
        return residual

    @staticmethod
    def feature_residual_moments(fen_features: torch.Tensor, encoder_features: torch.Tensor) -> torch.Tensor:
        """(sum, sum of squares) of the raw feature residual over a batch, (2, C, h, w) in float64."""
        residual = fen_features.double() - encoder_features.double()
        return torch.stack([residual.sum(0), residual.square().sum(0)])

    def set_feature_residual_stats(self, moments: torch.Tensor, count: int) -> None:
        """Store the per-cell, per-channel mean and 1/std of the residual from summed moments (``"mahalanobis"``)."""
        mean = moments[0] / count
        variance = (moments[1] / count - mean.square()).clamp_min(0.0)
        variance = variance.clamp_min(VARIANCE_FLOOR * variance.mean().item() + 1e-12)
        self.feature_residual_mean.copy_(mean.unsqueeze(0))
        self.feature_residual_inv_std.copy_(variance.rsqrt().unsqueeze(0))

    def memory_cells(self, fen_features: torch.Tensor, encoder_features: torch.Tensor) -> torch.Tensor:
        """(B·h·w, C) rows of what ``"nearest"`` compares: each cell's residual averaged with its 3×3 neighbours."""
        cells = neighbourhood(fen_features.float() - encoder_features.float())
        return cells.permute(0, 2, 3, 1).reshape(-1, cells.shape[1])

    def set_memory(self, cells: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Keep ``cells`` as the memory, or a k-center coreset of ``memory_size`` of them; return the kept indices."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        keep = k_center_greedy(cells, self.memory_size, generator)
        self.memory_bank = cells[keep.to(cells.device)].float().contiguous()
        return keep

    def cell_distances(self, fen_features: torch.Tensor, encoder_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each distance F is built from, per tap cell, (B, 1, h, w): ``"mahalanobis"`` and/or ``"nearest"``."""
        distances = {}
        if self.feature_distance != "nearest":  # l2 or the per-cell Mahalanobis: the norm of the (scaled) residual
            residual = self.feature_residual(fen_features, encoder_features)
            distances["l2" if self.feature_distance == "l2" else "mahalanobis"] = torch.linalg.vector_norm(
                residual, dim=1, keepdim=True
            )
        if self.position_free:
            if self.memory_bank.shape[0] == 0:  # a shape, not a value: no host wait, and an exported graph has one
                msg = (
                    "FEGAN's nearest-neighbour score has an empty memory: it is filled from the training images during "
                    "fit (statistics.measure_scoring_statistics). Load a trained checkpoint or fit the model first."
                )
                raise RuntimeError(msg)
            batch, _, height, width = encoder_features.shape
            distance = nearest_distance(self.memory_cells(fen_features, encoder_features), self.memory_bank)
            distances["nearest"] = distance.view(batch, 1, height, width)
        return distances

    def combine(self, distances: dict[str, torch.Tensor]) -> torch.Tensor:
        """F per tap cell from :meth:`cell_distances`: the one distance, or both for ``"mahalanobis+nearest"``.

        Each standardised by its mean and std over the training cells, summed, over √2 (unit variance if apart).
        """
        if len(distances) == 1:
            return next(iter(distances.values()))
        stats = self.distance_stats
        standardised = [
            (distances[name] - stats[i, 0]) / stats[i, 1] for i, name in enumerate(("mahalanobis", "nearest"))
        ]
        return (standardised[0] + standardised[1]) / 2**0.5

    def set_distance_stats(self, distances: dict[str, torch.Tensor]) -> None:
        """Store each distance's (mean, std) over training cells (``"mahalanobis+nearest"``)."""
        for index, name in enumerate(("mahalanobis", "nearest")):
            values = distances[name].double()
            self.distance_stats[index, 0] = values.mean()
            self.distance_stats[index, 1] = values.std().clamp_min(1e-12)

    def cell_distance(self, fen_features: torch.Tensor, encoder_features: torch.Tensor) -> torch.Tensor:
        """F per tap cell, (B, 1, h, w), under ``feature_distance``."""
        return self.combine(self.cell_distances(fen_features, encoder_features))

    def components(
        self,
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
        feature = F.interpolate(
            self.cell_distance(fen_features, encoder_features),
            size=images.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
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

    def image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Per-image score of (B, H, W) maps: their maximum (Eq. 10), or the mean of their top share **[A8b]**."""
        flat = anomaly_map.flatten(1)
        if self.image_score_top_ratio == 0.0:
            return flat.amax(1)
        count = max(1, round(self.image_score_top_ratio * flat.shape[1]))
        return flat.topk(count, dim=1).values.mean(1)

    def forward(
        self,
        images: torch.Tensor,
        reconstruction: torch.Tensor,
        fen_features: torch.Tensor | None,
        encoder_features: torch.Tensor,
    ) -> torch.Tensor:
        """Return the anomaly map S (B, H, W); ``images`` and ``reconstruction`` are in [-1, 1]."""
        return self.fuse(*self.components(images, reconstruction, fen_features, encoder_features))
