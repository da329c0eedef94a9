"""FEN weights: local files, their errors, and the offline error of the ImageNet path."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan.backbone import build_fen


def test_local_weights_are_loaded(tmp_path: Path) -> None:
    reference = torchvision.models.vgg16_bn().state_dict()
    path = tmp_path / "vgg16_bn.pth"
    torch.save({k: v for k, v in reference.items() if k.startswith("features.")}, path)
    fen = build_fen("vgg16_bn", "relu5_2", weights=path)
    assert torch.equal(fen[0].weight, reference["features.0.weight"])
    assert torch.equal(fen[1].running_var, reference["features.1.running_var"])


def test_weights_with_missing_and_misshapen_keys_are_listed(tmp_path: Path) -> None:
    state = {k: v for k, v in torchvision.models.vgg19().state_dict().items() if k.startswith("features.")}
    del state["features.34.weight"]
    state["features.0.bias"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys: features\.34\.weight") as error:
        build_fen("vgg19", "relu5_4", weights=path)
    assert "features.0.bias (file (3,), model (64,))" in str(error.value)
    assert str(path) in str(error.value)


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        build_fen(weights=tmp_path / "nope.pth")


def test_offline_imagenet_error_names_the_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached file to fall back on
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="offline") as error:
        Fegan(image_size=32, pre_trained=True)
    message = str(error.value)
    assert "--model.weights PATH" in message
    assert "--model.pre_trained false" in message
