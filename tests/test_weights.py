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
    model = Fegan(image_size=32, pre_trained=True)  # building reads no weights (a checkpoint may bring them)
    with pytest.raises(RuntimeError, match="offline") as error:
        model.on_fit_start()  # a fit from scratch needs them
    message = str(error.value)
    assert "--model.weights PATH" in message
    assert "--model.pre_trained false" in message


def test_fen_weights_are_read_at_fit_start_into_fen_and_encoder(tmp_path: Path) -> None:
    reference = torchvision.models.vgg16_bn().state_dict()
    path = tmp_path / "vgg16_bn.pth"
    torch.save({k: v for k, v in reference.items() if k.startswith("features.")}, path)
    model = Fegan(image_size=32, backbone="vgg16_bn", tap="relu5_2", weights=str(path))
    assert not torch.equal(model.model.fen[0].weight, reference["features.0.weight"])  # not read when built
    state = torch.random.get_rng_state()
    model.on_fit_start()
    assert torch.equal(torch.random.get_rng_state(), state)  # loading draws nothing from the run's RNG
    assert torch.equal(model.model.fen[0].weight, reference["features.0.weight"])
    assert torch.equal(model.model.encoder[0].weight, reference["features.0.weight"])  # encoder_init: pretrained
    assert torch.equal(model.model.fen[1].running_var, reference["features.1.running_var"])
    model.model.fen[0].weight.data.zero_()
    model.on_fit_start()  # once: a second fit (or a restored checkpoint) keeps what the FEN holds
    assert float(model.model.fen[0].weight.abs().sum()) == 0.0
    missing = Fegan(image_size=32, backbone="vgg16_bn", tap="relu5_2", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        missing.on_fit_start()


def test_a_loaded_state_dict_keeps_its_fen_and_encoder_at_test_start(tmp_path: Path) -> None:
    reference = torchvision.models.vgg16_bn().state_dict()
    path = tmp_path / "vgg16_bn.pth"
    torch.save({k: v for k, v in reference.items() if k.startswith("features.")}, path)
    plain = {"feature_distance": "l2", "component_norm": "none"}  # no statistics: a test starts without any
    trained = Fegan(image_size=32, backbone="vgg16_bn", tap="relu5_2", weights=str(path), **plain)
    trained.on_fit_start()
    trained.model.encoder[0].weight.data.add_(1.0)  # as training moved it
    fresh = Fegan(image_size=32, backbone="vgg16_bn", tap="relu5_2", weights=str(path), **plain)
    fresh.load_state_dict(trained.state_dict())
    fresh.on_test_start()  # must not read the weights file over what the state dict brought
    assert torch.equal(fresh.model.encoder[0].weight, trained.model.encoder[0].weight)


def test_checkpoint_settings_take_what_was_not_given_from_the_checkpoint_and_rename_0_1_names() -> None:
    from fegan_anomalib.models.fegan.guards import checkpoint_settings

    model = Fegan(pre_trained=False, sigma=2.0)  # sigma and pre_trained given, the rest left alone
    given = model.given_settings
    assert given == {"pre_trained", "sigma"} and model.hparams.image_size == 256  # filled from DEFAULTS
    saved = {"backbone": "vgg19", "image_size": 128, "pre_trained": False, "sigma": 4.0, "score_lambda": 0.7}
    with pytest.warns(FutureWarning, match="score_lambda"):
        adopted = checkpoint_settings({"hyper_parameters": saved}, model.hparams, given)
    # sigma was given: kept; pre_trained equal; no feature_distance, ridge, fine_tap or image score's map recorded:
    # their values then
    assert adopted == {
        "image_size": 128, "feature_map_weight": 0.7, "feature_distance": "l2", "mahalanobis_ridge": 0.0,
        "fine_tap": "none", "image_score_from": "anomaly_map",
    }  # fmt: skip
    assert checkpoint_settings({"hyper_parameters": {"n_features": 100}}, model.hparams, given) == {}  # not FEGAN's
    # a 0.2 checkpoint recorded every argument: it keeps its own scoring under today's defaults
    scoring = {"tap": "relu5_4", "feature_distance": "l2", "component_norm": "none", "mahalanobis_ridge": 0.0}
    adopted = checkpoint_settings({"hyper_parameters": {"backbone": "vgg19", **scoring}}, model.hparams, given)
    assert adopted == {**scoring, "fine_tap": "none", "image_score_from": "anomaly_map"}  # F at the tap, S's score


def test_a_setting_typed_at_its_default_value_wins_over_the_checkpoint() -> None:
    """`anomalib test --ckpt_path CKPT --model.image_score_top_ratio 0.01`: 0.01 is the default, and it was typed."""
    from fegan_anomalib.models.fegan.guards import checkpoint_settings

    typed = Fegan(pre_trained=False, image_score_top_ratio=0.01, tap="relu4_4")
    saved = {"backbone": "vgg19", "image_score_top_ratio": 0.0, "tap": "relu5_4", "sigma": 4.0}
    saved |= {name: typed.hparams[name] for name in ("feature_distance", "mahalanobis_ridge", "fine_tap")}  # today's
    adopted = checkpoint_settings({"hyper_parameters": saved}, typed.hparams, typed.given_settings)
    # the typed ratio and tap stay (a differing tap is then refused by the fit check); without a record, the image
    # score's map is the one before the option existed
    assert adopted == {"sigma": 4.0, "image_score_from": "anomaly_map"}
