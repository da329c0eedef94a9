"""FEGAN backbone: the VGG convolution stack behind the FEN and the generator encoder.

FEGAN (Fan, Zhang, Dai, IEEE Access 2024) uses torchvision's VGG19 ``features`` twice: frozen
as the feature-extraction network (FEN, ``θ*``) and, with every max-pool swapped for an
average pool, as the trainable generator encoder (``θ``). Both are cut at a tap layer named
like the paper's figures (``relu5_4``, ``pool5``, any ``reluK_L`` or ``poolK``).

anomalib's ``TimmFeatureExtractor`` cannot serve here: it returns timm's VGG stages, not an
arbitrary ``reluK_L`` cut, and it cannot load a local torchvision state dict. This module
therefore builds the stack from torchvision directly and owns the weight-loading rules of
the spec: ImageNet download, a local state dict (``weights=PATH``) or random init, never a
silent fallback from one to another.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

BACKBONES = ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")
# torchvision names its VGG layer plans A (vgg11), B (vgg13), D (vgg16), E (vgg19)
VGG_CONFIGS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def layer_names(features: nn.Sequential) -> list[str]:
    """Name every module of a torchvision VGG ``features`` stack as the paper does.

    ``convK_L``, ``bnK_L``, ``reluK_L`` for the L-th convolution of block K, ``poolK`` for the
    pool that closes block K.
    """
    names: list[str] = []
    block, conv = 1, 0
    for module in features:
        if isinstance(module, nn.Conv2d):
            conv += 1
            names.append(f"conv{block}_{conv}")
        elif isinstance(module, nn.BatchNorm2d):
            names.append(f"bn{block}_{conv}")
        elif isinstance(module, nn.ReLU):
            names.append(f"relu{block}_{conv}")
        elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:  # pragma: no cover - torchvision's VGG has no other module types
            names.append(type(module).__name__.lower())
    return names


def _vgg_features(backbone: str) -> nn.Sequential:
    """Build an untrained torchvision VGG ``features`` stack."""
    if backbone not in BACKBONES:
        msg = f"Unknown backbone '{backbone}'. FEGAN supports the torchvision VGGs: {', '.join(BACKBONES)}."
        raise ValueError(msg)
    import torchvision  # noqa: PLC0415 - heavy import, needed only when a model is built

    return getattr(torchvision.models, backbone)(weights=None).features


def _imagenet_features(backbone: str) -> nn.Sequential:
    """Download (or take from torch's cache) torchvision's ImageNet weights for ``backbone``."""
    import torchvision  # noqa: PLC0415

    try:
        return getattr(torchvision.models, backbone)(weights="IMAGENET1K_V1").features
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a broken download a RuntimeError
        msg = (
            f"Could not load torchvision's ImageNet weights for '{backbone}' ({error}). This machine "
            f"looks offline. Pass a local state dict with torchvision's keys (`--model.weights PATH`, "
            f"e.g. the file `torch.hub` saves under ~/.cache/torch/hub/checkpoints), or train from "
            f"random init with `--model.pre_trained false`."
        )
        raise RuntimeError(msg) from error


def load_features_state_dict(features: nn.Sequential, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load torchvision-keyed weights (``features.<i>.<param>``) into a (cut) ``features`` stack.

    Keys beyond the cut (later convolutions, the classifier) are ignored; a missing or
    misshapen key inside the cut is an error that lists every offending key.
    """
    own = features.state_dict()
    missing = [f"features.{key}" for key in own if f"features.{key}" not in state_dict]
    misshapen = [
        f"features.{key} (file {tuple(state_dict[f'features.{key}'].shape)}, model {tuple(value.shape)})"
        for key, value in own.items()
        if f"features.{key}" in state_dict and state_dict[f"features.{key}"].shape != value.shape
    ]
    if missing or misshapen:
        problems = []
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if misshapen:
            problems.append(f"misshapen keys: {', '.join(misshapen)}")
        msg = (
            f"Weights file {source} does not fit the FEGAN backbone up to its tap layer: {'; '.join(problems)}. "
            f"Pass a state dict of the same torchvision backbone (keys 'features.<index>.<param>'), or "
            f"choose the `backbone`/`tap` it was saved for."
        )
        raise ValueError(msg)
    features.load_state_dict({key: state_dict[f"features.{key}"] for key in own})


def build_fen(
    backbone: str = "vgg19",
    tap: str = "relu5_4",
    pre_trained: bool = True,
    weights: str | Path | None = None,
) -> nn.Sequential:
    """Build the FEN ``θ*``: the VGG ``features`` stack cut after ``tap``, with the requested weights.

    Args:
        backbone: torchvision VGG name. Defaults to ``"vgg19"`` (the paper's).
        tap: last layer kept, e.g. ``"relu5_4"`` **[A1]** or ``"pool5"``.
        pre_trained: ImageNet weights from torchvision when ``weights`` is ``None``.
        weights: a local state dict with torchvision's keys; takes precedence over ``pre_trained``.

    Returns:
        The cut stack, in eval mode, with ``requires_grad`` off.

    """
    if weights is not None:
        features = _vgg_features(backbone)
    elif pre_trained:
        features = _imagenet_features(backbone)
    else:
        features = _vgg_features(backbone)
    names = layer_names(features)
    if tap not in names:
        taps = [name for name in names if name.startswith(("relu", "pool"))]
        msg = f"Tap layer '{tap}' does not exist in {backbone}. Choose one of: {', '.join(taps)}."
        raise ValueError(msg)
    features = features[: names.index(tap) + 1]
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            msg = f"Weights file {path} does not exist. Pass an existing state dict, or `pre_trained` instead."
            raise FileNotFoundError(msg)
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state_dict, Mapping):
            msg = f"Weights file {path} holds a {type(state_dict).__name__}, not a state dict."
            raise ValueError(msg)
        load_features_state_dict(features, state_dict.get("state_dict", state_dict), str(path))
    features.eval()
    features.requires_grad_(False)
    return features


ENCODER_BATCHNORMS = ("train", "frozen")


def build_encoder(fen: nn.Sequential, init: str = "pretrained") -> nn.Sequential:
    """Build the generator encoder ``θ`` from the FEN: same stack, max-pool → ``AvgPool2d(2)``.

    **[A2]** ``init="pretrained"`` copies the FEN's weights (the paper's encoder "capitalizes on the
    deep feature extraction prowess of VGG19"); ``init="random"`` re-initialises the convolutions
    as torchvision does, DFC's choice for its analogy network.

    The copy is returned in train mode. The FEN is in eval mode, a deep copy keeps that, and
    Lightning (>= 2.2) no longer calls ``.train()`` when fitting starts: without this the encoder
    of a BatchNorm backbone trained on frozen statistics (and with ``init="random"`` on 0/1
    statistics that never moved). Whether its BatchNorm layers then train or stay frozen is an explicit
    choice of the model (``encoder_batchnorm``), not a side effect of copying.
    """
    if init not in {"pretrained", "random"}:
        msg = f"encoder_init must be 'pretrained' or 'random', got '{init}'."
        raise ValueError(msg)
    layers: list[nn.Module] = []
    for module in fen:
        if isinstance(module, nn.MaxPool2d):
            layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
        elif isinstance(module, nn.ReLU):
            layers.append(nn.ReLU(inplace=False))
        else:
            layers.append(copy.deepcopy(module))
    encoder = nn.Sequential(*layers)
    if init == "random":
        for module in encoder.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
                module.reset_running_stats()
    encoder.requires_grad_(True)
    return encoder.train()


def tap_stride(backbone: str, tap: str) -> int | None:
    """Downsampling factor at ``tap`` of a torchvision VGG, from its configuration alone; ``None`` if no such tap.

    Lets the image size be checked before any network is built (or weights downloaded); an unknown
    backbone or tap is left to ``build_fen``, which names the choices.
    """
    from torchvision.models.vgg import cfgs  # noqa: PLC0415 - the layer plan only, no network is built

    plan = cfgs.get(VGG_CONFIGS.get(backbone.removesuffix("_bn"), ""))
    if plan is None:
        return None
    block, conv, stride = 1, 0, 1
    for entry in plan:
        if entry == "M":
            stride *= 2
            if tap == f"pool{block}":
                return stride
            block, conv = block + 1, 0
        else:
            conv += 1
            if tap in {f"conv{block}_{conv}", f"bn{block}_{conv}", f"relu{block}_{conv}"}:
                return stride
    return None


def tap_stride_and_channels(features: nn.Sequential) -> tuple[int, int]:
    """Return the total downsampling factor and the channel count at the end of the stack."""
    stride, channels = 1, 3
    for module in features:
        if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
            stride *= 2
        elif isinstance(module, nn.Conv2d):
            channels = module.out_channels
    return stride, channels
