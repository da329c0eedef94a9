"""PyTorch model of FEGAN.

FEGAN (Fan, Zhang, Dai, IEEE Access 2024) pairs a frozen feature-extraction network (FEN, a
VGG19 cut at ``relu5_4``) with a generator whose encoder is the same VGG stack and whose
decoder is one deconvolution block back to the image. Training teaches the encoder to match
the FEN's features of the clean image from an M-SE-augmented copy, and the decoder to
reconstruct the clean image; a DCGAN discriminator sharpens the reconstruction. At test time
the FEN-vs-encoder feature distance and the image-vs-reconstruction distance, fused, give the
anomaly map (Eq. 6-10).

The FEN's pre-trained weights (ImageNet, or a local file) are not read when the model is built but
by :meth:`FeganModel.load_fen_weights`, which the Lightning module calls when a fit starts from no
checkpoint: a model restored from a checkpoint gets its FEN from the checkpoint, so ``anomalib
test|predict|export --ckpt_path`` never downloads (or needs the weights file of) what it replaces.

The model receives images in [0, 1] (the pre-processor only resizes, **[A5]**); the ImageNet
normalisation and the [-1, 1] range of the decoder live here so an exported graph holds them.
Nothing random or training-only runs in eval mode, so export sees only FEN, encoder, decoder
and the scoring step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from anomalib.data import InferenceBatch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .backbone import ENCODER_BATCHNORMS, build_encoder, build_fen, layer_names, tap_stride, tap_stride_and_channels
from .defaults import DEFAULTS
from .scoring.anomaly_map import AnomalyMapGenerator, to_gan_range

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TrainOutput(NamedTuple):
    """What the losses need from one training forward.

    ``fen_features`` is ``None`` when the FEN is switched off (Table 7's G-only rows).
    """

    fen_features: torch.Tensor | None
    encoder_features: torch.Tensor
    reconstruction: torch.Tensor


class ComponentMaps(NamedTuple):
    """The unfused score components of one batch, with the reconstruction they came from.

    ``residual`` R and ``feature`` F are (B, H, W) at input size; ``feature`` is ``None`` without the FEN.
    """

    residual: torch.Tensor
    feature: torch.Tensor | None
    reconstruction: torch.Tensor


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv N(0, 0.02), BatchNorm weight N(1, 0.02) and bias 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Decoder(nn.Module):
    """The "one deconvolution block" **[A3]**: transposed convs k4 s2 p1 from the tap up to the image.

    At a 16-stride tap with 512 channels: 512→256→128→64→3, BatchNorm+ReLU between, Tanh last,
    so the output lives in [-1, 1].

    Args:
        in_channels: channels at the tap.
        num_upsamplings: log2 of the tap's stride.

    """

    def __init__(self, in_channels: int, num_upsamplings: int) -> None:
        super().__init__()
        widths = [min(512, 64 * 2 ** (num_upsamplings - 2 - i)) for i in range(num_upsamplings - 1)] + [3]
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            layers.append(nn.ConvTranspose2d(channels, width, kernel_size=4, stride=2, padding=1, bias=False))
            if index < len(widths) - 1:
                layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.Tanh())
        self.layers = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Decode tap features into an image in [-1, 1]."""
        return self.layers(features)


class Discriminator(nn.Module):
    """DCGAN/GANomaly-style discriminator with one logit per image **[A4]**.

    Conv4×4 s2 + LeakyReLU(0.2), then Conv4×4 s2 + BN + LeakyReLU doubling the channels (capped at
    512) while the map is larger than 4×4, then a convolution over the remaining map → 1 logit.

    Args:
        image_size: (H, W) of the images it judges.
        base_width: channels of the first convolution. Defaults to ``64``.

    """

    def __init__(self, image_size: tuple[int, int], base_width: int = 64) -> None:
        super().__init__()
        height, width = image_size[0] // 2, image_size[1] // 2
        layers: list[nn.Module] = [
            nn.Conv2d(3, base_width, kernel_size=4, stride=2, padding=1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = base_width
        while min(height, width) > 4:
            out_channels = min(512, channels * 2)
            layers += [
                nn.Conv2d(channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels, height, width = out_channels, height // 2, width // 2
        layers.append(nn.Conv2d(channels, 1, kernel_size=(height, width), bias=False))
        self.layers = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Return the last feature map before the logit (what GANomaly's feature matching compares)."""
        return self.layers[:-1](images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return one real-vs-fake logit per image, shape (B,)."""
        return self.layers(images).flatten()


class FeganModel(nn.Module):
    """FEGAN's networks and its eval-mode contract.

    Train mode: ``forward(augmented, clean)`` returns :class:`TrainOutput` (FEN features of the clean
    image, encoder features and reconstruction of the augmented one). Eval mode: ``forward(images)``
    returns ``InferenceBatch(pred_score, anomaly_map)``, ``anomaly_map`` (B, H, W) at input size and
    ``pred_score`` the per-image max (Eq. 10) or top-share mean (**[A8b]**) of F alone (the default) or of that map
    (``image_score_from``, **[A8c]**), raw, not min-max normalised **[A8]**.

    Every default is ``defaults.DEFAULTS``'s, the product's (the paper's reading is ``configs/fegan_mvtec.yaml``). A
    score that uses training statistics (every ``feature_distance`` but ``"l2"``, ``component_norm="train_stats"``)
    needs them measured first: ``scoring.statistics.measure_statistics``, which :class:`~fegan_anomalib.Fegan` runs
    during fit and when a test starts without them.

    Args:
        image_size: (H, W) of the model input; both must be multiples of the tap's stride.
        backbone: torchvision VGG.
        tap: FEN/encoder cut **[A1]** **[A1b]**.
        pre_trained: torchvision ImageNet weights for the FEN, read by :meth:`load_fen_weights`.
        weights: local torchvision-keyed state dict for the FEN (overrides ``pre_trained``), read likewise.
        encoder_init: ``"pretrained"`` (copy of the FEN, also when :meth:`load_fen_weights` loads it) or
            ``"random"`` **[A2]**.
        encoder_batchnorm: ``"frozen"``: the encoder's BatchNorm layers (``_bn`` backbones) keep
            the statistics they were built with (the FEN's, or 0/1 for a random encoder); ``"train"``: they
            use batch statistics in training and update their running statistics.
        use_discriminator: build the discriminator (Table 7).
        use_fen: use the FEN branch in loss and score (Table 7).
        channels_last: keep the convolution weights in channels-last memory order, which oneDNN runs
            faster on CPU (same results up to float rounding; benchmarks/inference.py).
        fine_tap: an earlier layer of FEN and encoder whose residual F reads beside the tap's: both networks'
            features there, with the tap's bilinearly upsampled to that finer grid and appended, are what F compares
            (:meth:`scored_features`) **[A7d]**. ``"previous_block"`` (the default) is the last ReLU of the stage
            before the tap's (``relu3_4`` beside VGG19's ``relu4_4``), a layer name picks one (``"relu3_3"``),
            ``"none"`` reads the tap alone (Eq. 6). A scoring setting: it changes no weight, only the statistics.
        **scoring: :class:`AnomalyMapGenerator`'s arguments (``defaults.SCORING_SETTINGS``: λ, ``component_norm``,
            ``sigma``, ``feature_distance``, ``image_score_top_ratio``, ``mahalanobis_ridge``, ``memory_size``,
            ``image_score_from``, ``density_reweighting``).

    Example:
        >>> model = FeganModel((64, 64), pre_trained=False, feature_distance="l2", component_norm="none").eval()
        >>> model(torch.rand(2, 3, 64, 64)).anomaly_map.shape
        torch.Size([2, 64, 64])

    """

    def __init__(
        self,
        image_size: tuple[int, int] = (DEFAULTS["image_size"],) * 2,
        backbone: str = DEFAULTS["backbone"],
        tap: str = DEFAULTS["tap"],
        pre_trained: bool = DEFAULTS["pre_trained"],
        weights: str | Path | None = None,
        encoder_init: str = DEFAULTS["encoder_init"],
        encoder_batchnorm: str = DEFAULTS["encoder_batchnorm"],
        use_discriminator: bool = DEFAULTS["use_discriminator"],
        use_fen: bool = DEFAULTS["use_fen"],
        channels_last: bool = DEFAULTS["channels_last"],
        fine_tap: str = DEFAULTS["fine_tap"],
        **scoring: Any,
    ) -> None:
        super().__init__()
        if encoder_batchnorm not in ENCODER_BATCHNORMS:
            msg = f"encoder_batchnorm must be one of {ENCODER_BATCHNORMS}, got '{encoder_batchnorm}'."
            raise ValueError(msg)
        if encoder_batchnorm == "frozen" and encoder_init == "random" and "_bn" in backbone:
            msg = (
                "encoder_init='random' with encoder_batchnorm='frozen' would normalise the encoder with reset "
                "0/1 statistics that never update. Pass encoder_batchnorm='train' with a random encoder."
            )
            raise ValueError(msg)
        stride = tap_stride(backbone, tap)
        if stride is not None and (image_size[0] % stride or image_size[1] % stride):
            msg = (
                f"image_size {tuple(image_size)} is not divisible by {stride}, the stride of {backbone} at "
                f"'{tap}'. Use a multiple of {stride} (e.g. {max(stride, round(image_size[0] / stride) * stride)})."
            )
            raise ValueError(msg)
        self.image_size = tuple(image_size)
        self.use_fen = use_fen
        self.encoder_batchnorm = encoder_batchnorm
        self.backbone, self.tap, self.pre_trained, self.weights = backbone, tap, pre_trained, weights
        self.encoder_init = encoder_init
        self.fen = build_fen(backbone, tap, pre_trained=False)  # the weights come at load_fen_weights()
        self.encoder = build_encoder(self.fen, encoder_init)
        self._freeze_encoder_batchnorm()
        fen_stride, channels = tap_stride_and_channels(self.fen)
        self.decoder = Decoder(channels, int(math.log2(fen_stride)))
        self.discriminator = Discriminator(tuple(image_size)) if use_discriminator else None
        if not use_fen:  # R alone: no F to weigh or measure
            scoring = {
                **scoring,
                "feature_map_weight": 0.0,
                "feature_distance": "l2",
                "image_score_from": "anomaly_map",
                "density_reweighting": False,
            }
        self.fine_tap = fine_tap
        self.fine_index = _fine_index(self.fen, backbone, tap, fine_tap)
        if self.fine_index is not None:  # F on the fine grid, the fine tap's channels then the tap's
            fine_stride, fine_channels = tap_stride_and_channels(self.fen[: self.fine_index + 1])
            fen_stride, channels = fine_stride, fine_channels + channels
        feature_shape = (channels, image_size[0] // fen_stride, image_size[1] // fen_stride)
        self.anomaly_map_generator = AnomalyMapGenerator(feature_shape=feature_shape, **scoring)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if channels_last:  # a convolution with channels-last weights runs channels-last, whatever its input
            self.to(memory_format=torch.channels_last)
        # False while the FEN holds its random init but should carry pre-trained weights; any state-dict load
        # (a checkpoint, load_state_dict) brings the FEN's weights with it, so load_fen_weights must not follow
        self.fen_weights_loaded = not self.has_fen_source
        self.register_load_state_dict_post_hook(_mark_fen_weights_loaded)

    @property
    def has_fen_source(self) -> bool:
        """True when the FEN is meant to carry pre-trained weights (ImageNet or a file), not its random init."""
        return self.weights is not None or self.pre_trained

    def load_fen_weights(self) -> None:
        """Load the FEN's pre-trained weights (the ``weights`` file, else ImageNet), and copy them into the encoder.

        The copy only with ``encoder_init="pretrained"``.

        Called when a fit (or a test of a model never fitted) starts; a no-op once the weights are there
        (loaded before, or brought by a state dict) and for ``pre_trained=False`` without a file. The errors are
        ``build_fen``'s: offline without a cached ImageNet file, a missing or misfitting file.
        """
        if self.fen_weights_loaded:
            return
        with torch.random.fork_rng(devices=[]):  # building the source stack draws a random init: not from the run's RNG
            source = build_fen(self.backbone, self.tap, self.pre_trained, self.weights).state_dict()
        self.fen.load_state_dict(source)
        if self.encoder_init == "pretrained":  # same indices: the pool swap and ReLU copies hold no parameters
            self.encoder.load_state_dict(source)
        self.fen_weights_loaded = True

    def train(self, mode: bool = True) -> FeganModel:
        """Switch modes but keep the frozen FEN in eval mode (its BatchNorm statistics never move)."""
        super().train(mode)
        self.fen.eval()
        self._freeze_encoder_batchnorm()
        return self

    def _freeze_encoder_batchnorm(self) -> None:
        """With ``encoder_batchnorm="frozen"``, hold the encoder's BatchNorm layers in eval mode."""
        if self.encoder_batchnorm == "frozen":
            for module in self.encoder.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalise [0, 1] images for the FEN and the encoder **[A5]**."""
        return (images - self.mean) / self.std

    to_gan_range = staticmethod(to_gan_range)

    @staticmethod
    def from_gan_range(images: torch.Tensor) -> torch.Tensor:
        """Map a reconstruction in [-1, 1] back to a [0, 1] image (for display)."""
        return ((images + 1) / 2).clamp(0, 1)

    def generate(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the generator: encoder features ``θ(x)`` and reconstruction ``G(x)`` in [-1, 1]."""
        features = self.encode(images)
        return features, self.decoder(features)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Return the encoder's features ``θ(x)`` alone (the Mahalanobis statistics need no reconstruction)."""
        return self.encoder(self.normalize(images))

    def forward(
        self,
        images: torch.Tensor,
        clean: torch.Tensor | None = None,
        fen_features: torch.Tensor | None = None,
        *,
        scored: bool = False,
    ) -> TrainOutput | InferenceBatch:
        """Training forward (``clean`` given: ``images`` is its augmented copy) or inference.

        ``fen_features``: the FEN's features of ``clean`` when the caller already has them (the
        training loop's :class:`FenFeatureCache`); computed here otherwise. ``scored``: the training features are
        those F reads (with a ``fine_tap``, both layers: ``Fegan``'s ``fine_feature_loss``), not the tap's alone.
        """
        if self.training:
            encoder_features, reconstruction = self.generate_scored(images) if scored else self.generate(images)
            target = images if clean is None else clean
            if self.use_fen and fen_features is None:
                fen_features = self.fen_scored_features(target) if scored else self.fen_features(target)
            return TrainOutput(fen_features if self.use_fen else None, encoder_features, reconstruction)
        maps = self.component_maps(images)
        anomaly_map, pred_score = self.anomaly_map_generator.score(maps.residual, maps.feature)
        return InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map)

    def fen_features(self, images: torch.Tensor) -> torch.Tensor:
        """FEN features ``θ*(x)``, computed without gradient (the FEN is frozen)."""
        with torch.no_grad():
            return self.fen(self.normalize(images))

    def fen_scored_features(self, images: torch.Tensor) -> torch.Tensor:
        """``θ*(x)`` as F reads it, without gradient: at the tap, or with a ``fine_tap`` beside it (:func:`_join`)."""
        with torch.no_grad():
            tap, fine = _run_stack(self.fen, self.normalize(images), self.fine_index)
        return _join(tap, fine)

    def generate_scored(
        self, images: torch.Tensor, *, reconstruct: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``θ(x)`` as F reads it (the tap's, or the fine tap's beside it) and ``G(x)`` from the tap's (or ``None``)."""
        tap, fine = _run_stack(self.encoder, self.normalize(images), self.fine_index)
        return _join(tap, fine), self.decoder(tap) if reconstruct else None

    def scored_features(
        self, images: torch.Tensor, fen_features: torch.Tensor | None = None, *, reconstruct: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """``θ*(x)`` and ``θ(x)`` as F compares them, and ``G(x)``: what scoring and its statistics read.

        At the tap; with a ``fine_tap``, each network's features there with its tap features upsampled to that grid
        and appended **[A7d]**. ``fen_features``: the FEN's features of ``images`` when the caller has them (the FEN
        cache), used when they are what F reads (the tap's, or both when the feature loss read both); computed
        otherwise. ``θ*`` is ``None`` without the FEN; ``G(x)`` without ``reconstruct`` (the per-cell pass needs none).
        """
        encoder_features, reconstruction = self.generate_scored(images, reconstruct=reconstruct)
        if not self.use_fen:
            return None, encoder_features, reconstruction
        if fen_features is None or tuple(fen_features.shape[1:]) != tuple(encoder_features.shape[1:]):
            fen_features = self.fen_scored_features(images)
        return fen_features, encoder_features, reconstruction

    def component_maps(self, images: torch.Tensor, fen_features: torch.Tensor | None = None) -> ComponentMaps:
        """Unfused R and F of ``images`` and the reconstruction: inference, ``train_stats``, the F/R curves.

        ``fen_features``: the FEN's features of ``images`` when the caller has them (the FEN cache).
        """
        fen_features, encoder_features, reconstruction = self.scored_features(images, fen_features)
        residual, feature = self.anomaly_map_generator.components(
            images, reconstruction, fen_features, encoder_features
        )
        return ComponentMaps(residual, feature, reconstruction)

    @contextmanager
    def evaluating(self) -> Iterator[FeganModel]:
        """Run in eval mode inside the block, then give every submodule back its own mode.

        ``train()`` after ``eval()`` would not do: the FEN and frozen BatchNorm layers stay in eval
        mode during training, and Lightning does not reset modes when a fit goes on.
        """
        modes = {module: module.training for module in self.modules()}
        self.eval()
        try:
            yield self
        finally:
            for module, mode in modes.items():
                module.training = mode


def _fine_index(fen: nn.Sequential, backbone: str, tap: str, fine_tap: str) -> int | None:
    """Index of ``fine_tap`` in the cut stack, ``None`` for ``"none"``; an error for a layer not before ``tap``.

    ``"previous_block"`` is the last ReLU before the pool that precedes the tap (VGG19 ``relu4_4`` → ``relu3_4``, VGG16
    ``relu4_3`` → ``relu3_3``: the stride before the tap's), none for a tap in block 1. Only a ReLU's or pool's output
    is offered: the FEN's in-place ReLUs write into the tensor before them, not after.
    """
    names = layer_names(fen)
    if fine_tap == "previous_block":
        pools = [index for index, name in enumerate(names[:-1]) if name.startswith("pool")]
        return pools[-1] - 1 if pools else None
    if fine_tap == "none":
        return None
    earlier = [name for name in names[:-1] if name.startswith(("relu", "pool"))]
    if fine_tap not in earlier:
        msg = (
            f"fine_tap '{fine_tap}' is not a layer of {backbone} before the tap '{tap}'. Choose 'previous_block', "
            f"'none' or one of: {', '.join(earlier)} (PatchCore's middle stages on VGG16: relu3_3 beside relu4_3)."
        )
        raise ValueError(msg)
    return names.index(fine_tap)


def _run_stack(
    stack: nn.Sequential, inputs: torch.Tensor, fine_index: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run a VGG stack to its end; return its output and, with ``fine_index``, that layer's output on the way."""
    if fine_index is None:
        return stack(inputs), None
    fine = None
    for index, layer in enumerate(stack):
        inputs = layer(inputs)
        if index == fine_index:
            fine = inputs
    return inputs, fine


def _join(tap: torch.Tensor, fine: torch.Tensor | None) -> torch.Tensor:
    """Return the tap's features alone, or the fine layer's with the tap's bilinearly upsampled to their grid."""
    if fine is None:
        return tap
    upsampled = F.interpolate(tap, size=fine.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([fine, upsampled.to(fine.dtype)], dim=1)


def _mark_fen_weights_loaded(module: FeganModel, incompatible_keys: object) -> None:
    """Post-hook of ``load_state_dict``: the loaded state carries the FEN's weights."""
    del incompatible_keys
    module.fen_weights_loaded = True
