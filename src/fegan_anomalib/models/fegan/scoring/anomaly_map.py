"""FEGAN's scoring step: feature and reconstruction distances fused into one anomaly map.

Eq. 6-8 of the paper: ``F_ij = ‖θ*(x) − θ(x)‖₂`` over the tap's channels, bilinearly upsampled to the input;
``R_ij = ‖x − G(x)‖₂`` over RGB in [-1, 1] (:func:`residual_map`, the one place R is computed); ``S = λ·F + (1 − λ)·R``.

The departures, each a constructor argument with the paper's reading kept (docs/decisions.md has the measurements):

- **[A7]** ``component_norm="train_stats"``: F is in feature units and R at most 2√3, so the printed λ barely weighs R;
  each map is standardised by its mean and std on normal training images first.
- **[A7b]** ``feature_distance="mahalanobis"``: the residual θ*(x) − θ(x) standardised per tap cell and channel by its
  training mean and ``sqrt(var + ridge·mean(var))``: on a textured surface a few high-variance channels carry the
  normal texture and would swamp Eq. 6's plain norm. The ridge keeps variances from few images from whitening noise.
- **[A7c]** ``feature_distance="nearest"``: the distance of a cell's 3×3-averaged residual to the nearest training
  cell's in a memory (``memory.py``), wherever it sat: position-free, for parts that turn or shift.
  ``"mahalanobis+nearest"`` sums both halves, each standardised on training images that it was not fitted to.
- **[A7f]** ``density_reweighting=True``: the nearest distance divided by its nearest memory row's spacing (the mean
  distance to its 8 nearest rows, ``memory.memory_spacing``): PatchCore's density re-weighting, read per cell. Off by
  default (measured in BENCHMARKS.md: it lifts magnetic_tile's image AUROC and costs hazelnut's AUPRO a little).
- **[A8b]** the image score is the mean of the map's top ``image_score_top_ratio`` pixels, not Eq. 10's maximum: one
  pixel of a full-resolution map is its noisiest statistic.
- **[A8c]** ``image_score_from="feature_map"`` (the default since 0.4): the image score is read from F alone
  (standardised, before R is fused and before the blur); the map S is unchanged. Eq. 10 reads S (``"anomaly_map"``),
  which decides better where parts trained in place are used moved: there R tells a moved good part from a defect.

Every statistic is a buffer, NaN (or an empty memory) until ``statistics.measure_statistics`` fills it, so checkpoints
and exported graphs carry them and an unmeasured model refuses to score instead of scoring with a silent identity.
λ, σ and the image score's ratio are derived at scoring time (the blur kernel is a non-persistent buffer), so they can
change on a trained checkpoint without measuring anything.
"""

from __future__ import annotations

import logging

import torch
from anomalib.models.components import DynamicBufferMixin, GaussianBlur2d
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ..defaults import DEFAULTS
from .memory import k_center_greedy, memory_spacing, nearest_distance, neighbourhood

logger = logging.getLogger(__name__)

COMPONENT_NORMS = ("none", "train_stats")
FEATURE_DISTANCES = ("l2", "mahalanobis", "nearest", "mahalanobis+nearest")
# the feature distances that search the nearest-neighbour memory (``position_free``)
MEMORY_DISTANCES = frozenset({"nearest", "mahalanobis+nearest"})
IMAGE_SCORE_MAPS = ("anomaly_map", "feature_map")
# a channel whose residual never varied on the training images (e.g. a ReLU dead at that cell in both
# networks) is floored at this fraction of the mean variance instead of dividing by ~0
VARIANCE_FLOOR = 1e-3


def to_gan_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to the decoder's Tanh range [-1, 1], where L_con and R compare them."""
    return images * 2 - 1


def residual_map(images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """R (B, H, W): the L2 distance over RGB of [0, 1] ``images`` and their [-1, 1] ``reconstruction`` (Eq. 7).

    In float32 even under bf16/fp16 autocast: half-precision maps would tie many pixels in AUROC.
    """
    return torch.linalg.vector_norm(to_gan_range(images.float()) - reconstruction.float(), dim=1)


def floored_variance(variance: torch.Tensor) -> torch.Tensor:
    """Floor each (..., C, h, w) variance at ``VARIANCE_FLOOR`` of its image's mean (a dead channel: not ÷ ~0)."""
    return variance.clamp_min(VARIANCE_FLOOR * variance.mean(dim=(-3, -2, -1), keepdim=True) + 1e-12)


class AnomalyMapGenerator(DynamicBufferMixin, nn.Module):
    """Fuse FEGAN's feature map F and reconstruction map R into the anomaly map S.

    Args:
        feature_map_weight: λ of Eq. 8, the weight of F.
        component_norm: ``"none"`` (the paper) or ``"train_stats"`` **[A7]**.
        sigma: standard deviation of an optional Gaussian smoothing; ``0`` is none (the paper's).
        feature_distance: ``"l2"`` (Eq. 6), ``"mahalanobis"`` **[A7b]**, ``"nearest"`` or ``"mahalanobis+nearest"``
            **[A7c]**.
        feature_shape: (channels, height, width) of the tap's features; needed by every distance but ``"l2"``.
        image_score_top_ratio: the image score is the mean of this share of the map's highest pixels; ``0`` is
            their maximum, Eq. 10 as printed **[A8b]**.
        mahalanobis_ridge: with ``"mahalanobis"``, divide by ``sqrt(var + ridge·mean(var))``; ``0`` is plain
            per-cell whitening **[A7b]**.
        memory_size: with ``"nearest"``, the most training cells the memory keeps (a k-center coreset beyond it).
        image_score_from: the map the image score is read from: ``"anomaly_map"`` S (Eq. 10) or ``"feature_map"``
            F alone, before R is fused and before the blur **[A8c]**.
        density_reweighting: with a memory, divide each cell's nearest distance by its nearest row's spacing
            **[A7f]**.

    Every default is ``defaults.DEFAULTS``'s, the product's.

    Example:
        >>> generator = AnomalyMapGenerator(feature_map_weight=1.0, feature_distance="l2", component_norm="none")
        >>> image = torch.zeros(1, 3, 32, 32)
        >>> generator(image, image, torch.ones(1, 8, 2, 2), torch.zeros(1, 8, 2, 2)).shape
        torch.Size([1, 32, 32])

    """

    def __init__(
        self,
        feature_map_weight: float = DEFAULTS["feature_map_weight"],
        component_norm: str = DEFAULTS["component_norm"],
        sigma: float = DEFAULTS["sigma"],
        feature_distance: str = DEFAULTS["feature_distance"],
        feature_shape: tuple[int, int, int] | None = None,
        image_score_top_ratio: float = DEFAULTS["image_score_top_ratio"],
        mahalanobis_ridge: float = DEFAULTS["mahalanobis_ridge"],
        memory_size: int = DEFAULTS["memory_size"],
        image_score_from: str = DEFAULTS["image_score_from"],
        density_reweighting: bool = DEFAULTS["density_reweighting"],
    ) -> None:
        super().__init__()
        if mahalanobis_ridge < 0:
            msg = f"mahalanobis_ridge must be >= 0, got {mahalanobis_ridge}; 0 is the plain per-cell whitening."
            raise ValueError(msg)
        if not 0.0 <= image_score_top_ratio < 1.0:
            msg = f"image_score_top_ratio must lie in [0, 1), got {image_score_top_ratio}; 0 is the maximum (Eq. 10)."
            raise ValueError(msg)
        for name, value, choices in (
            ("component_norm", component_norm, COMPONENT_NORMS),
            ("feature_distance", feature_distance, FEATURE_DISTANCES),
            ("image_score_from", image_score_from, IMAGE_SCORE_MAPS),
        ):
            if value not in choices:
                msg = f"{name} must be one of {choices}, got '{value}'."
                raise ValueError(msg)
        if feature_distance != "l2" and feature_shape is None:
            msg = (
                f"feature_distance={feature_distance!r} needs feature_shape, the (channels, height, width) of the tap."
            )
            raise ValueError(msg)
        check_memory_settings(memory_size, density_reweighting, feature_distance)
        if not 0.0 <= feature_map_weight <= 1.0:
            msg = f"feature_map_weight must lie in [0, 1], got {feature_map_weight}."
            raise ValueError(msg)
        self.mahalanobis_ridge = mahalanobis_ridge
        self.image_score_top_ratio = image_score_top_ratio
        self.image_score_from = image_score_from
        self.memory_size = memory_size
        self.feature_shape = feature_shape
        self.feature_map_weight = feature_map_weight
        self.component_norm = component_norm
        self.feature_distance = feature_distance
        self.density_reweighting = density_reweighting
        self.blur = GaussianBlur2d(sigma=sigma, channels=1) if sigma > 0 else None
        if self.blur is not None:  # derived from sigma, not learnt: neither saved nor expected in checkpoints
            for name in list(self.blur._buffers):
                self.blur._non_persistent_buffers_set.add(name)
        self.register_buffer("feature_stats", torch.full((2,), float("nan")))
        self.register_buffer("residual_stats", torch.full((2,), float("nan")))
        if self.per_cell:  # (1, C, h, w): per tap cell and channel, exported with the graph
            self.register_buffer("feature_residual_mean", torch.full((1, *feature_shape), float("nan")))
            self.register_buffer("feature_residual_inv_std", torch.full((1, *feature_shape), float("nan")))
        if self.position_free:  # (M, C): the training cells' residuals, sized when measured (or loaded)
            self.register_buffer("memory_bank", torch.empty(0, feature_shape[0]))
        if self.density_reweighting:  # (M,): derived from the memory, so neither saved nor expected in checkpoints
            self.register_buffer("memory_spacing", torch.empty(0), persistent=False)
            self.register_load_state_dict_post_hook(_derive_memory_spacing)
        if self.per_cell and self.position_free:  # (2, 2): (mean, std) of each distance over the training cells
            self.register_buffer("distance_stats", torch.full((2, 2), float("nan")))

    @property
    def per_cell(self) -> bool:
        """True when F uses the per-cell Mahalanobis statistics ("where things usually are")."""
        return self.feature_distance in {"mahalanobis", "mahalanobis+nearest"}

    @property
    def position_free(self) -> bool:
        """True when F uses the nearest-neighbour memory ("what things look like", wherever they sit)."""
        return self.feature_distance in MEMORY_DISTANCES

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

    def reset_statistics(self) -> None:
        """Forget every measured statistic (NaN, an empty memory), so the next measurement is the only source."""
        for name, buffer in self.named_buffers(recurse=False):
            if name == "memory_bank":
                self.memory_bank = buffer.new_empty(0, buffer.shape[1])
            elif name == "memory_spacing":
                self.memory_spacing = buffer.new_empty(0)
            else:
                buffer.fill_(float("nan"))

    def check_grid(self, features: torch.Tensor) -> None:
        """Refuse tap features of another grid than the per-cell statistics' (an image of another size)."""
        if self.per_cell and tuple(features.shape[-2:]) != tuple(self.feature_shape[1:]):
            msg = (
                f"FEGAN's per-cell statistics (feature_distance={self.feature_distance!r}) were measured on a "
                f"{self.feature_shape[1]}x{self.feature_shape[2]} tap grid, this input gives "
                f"{features.shape[-2]}x{features.shape[-1]}: resize images to the model's image_size (anomalib's "
                "pre-processor of the model does), or use feature_distance='nearest', which has no grid."
            )
            raise ValueError(msg)

    def mahalanobis(self, residual: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) norm of the raw residual standardised by (mean, floored variance) with the ridge **[A7b]**.

        The ridge is a share of the mean variance over each image's (C, h, w) statistics: per image when each is left
        out of its own (``statistics.py``).
        """
        scale = (variance + self.mahalanobis_ridge * variance.mean(dim=(-3, -2, -1), keepdim=True)).rsqrt()
        return torch.linalg.vector_norm((residual - mean) * scale, dim=1, keepdim=True)

    @staticmethod
    def feature_residual_moments(fen_features: torch.Tensor, encoder_features: torch.Tensor) -> torch.Tensor:
        """(sum, sum of squares) of the raw feature residual over a batch, (2, C, h, w) in float64."""
        residual = fen_features.double() - encoder_features.double()
        return torch.stack([residual.sum(0), residual.square().sum(0)])

    def set_feature_residual_stats(self, moments: torch.Tensor, count: int) -> None:
        """Store the per-cell, per-channel mean and 1/std of the residual from summed moments (``"mahalanobis"``)."""
        mean = moments[0] / count
        variance = floored_variance((moments[1] / count - mean.square()).clamp_min(0.0))
        self.feature_residual_mean.copy_(mean.unsqueeze(0))
        self.feature_residual_inv_std.copy_(variance.rsqrt().unsqueeze(0))

    def memory_cells(self, fen_features: torch.Tensor, encoder_features: torch.Tensor) -> torch.Tensor:
        """(B·h·w, C) rows of what ``"nearest"`` compares: each cell's residual averaged with its 3×3 neighbours."""
        cells = neighbourhood(fen_features.float() - encoder_features.float())
        return cells.permute(0, 2, 3, 1).reshape(-1, cells.shape[1])

    def set_memory(self, cells: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Keep ``cells`` as the memory, or a k-center coreset of ``memory_size`` of them; return the kept indices.

        ``generator`` seeds the coreset's projection and first row (seed 0 without one).
        """
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        keep = k_center_greedy(cells, self.memory_size, generator)
        # a normal tensor even when measured under a test's inference mode: an export after the test traces it
        with torch.inference_mode(False):
            self.memory_bank = cells[keep.to(cells.device)].float().clone(memory_format=torch.contiguous_format)
            self.derive_memory_spacing()
        return keep

    def derive_memory_spacing(self) -> None:
        """With ``density_reweighting``, measure each memory row's spacing from the memory (set or loaded) **[A7f]**."""
        if self.density_reweighting:
            with torch.inference_mode(False), torch.no_grad():
                self.memory_spacing = memory_spacing(self.memory_bank)

    @property
    def spacing(self) -> torch.Tensor | None:
        """The spacing the nearest distance is divided by, or ``None`` without ``density_reweighting``.

        Derived again if the memory was replaced without :meth:`set_memory` or a state dict (a shape check, no wait:
        a memory overwritten in place with as many rows keeps the old spacing; call :meth:`derive_memory_spacing`).
        """
        if not self.density_reweighting:
            return None
        if self.memory_spacing.shape[0] != self.memory_bank.shape[0]:
            self.derive_memory_spacing()
        return self.memory_spacing

    def cell_distances(self, fen_features: torch.Tensor, encoder_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return each distance F is built from, per tap cell (B, 1, h, w): l2, or mahalanobis and/or nearest."""
        distances = {}
        residual = fen_features.float() - encoder_features.float()
        if self.feature_distance == "l2":
            distances["l2"] = torch.linalg.vector_norm(residual, dim=1, keepdim=True)
        if self.per_cell:
            self.check_grid(residual)
            variance = self.feature_residual_inv_std.pow(-2)
            distances["mahalanobis"] = self.mahalanobis(residual, self.feature_residual_mean, variance)
        if self.position_free:
            if self.memory_bank.shape[0] == 0:  # a shape, not a value: no host wait, and an exported graph has one
                msg = (
                    "FEGAN's nearest-neighbour score has an empty memory: it is filled from the training images during "
                    "fit (statistics.measure_statistics). Load a trained checkpoint or fit the model first."
                )
                raise RuntimeError(msg)
            batch, _, height, width = encoder_features.shape
            cells = self.memory_cells(fen_features, encoder_features)
            distance = nearest_distance(cells, self.memory_bank, spacing=self.spacing)
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

    def upsample(self, cell_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, 1, h, w) per-cell F to (B, H, W) pixels, bilinear with ``align_corners=False`` as anomalib's models.

        Each tap cell covers its stride-sized patch, without the up-to-half-cell shift of ``True`` towards the borders.
        """
        return F.interpolate(cell_map, size=size, mode="bilinear", align_corners=False).squeeze(1)

    def components(
        self,
        images: torch.Tensor,
        reconstruction: torch.Tensor,
        fen_features: torch.Tensor | None,
        encoder_features: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return R (B, H, W) of [0, 1] ``images`` and, when the FEN is used, F (B, H, W) upsampled to the input.

        The distances are taken in float32 even under bf16/fp16 autocast.
        """
        residual = residual_map(images, reconstruction)
        if fen_features is None:
            return residual, None
        cell_map = self.combine(self.cell_distances(fen_features, encoder_features))
        return residual, self.upsample(cell_map, tuple(images.shape[-2:]))

    def set_train_stats(self, residual: tuple[float, float], feature: tuple[float, float] | None) -> None:
        """Store (mean, std) of R and F measured on normal training images."""
        self.residual_stats.copy_(torch.tensor(residual))
        if feature is not None:
            self.feature_stats.copy_(torch.tensor(feature))
        logger.info("FEGAN train_stats: R mean/std %.4g/%.4g, F %s", *residual, feature)

    def standardised_feature(self, feature: torch.Tensor) -> torch.Tensor:
        """F as Eq. 8 weighs it: standardised by its training (mean, std) with ``"train_stats"``, else as it is."""
        if self.component_norm == "train_stats":
            return (feature - self.feature_stats[0]) / self.feature_stats[1]
        return feature

    def fuse(self, residual: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor:
        """Eq. 8 on the (optionally standardised) components, then the optional blur."""
        if self.component_norm == "train_stats":
            residual = (residual - self.residual_stats[0]) / self.residual_stats[1]
        if feature is None:
            anomaly_map = residual
        else:
            feature = self.standardised_feature(feature)
            anomaly_map = self.feature_map_weight * feature + (1.0 - self.feature_map_weight) * residual
        if self.blur is not None:
            anomaly_map = self.blur(anomaly_map.unsqueeze(1)).squeeze(1)
        return anomaly_map

    def score(self, residual: torch.Tensor, feature: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the anomaly map S (B, H, W) and the image scores (B,) read from S or from F **[A8c]**."""
        anomaly_map = self.fuse(residual, feature)
        if self.image_score_from == "feature_map" and feature is not None:
            return anomaly_map, self.image_score(self.standardised_feature(feature))
        return anomaly_map, self.image_score(anomaly_map)

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
        """Return the anomaly map S (B, H, W) of [0, 1] ``images`` and their [-1, 1] ``reconstruction``."""
        return self.fuse(*self.components(images, reconstruction, fen_features, encoder_features))


def check_memory_settings(memory_size: int, density_reweighting: bool, feature_distance: str) -> None:
    """Refuse a memory of no cells, and ``density_reweighting`` where F has no nearest distance **[A7f]**."""
    if memory_size < 1:
        msg = f"memory_size must be a positive number of training cells, got {memory_size}."
        raise ValueError(msg)
    if density_reweighting and feature_distance not in MEMORY_DISTANCES:
        msg = (
            f"density_reweighting re-weighs the nearest-neighbour distance, which feature_distance="
            f"{feature_distance!r} does not use: pass feature_distance='nearest' or 'mahalanobis+nearest', or "
            "density_reweighting=False."
        )
        raise ValueError(msg)


def _derive_memory_spacing(generator: AnomalyMapGenerator, _incompatible: object) -> None:
    """After a state dict loads a memory, derive its spacing (a non-persistent buffer) **[A7f]**."""
    generator.derive_memory_spacing()
