"""Shapes, dtypes and the frozen FEN of FEGAN's networks."""

from __future__ import annotations

import pytest
import torch

from fegan_anomalib import FeganModel
from fegan_anomalib.models.fegan.backbone import build_encoder, build_fen, layer_names
from fegan_anomalib.models.fegan.torch_model import Decoder, Discriminator

# the paper's cut and Eq. 6-8 as printed: a model that scores without measured statistics (DEFAULTS' need them)
PAPER = {"tap": "relu5_4", "feature_distance": "l2", "component_norm": "none"}


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_dtypes(size: int) -> None:
    model = FeganModel((size, size), pre_trained=False, **PAPER)
    images = torch.rand(2, 3, size, size)
    tap = size // 16
    assert model.fen(images).shape == (2, 512, tap, tap)
    assert model.encoder(images).shape == (2, 512, tap, tap)
    decoded = model.decoder(torch.randn(2, 512, tap, tap))
    assert decoded.shape == (2, 3, size, size)
    assert decoded.dtype == torch.float32
    assert model.discriminator(decoded).shape == (2,)

    model.train()
    output = model(images, images)
    assert output.fen_features.shape == output.encoder_features.shape == (2, 512, tap, tap)
    assert output.reconstruction.shape == (2, 3, size, size)

    model.eval()
    model.anomaly_map_generator.image_score_from = "anomaly_map"  # Eq. 10 reads S; the default reads F [A8c]
    prediction = model(images)
    assert prediction.anomaly_map.shape == (2, size, size)
    assert prediction.anomaly_map.dtype == torch.float32
    assert prediction.pred_score.shape == (2,)
    top = prediction.anomaly_map.flatten(1).topk(max(1, round(0.01 * size * size)), dim=1).values.mean(1)
    torch.testing.assert_close(prediction.pred_score, top)  # [A8b]: the mean of the map's top 1 %
    model.anomaly_map_generator.image_score_top_ratio = 0.0  # Eq. 10 as printed: the maximum
    assert torch.equal(model(images).pred_score, model(images).anomaly_map.amax(dim=(-2, -1)))


def test_non_square_discriminator_and_decoder_depth() -> None:
    assert Discriminator((64, 128))(torch.rand(3, 3, 64, 128)).shape == (3,)
    assert Decoder(512, 5)(torch.randn(1, 512, 2, 2)).shape == (1, 3, 64, 64)  # pool5 tap: stride 32


def test_tap_layer_names_and_pool_swap() -> None:
    fen = build_fen("vgg19", "relu5_4", pre_trained=False)
    assert layer_names(fen)[-1] == "relu5_4"
    assert len(fen) == 36
    assert len(build_fen("vgg19", "pool5", pre_trained=False)) == 37
    encoder = build_encoder(fen)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in encoder)
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in encoder) == 4
    # [A2] pretrained init copies the FEN, random init does not
    assert torch.equal(encoder[0].weight, fen[0].weight)
    assert not torch.equal(build_encoder(fen, "random")[0].weight, fen[0].weight)


def test_fen_is_frozen_and_gets_no_gradient() -> None:
    model = FeganModel((32, 32), pre_trained=False).train()
    assert not model.fen.training
    assert all(not p.requires_grad for p in model.fen.parameters())
    output = model(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    loss = (output.fen_features - output.encoder_features).square().mean() + output.reconstruction.mean()
    loss.backward()
    assert all(p.grad is None for p in model.fen.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_encoder_is_built_in_train_mode_and_its_batchnorm_follows_the_option() -> None:
    model = FeganModel((32, 32), backbone="vgg16_bn", tap="relu5_2", pre_trained=False, encoder_batchnorm="train")
    bn = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert model.encoder.training and all(m.training for m in bn)  # not the FEN's eval mode, deep-copied
    assert not model.fen.training
    frozen = FeganModel((32, 32), backbone="vgg16_bn", tap="relu5_2", pre_trained=False, encoder_batchnorm="frozen")
    frozen.train()
    assert not any(m.training for m in frozen.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert frozen.encoder[0].training  # only the BatchNorm layers are held
    with pytest.raises(ValueError, match="encoder_batchnorm"):
        FeganModel((32, 32), pre_trained=False, encoder_batchnorm="sync")
    with pytest.raises(ValueError, match="0/1 statistics"):
        FeganModel((32, 32), backbone="vgg11_bn", pre_trained=False, encoder_init="random")


def test_training_forward_routes_clean_to_fen_and_augmented_to_encoder() -> None:
    model = FeganModel((32, 32), pre_trained=False, channels_last=False).train()
    seen: dict[str, torch.Tensor] = {}
    model.fen.register_forward_pre_hook(lambda _m, args: seen.__setitem__("fen", args[0].clone()))
    model.encoder.register_forward_pre_hook(lambda _m, args: seen.__setitem__("encoder", args[0].clone()))
    clean, augmented = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    model(augmented, clean)
    torch.testing.assert_close(seen["fen"], model.normalize(clean))
    torch.testing.assert_close(seen["encoder"], model.normalize(augmented))


def test_bn_backbone_keeps_fen_statistics_in_training() -> None:
    model = FeganModel((32, 32), backbone="vgg16_bn", tap="relu5_2", pre_trained=False).train()
    before = model.fen[1].running_mean.clone()
    model(torch.rand(2, 3, 32, 32) * 5, torch.rand(2, 3, 32, 32) * 5)
    assert torch.equal(model.fen[1].running_mean, before)


def test_bad_configuration_errors() -> None:
    with pytest.raises(ValueError, match="not divisible by 8"):  # the default tap, block 4's last ReLU: stride 8
        FeganModel((36, 36), pre_trained=False)
    with pytest.raises(ValueError, match="not divisible by 16"):
        FeganModel((40, 40), pre_trained=False, tap="relu5_4")
    with pytest.raises(ValueError, match="relu5_4"):
        FeganModel((32, 32), tap="relu9_9", pre_trained=False)
    with pytest.raises(ValueError, match="vgg19"):
        FeganModel((32, 32), backbone="resnet18", pre_trained=False)


def test_tap_stride_from_the_layer_plan_and_size_checked_before_the_fen_is_built() -> None:
    from fegan_anomalib.models.fegan.backbone import tap_stride

    assert [tap_stride("vgg19", t) for t in ("relu1_1", "pool1", "relu3_4", "relu5_4", "pool5")] == [1, 2, 4, 16, 32]
    assert tap_stride("vgg16_bn", "bn5_2") == 16 and tap_stride("vgg11", "relu4_2") == 8
    assert tap_stride("vgg16", "relu5_4") is None and tap_stride("resnet18", "relu1_1") is None
    # the size error comes first: no weights file is opened (nor would ImageNet weights be downloaded)
    with pytest.raises(ValueError, match=r"image_size \(36, 36\) is not divisible by 8"):
        FeganModel((36, 36), weights="no/such/weights.pth")


def test_channels_last_layout_gives_the_plain_layouts_scores() -> None:
    torch.manual_seed(0)
    fast = FeganModel((32, 32), pre_trained=False, **PAPER).eval()
    plain = FeganModel((32, 32), pre_trained=False, channels_last=False, **PAPER).eval()
    plain.load_state_dict(fast.state_dict())  # same weights, each keeps its own memory layout
    assert fast.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected, actual = plain(images), fast(images)
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(actual.pred_score, expected.pred_score, atol=1e-5, rtol=1e-5)
