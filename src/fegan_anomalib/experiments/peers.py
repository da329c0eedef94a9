"""PaDiM, PatchCore and DRAEM set up to run beside FEGAN in one benchmark grid, offline.

anomalib's benchmark pipeline (``anomalib benchmark``) cannot run anomalib's own ``Padim``, ``Patchcore``
and ``Draem`` beside FEGAN as they are, for three reasons this module removes:

- It builds its ``Engine`` without an epoch count, and ``Draem`` sets none, so Lightning's
  default of 1000 epochs applies. ``BenchDraem`` takes ``max_epochs`` as FEGAN does.
- Its results table (``BenchmarkJob.collect``) needs every job of the grid to report the same
  columns: the same constructor keys and the same metrics. Every model here takes
  ``image_size``, ``max_epochs`` and ``pre_trained`` and is scored by FEGAN's evaluator (image and
  pixel AUROC, AUPRO, F1, both IoUs), which also gives the peers the paper's figures.
- Offline, ``Padim`` and ``Patchcore`` need ``pre_trained=False`` and ``Draem`` downloads DTD when
  ``dtd_dir`` is missing. ``BenchDraem`` with ``dtd_dir=None`` uses anomalib's Perlin-noise anomaly sources.

``BenchPadim(weights=PATH)`` and ``BenchPatchcore(weights=PATH)`` also give PaDiM and PatchCore the FEGAN
backbone with a local torchvision VGG16-BN state dict (e.g. the stand-in from ``fegan-build-weights``), so
the models can be compared on the same pre-trained features: anomalib's ``Padim`` and ``Patchcore`` accept
only a timm model name.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from anomalib.models import Draem, Padim, Patchcore
from anomalib.models.components.feature_extractors import TimmFeatureExtractor
from anomalib.visualization import Visualizer
from torch import nn

from fegan_anomalib.models.fegan.backbone import build_fen
from fegan_anomalib.models.fegan.lightning_model import Fegan

__all__ = ["BenchDraem", "BenchPadim", "BenchPatchcore"]

# PaDiM on a VGG16-BN: relu3_3, relu4_3, relu5_2 (strides 4, 8, 16, as ResNet's layer1-3; the stand-in
# weights end at relu5_2; FEGAN cuts them at relu4_3 since 0.3, at relu5_2 before).
VGG16_BN_PADIM_LAYERS = ("features.22", "features.32", "features.39")
# PatchCore on a VGG16-BN, two stages: "middle", relu3_3 and relu4_3 (strides 4 and 8: PatchCore's own choice of
# middle stages, the stronger reading on every development set, issue 38), or "late", relu4_3 and relu5_2 (strides 8
# and 16, the strides of wide ResNet-50's layer2-3 at the same input; this project's reading before issue 38)
VGG16_BN_PATCHCORE_LAYERS = {"middle": ("features.22", "features.32"), "late": ("features.32", "features.39")}


def _size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


class _VggFeatures(nn.Module):
    """A VGG ``features`` stack under the name torchvision gives it, so nodes trace as ``features.<i>``."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Run the stack."""
        return self.features(images)


def vgg16_bn_extractor(weights: str, layers: tuple[str, ...]) -> TimmFeatureExtractor:
    """Anomalib's feature extractor over the local VGG16-BN (cut at relu5_2), returning ``layers``."""
    vgg = _VggFeatures(build_fen("vgg16_bn", "relu5_2", weights=weights))
    return TimmFeatureExtractor(backbone=vgg, layers=list(layers)).eval()


def _check_single_epoch(name: str, max_epochs: int) -> None:
    if max_epochs != 1:
        msg = f"{name} fits in one pass over the training set; max_epochs must be 1, got {max_epochs}."
        raise ValueError(msg)


class BenchPadim(Padim):
    """PaDiM with an image size, FEGAN's evaluator and optionally a local VGG16-BN backbone.

    Args:
        image_size: input (H, W) of the resize in the pre-processor. Defaults to ``256``.
        max_epochs: PaDiM fits in one pass; any other value is an error. Defaults to ``1``.
        pre_trained: timm ImageNet weights for ``backbone`` (needs a download). Defaults to ``True``.
        weights: torchvision-keyed VGG16-BN state dict; when given, the backbone is that VGG16-BN
            tapped at relu3_3, relu4_3 and relu5_2, and ``backbone``/``layers`` are ignored.
        backbone, layers, n_features: as for anomalib's ``Padim``.

    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 256,
        max_epochs: int = 1,
        pre_trained: bool = True,
        weights: str | None = None,
        backbone: str = "resnet18",
        layers: list[str] | None = None,
        n_features: int | None = None,
        visualizer: Visualizer | bool = True,
    ) -> None:
        _check_single_epoch("PaDiM", max_epochs)
        super().__init__(
            backbone=backbone,
            layers=layers or ["layer1", "layer2", "layer3"],
            pre_trained=pre_trained and weights is None,
            n_features=n_features if weights is None else (n_features or 100),
            pre_processor=Padim.configure_pre_processor(_size(image_size)),
            evaluator=Fegan.configure_evaluator(),
            visualizer=visualizer,
        )
        if weights is not None:
            self._use_vgg16_bn(weights, self.model.n_features)

    def _use_vgg16_bn(self, weights: str, n_features: int) -> None:
        """Swap the timm backbone for the local VGG16-BN, redrawing PaDiM's random channel subset."""
        padim = self.model
        padim.backbone = "vgg16_bn (weights file)"
        padim.layers = list(VGG16_BN_PADIM_LAYERS)
        padim.feature_extractor = vgg16_bn_extractor(weights, VGG16_BN_PADIM_LAYERS)
        padim.n_features_original = sum(padim.feature_extractor.out_dims)
        padim.n_features = n_features
        padim.idx = torch.randperm(padim.n_features_original)[:n_features]


class BenchPatchcore(Patchcore):
    """PatchCore with an image size, FEGAN's evaluator and optionally a local VGG16-BN backbone.

    The anomalib model a user would pick instead of FEGAN, so every comparison shows it.

    Args:
        image_size: input (H, W) of the resize in the pre-processor (no centre crop). Defaults to ``256``.
        max_epochs: PatchCore fills its memory bank in one pass; any other value is an error. Defaults to ``1``.
        pre_trained: timm ImageNet weights for ``backbone`` (needs a download). Defaults to ``True``.
        weights: torchvision-keyed VGG16-BN state dict; when given, the backbone is that VGG16-BN tapped at
            ``vgg16_bn_stages``, and ``backbone``/``layers`` are ignored.
        vgg16_bn_stages: with ``weights``, ``"middle"`` (relu3_3 + relu4_3, strides 4 and 8) or ``"late"`` (relu4_3 +
            relu5_2, strides 8 and 16). Defaults to ``"middle"``, the stronger (BENCHMARKS.md).
        backbone, layers, coreset_sampling_ratio, num_neighbors: as for anomalib's ``Patchcore``.

    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 256,
        max_epochs: int = 1,
        pre_trained: bool = True,
        weights: str | None = None,
        vgg16_bn_stages: str = "middle",
        backbone: str = "wide_resnet50_2",
        layers: list[str] | None = None,
        coreset_sampling_ratio: float = 0.1,
        num_neighbors: int = 9,
        visualizer: Visualizer | bool = True,
    ) -> None:
        _check_single_epoch("PatchCore", max_epochs)
        if vgg16_bn_stages not in VGG16_BN_PATCHCORE_LAYERS:
            msg = f"vgg16_bn_stages must be one of {sorted(VGG16_BN_PATCHCORE_LAYERS)}, got {vgg16_bn_stages!r}."
            raise ValueError(msg)
        super().__init__(
            backbone=backbone,
            layers=layers or ["layer2", "layer3"],
            pre_trained=pre_trained and weights is None,
            coreset_sampling_ratio=coreset_sampling_ratio,
            num_neighbors=num_neighbors,
            pre_processor=Patchcore.configure_pre_processor(_size(image_size)),
            evaluator=Fegan.configure_evaluator(),
            visualizer=visualizer,
        )
        if weights is not None:
            self.model.backbone = "vgg16_bn (weights file)"
            layers = VGG16_BN_PATCHCORE_LAYERS[vgg16_bn_stages]
            self.model.layers = list(layers)
            self.model.feature_extractor = vgg16_bn_extractor(weights, layers)


class BenchDraem(Draem):
    """DRAEM with an image size, an epoch budget, FEGAN's evaluator and an offline default.

    Args:
        image_size: input (H, W) of the resize in the pre-processor. Defaults to ``256``.
        max_epochs: epoch budget (``Draem`` leaves it to the trainer). Defaults to ``20``.
        pre_trained: DRAEM has no pre-trained network; accepted so one argument set fits every
            model of a grid, and must be ``False``.
        dtd_dir: DTD texture folder, used as anomaly sources; it must exist (nothing is
            downloaded). ``None`` uses anomalib's Perlin-noise sources instead. Defaults to ``None``.

    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 256,
        max_epochs: int = 20,
        pre_trained: bool = False,
        dtd_dir: str | None = None,
        enable_sspcab: bool = False,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if pre_trained:
            msg = "DRAEM trains from scratch and has no pre-trained weights; set pre_trained to false."
            raise ValueError(msg)
        if max_epochs < 1:
            msg = f"max_epochs must be a positive number of epochs, got {max_epochs}."
            raise ValueError(msg)
        if dtd_dir is not None and not Path(dtd_dir).is_dir():
            msg = f"dtd_dir {dtd_dir} does not exist. Unpack DTD there, or pass dtd_dir=None for noise sources."
            raise FileNotFoundError(msg)
        with tempfile.TemporaryDirectory() as no_textures:  # an existing, empty folder: no download
            super().__init__(
                dtd_dir=dtd_dir or no_textures,
                enable_sspcab=enable_sspcab,
                pre_processor=Draem.configure_pre_processor(_size(image_size)),
                evaluator=Fegan.configure_evaluator(),
                visualizer=visualizer,
            )
        self.max_epochs = max_epochs

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """DRAEM's own trainer arguments plus the epoch budget."""
        return {**super().trainer_arguments, "max_epochs": self.max_epochs}
