"""``fine_tap`` [A7d]: F reads the residual at an earlier, finer layer beside the tap's, and ships as it is measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.deploy import OpenVINOInferencer
from anomalib.engine import Engine
from torch.nn import functional as F  # noqa: N812

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan.backbone import layer_names
from fegan_anomalib.models.fegan.guards import CheckpointGuards, resolve_fine_feature_loss
from fegan_anomalib.models.fegan.torch_model import FeganModel

from .conftest import checkpoint_of

STAND_IN = {"backbone": "vgg16_bn", "tap": "relu4_3", "pre_trained": False}


def test_the_fine_tap_features_are_each_networks_fine_layer_beside_its_upsampled_tap() -> None:
    """A known answer: the FEN's and the encoder's relu3_3 (stride 4), then their relu4_3 (stride 8) upsampled."""
    torch.manual_seed(0)
    model = FeganModel((32, 32), **STAND_IN, fine_tap="relu3_3").eval()
    assert model.anomaly_map_generator.feature_shape == (256 + 512, 8, 8)
    assert FeganModel((32, 32), **STAND_IN).fine_index == model.fine_index  # the default: the stage before the tap's
    assert FeganModel((32, 32), pre_trained=False, tap="relu5_4").anomaly_map_generator.feature_shape == (1024, 4, 4)
    assert FeganModel((32, 32), pre_trained=False, tap="relu1_2").fine_index is None  # no stage before block 1's
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        fen, encoder, reconstruction = model.scored_features(images)
        fine = layer_names(model.fen).index("relu3_3") + 1
        for network, features in ((model.fen, fen), (model.encoder, encoder)):
            inputs = model.normalize(images)
            tap = F.interpolate(network(inputs), size=(8, 8), mode="bilinear", align_corners=False)
            torch.testing.assert_close(features, torch.cat([network[:fine](inputs), tap], dim=1))
        torch.testing.assert_close(reconstruction, model.generate(images)[1])
        plain = FeganModel((32, 32), **STAND_IN, fine_tap="none")  # the tap's features, cached FEN features kept
        plain.load_state_dict(model.state_dict(), strict=False)
        cached = torch.zeros(2, 512, 4, 4)
        assert plain.eval().scored_features(images, cached)[0] is cached
        assert model.scored_features(images, cached)[0].shape == (2, 768, 8, 8)  # the cache lacks relu3_3: not used


@pytest.mark.parametrize("fine_tap", ["relu4_3", "relu5_1", "conv3_3", "relu9_9"])
def test_a_fine_tap_that_is_not_an_earlier_layer_is_refused_naming_the_choices(fine_tap: str) -> None:
    with pytest.raises(ValueError, match=rf"fine_tap '{fine_tap}' is not a layer of vgg16_bn before .*relu3_3"):
        FeganModel((32, 32), **STAND_IN, fine_tap=fine_tap)


def test_a_checkpoint_rescored_without_its_fine_tap_exports_what_it_tested(
    trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statistics of the other grid measured at test start, thresholds re-learnt, OpenVINO fp32 equal to torch."""
    monkeypatch.chdir(tmp_path)  # OpenVINOInferencer writes ./openvino_cache
    model = Fegan.load_from_checkpoint(checkpoint_of(trained[0]), fine_tap="none", visualizer=False)
    datamodule = MVTecAD(root=synthetic_root, category="texture", train_batch_size=4, eval_batch_size=4, num_workers=0)
    (metrics,) = Engine(default_root_dir=tmp_path, logger=False).test(model, datamodule=datamodule)
    generator = model.model.anomaly_map_generator
    assert generator.feature_shape == (512, 4, 4)  # VGG19 at 32², relu4_4 alone (the checkpoint's: relu3_4 beside)
    assert generator.feature_residual_mean.shape == (1, 512, 4, 4) and generator.memory_bank.shape[1] == 512
    assert not generator.needs_train_stats and 0.0 <= metrics["pixel_AUROC"] <= 1.0
    xml = model.eval().to_openvino(export_root=tmp_path)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(images)
    inferencer = OpenVINOInferencer(xml, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    actual = inferencer.predict(images.numpy())
    np.testing.assert_allclose(actual.pred_score.reshape(-1), expected.pred_score.numpy().reshape(-1), atol=1e-4)
    np.testing.assert_allclose(
        actual.anomaly_map.reshape(3, 32, 32), expected.anomaly_map.numpy().reshape(3, 32, 32), atol=1e-3
    )


def test_the_feature_loss_reads_what_f_reads_unless_told_otherwise() -> None:
    """Not given, L_fea covers the fine tap wherever F reads one; the paper's ``fine_tap: none`` keeps the tap alone."""
    assert resolve_fine_feature_loss(None, "previous_block") is True
    assert resolve_fine_feature_loss(None, "relu3_3") is True
    assert resolve_fine_feature_loss(None, "none") is False  # configs/fegan_mvtec.yaml: the paper's loss, no error
    assert resolve_fine_feature_loss(False, "previous_block") is False  # typed: kept
    # a checkpoint trained at both layers, scored with the tap alone: built without complaint, refused only to train
    model = Fegan(
        image_size=32, backbone="vgg11", tap="relu4_2", pre_trained=False, fine_tap="none", fine_feature_loss=True
    )
    assert model.hparams.fine_feature_loss is True and model.hparams.fine_tap == "none"
    with pytest.raises(ValueError, match="fine_feature_loss=True trains the encoder at fine_tap too"):
        model.on_train_start()


def test_a_fine_tap_adopted_from_a_checkpoint_decides_an_unset_feature_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming a ``fine_tap: none`` checkpoint with the loss left unset trains the paper's loss, not a refusal."""

    def adopt_fine_tap_none(module: Fegan, _checkpoint: dict) -> None:  # what checkpoint_settings adopts from one
        module.hparams.fine_tap = "none"

    monkeypatch.setattr(CheckpointGuards, "on_load_checkpoint", adopt_fine_tap_none)
    unset = Fegan(image_size=32, backbone="vgg11", tap="relu4_2", pre_trained=False)
    assert unset.fine_feature_loss is True  # the default fine_tap: both layers
    unset.on_load_checkpoint({})
    assert unset.fine_feature_loss is False and unset.hparams.fine_feature_loss is False
    unset.on_train_start()  # no refusal
    typed = Fegan(image_size=32, backbone="vgg11", tap="relu4_2", pre_trained=False, fine_feature_loss=True)
    typed.on_load_checkpoint({})
    with pytest.raises(ValueError, match="or set fine_feature_loss=False"):
        typed.on_train_start()


def test_the_feature_loss_at_both_layers_trains_on_what_f_reads(synthetic_root: Path, tmp_path: Path) -> None:
    """fine_feature_loss: L_fea over fine_tap's and the tap's features; the FEN cache keeps what the loss reads."""
    model = FeganModel((32, 32), **STAND_IN, fine_tap="relu3_3").train()
    clean, augmented = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    output = model(augmented, clean, scored=True)
    torch.testing.assert_close(output.fen_features, model.fen_scored_features(clean))
    torch.testing.assert_close(output.encoder_features, model.generate_scored(augmented)[0])
    assert output.encoder_features.shape == (2, 768, 8, 8) and output.encoder_features.requires_grad
    assert model(augmented, clean).encoder_features.shape == (2, 512, 4, 4)  # the paper's: the tap alone
    fegan = Fegan(image_size=32, pre_trained=False, max_epochs=1)  # the defaults: fine_tap relu3_4, L_fea at both
    assert fegan.fine_feature_loss is True and fegan.hparams.fine_feature_loss is True  # recorded as trained
    fegan.visualizer = None
    datamodule = MVTecAD(root=synthetic_root, category="texture", train_batch_size=4, eval_batch_size=4, num_workers=0)
    engine = Engine(default_root_dir=tmp_path, logger=False)
    engine.fit(fegan, datamodule=datamodule)
    (metrics,) = engine.test(fegan, datamodule=datamodule)
    stored = [entry[0] for entry in fegan.fen_cache.store.values()]
    assert stored and all(features.shape == (768, 8, 8) for features in stored)  # VGG19: relu3_4 beside relu4_4
    assert not fegan.model.anomaly_map_generator.needs_train_stats and 0.0 <= metrics["pixel_AUROC"] <= 1.0


def test_a_checkpoint_from_before_the_record_is_rescored_with_another_fine_tap(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    """A 0.3 checkpoint records no scoring settings, and Lightning overwrites its hyper-parameters with the typed
    fine_tap: its statistics of another grid tell it, so they are dropped and measured again (not a misfit error)."""
    checkpoint = torch.load(checkpoint_of(trained[0]), weights_only=False)
    del checkpoint["fegan_scoring"], checkpoint["hyper_parameters"]["image_score_from"]  # 0.3 had neither
    torch.save(checkpoint, tmp_path / "old.ckpt")
    model = Fegan.load_from_checkpoint(tmp_path / "old.ckpt", fine_tap="none", visualizer=False)
    assert "fine_tap" in model.rescored and model.model.anomaly_map_generator.needs_train_stats
    same = Fegan.load_from_checkpoint(tmp_path / "old.ckpt", visualizer=False)
    assert same.rescored == [] and not same.model.anomaly_map_generator.needs_train_stats


def test_a_checkpoint_from_before_image_score_from_keeps_reading_s(trained: tuple[Path, str], tmp_path: Path) -> None:
    """0.4 reads the image score from F by default [A8c]; a checkpoint written before the option existed scored from S
    (Eq. 10) and keeps doing so when loaded alone, while a typed ``image_score_from`` rescores it."""
    checkpoint = torch.load(checkpoint_of(trained[0]), weights_only=False)
    assert checkpoint["fegan_scoring"]["image_score_from"] == "feature_map"  # the default now records F
    for record in (checkpoint["hyper_parameters"], checkpoint["fegan_scoring"]):
        del record["image_score_from"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old = Fegan.load_from_checkpoint(tmp_path / "old.ckpt", visualizer=False)
    assert old.model.anomaly_map_generator.image_score_from == "anomaly_map" and old.rescored == []
    typed = Fegan.load_from_checkpoint(tmp_path / "old.ckpt", image_score_from="feature_map", visualizer=False)
    assert typed.model.anomaly_map_generator.image_score_from == "feature_map"
    assert typed.rescored == ["image_score_from"]
    # a 0.3 checkpoint has no record at all, and Lightning writes the typed value into its hyper-parameters: still S
    del checkpoint["fegan_scoring"]
    torch.save(checkpoint, tmp_path / "older.ckpt")
    older = Fegan.load_from_checkpoint(tmp_path / "older.ckpt", image_score_from="feature_map", visualizer=False)
    assert older.rescored == ["image_score_from"]  # so a test re-learns the thresholds and export refuses before it
    assert Fegan.load_from_checkpoint(tmp_path / "older.ckpt", visualizer=False).rescored == []
