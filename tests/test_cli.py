"""The user-visible paths: anomalib's own CLI, checkpoints, and the registration hook."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fegan_anomalib import Fegan

from .conftest import TINY, anomalib_cli, checkpoint_of, cli_data


def test_cli_train_prints_metrics_and_writes_heat_maps(trained: tuple[Path, str]) -> None:
    workdir, output = trained
    for metric in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO"):
        assert metric in output
    assert "override existing callbacks" not in output  # fit then test in one Trainer (Fegan.configure_callbacks)
    heat_maps = list(workdir.glob("results/Fegan/MVTecAD/texture/v0/images/*/*.png"))
    assert len(heat_maps) == 8  # 4 good + 2 scratch + 2 stain
    assert checkpoint_of(workdir).is_file()
    record = json.loads((workdir / "results/Fegan/MVTecAD/texture/v0/test_metrics.json").read_text())
    assert record["model"] == "Fegan" and record["category"] == "texture"
    for metric in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "pixel_BestIoU", "pixel_ThresholdIoU"):
        assert str(record["metrics"][metric])[:6] in output, metric  # the figures the CLI printed
    curves = (workdir / "results/Fegan/MVTecAD/texture/v0/learning_curves.csv").read_text().splitlines()
    # one epoch row: `--trainer.max_epochs 1` (TINY) wins, the model sets no budget of its own
    assert len(curves) == 2 and "val_image_AUROC" in curves[0] and "feature_loss" in curves[0]


def test_cli_test_and_predict_by_other_names(trained: tuple[Path, str], synthetic_root: Path) -> None:
    workdir, _ = trained
    checkpoint = str(checkpoint_of(workdir))
    tested = anomalib_cli(
        "test", "--model", "Fegan", *TINY, *cli_data(synthetic_root), "--ckpt_path", checkpoint, cwd=workdir
    )
    assert "pixel_AUROC" in tested.stdout + tested.stderr
    anomalib_cli(
        "predict",
        "--model",
        "fegan_anomalib.Fegan",
        *TINY,
        "--ckpt_path",
        checkpoint,
        "--data",
        str(synthetic_root / "texture" / "test" / "scratch"),
        cwd=workdir,
    )


def test_checkpoint_reloads_weights_only_and_predicts_the_same(trained: tuple[Path, str]) -> None:
    checkpoint = torch.load(checkpoint_of(trained[0]), map_location="cpu", weights_only=False)
    reloaded = Fegan.load_from_checkpoint(checkpoint_of(trained[0]))  # anomalib default: weights_only=True
    assert reloaded.input_size == (32, 32)
    fresh = Fegan(image_size=32, pre_trained=False)
    fresh.load_state_dict(checkpoint["state_dict"])
    images = torch.rand(3, 3, 32, 32)
    reloaded.model.eval()
    fresh.model.eval()
    with torch.no_grad():
        first, second = reloaded.model(images), fresh.model(images)
    torch.testing.assert_close(first.pred_score, second.pred_score)
    torch.testing.assert_close(first.anomaly_map, second.anomaly_map)
    assert not torch.equal(
        reloaded.model.decoder.layers[0].weight, Fegan(image_size=32, pre_trained=False).model.decoder.layers[0].weight
    )  # trained weights, not a fresh init


def test_registration_hook_imports_nothing_heavy() -> None:
    code = "import sys; print(sorted(m for m in ('torch', 'anomalib', 'fegan_anomalib') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    code = "import sys, anomalib.models as m; print(m.Fegan.__module__, 'fegan_anomalib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.stdout.split() == ["fegan_anomalib.models.fegan.lightning_model", "True"]


def test_checkpoint_of_another_model_or_backbone_is_refused(trained: tuple[Path, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"backbone: checkpoint 'vgg19', this model 'vgg16'; tap: .*unexpected"):
        Fegan.load_from_checkpoint(checkpoint_of(trained[0]), backbone="vgg16", tap="relu5_3")
    foreign = tmp_path / "padim.ckpt"
    torch.save(
        {
            "state_dict": {"model.gaussian.mean": torch.zeros(3)},
            "hyper_parameters": {"n_features": 100},
            "pytorch-lightning_version": "2.6.6",
        },
        foreign,
    )
    with pytest.raises(ValueError, match="not a FEGAN checkpoint"):
        Fegan.load_from_checkpoint(foreign, image_size=32, pre_trained=False)


NO_NETWORK = """
import socket


def _unreachable(*args, **kwargs):
    raise OSError("network is unreachable (fegan-anomalib test)")


socket.socket.connect = _unreachable
socket.create_connection = _unreachable
"""


def test_checkpoint_commands_work_offline_with_no_model_flags(
    trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path
) -> None:
    """test, predict and export from a checkpoint: the FEN comes from it, its settings (32², ...) too, no download."""
    checkpoint = torch.load(checkpoint_of(trained[0]), map_location="cpu", weights_only=False)
    checkpoint["hyper_parameters"]["pre_trained"] = True  # as trained online with torchvision's ImageNet weights
    path = tmp_path / "imagenet_run.ckpt"
    torch.save(checkpoint, path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_NETWORK)  # every socket connect fails in the CLI's process
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "TORCH_HOME": str(tmp_path)}
    tested = anomalib_cli(
        "test", "--model", "FEGAN", "--ckpt_path", str(path), *cli_data(synthetic_root), cwd=tmp_path, env=env
    )  # fmt: skip
    assert "pixel_AUROC" in tested.stdout + tested.stderr
    predicted = anomalib_cli(
        "predict", "--model", "FEGAN", "--ckpt_path", str(path),
        "--data", str(synthetic_root / "texture" / "test" / "scratch"),
        "--default_root_dir", str(tmp_path / "predict"), cwd=tmp_path, env=env,
    )  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "predict").rglob("images/**/*.png")), predicted.stderr[-2000:]
    anomalib_cli(
        "export", "--model", "FEGAN", "--ckpt_path", str(path), "--export_type", "openvino",
        "--default_root_dir", str(tmp_path / "export"), cwd=tmp_path, env=env,
    )  # fmt: skip
    (xml,) = (tmp_path / "export").rglob("model.xml")
    assert xml.stat().st_size > 0


def test_a_default_model_takes_the_checkpoints_size_in_the_trainer_and_downloads_nothing(
    trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As anomalib's CLI does: a default Fegan (256², ImageNet FEN) given a 32² checkpoint to predict with."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    def offline(*args, **kwargs):
        raise AssertionError("nothing may be downloaded: the checkpoint brings the FEN's weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    model = Fegan()
    pre_processor = model.pre_processor  # the trainer holds this object as a callback
    datamodule = MVTecAD(root=synthetic_root, category="texture", eval_batch_size=4, num_workers=0)
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    predictions = engine.predict(model, datamodule=datamodule, ckpt_path=checkpoint_of(trained[0]))
    assert model.pre_processor is pre_processor
    assert tuple(predictions[0].image.shape[-2:]) == (32, 32)  # resized by the trainer's pre-processor to 32²
    assert tuple(predictions[0].anomaly_map.shape[-2:]) == (32, 32)
    assert model.hparams.image_size == 32


TRAIN_CONFIGS = sorted(p for p in Path(__file__).parents[1].joinpath("configs").glob("*.yaml") if p.stem != "benchmark")


@pytest.mark.parametrize("config", TRAIN_CONFIGS)
def test_every_config_parses_with_anomalib_cli(config: Path, tmp_path: Path) -> None:
    result = anomalib_cli("train", "--config", str(config), "--print_config", cwd=tmp_path)
    parsed = yaml.safe_load(result.stdout)
    assert parsed["model"]["class_path"] == "fegan_anomalib.Fegan"
    assert parsed["trainer"]["max_epochs"] == yaml.safe_load(config.read_text())["trainer"]["max_epochs"]


# the paper's settings (Sec. IV.B, Eq. 6-10): what configs/fegan_mvtec.yaml gives the model, the data, the trainer
PAPER = {
    "model": {
        "image_size": 256,
        "backbone": "vgg19",
        "tap": "relu5_4",
        "pre_trained": True,
        "lambda_fea": 30.0,
        "lambda_con": 30.0,
        "lambda_adv": 1.0,
        "adversarial_loss": "bce",
        "feature_map_weight": 0.6,
        "sigma": 0.0,
        "feature_distance": "l2",
        "component_norm": "none",
        "image_score_top_ratio": 0.0,
        "image_score_from": "anomaly_map",
        "augmenter_area_ratio": 0.2,
        "augmenter_max_patch_ratio": 0.01,
        "lr": 0.0002,
        "beta1": 0.5,
        "beta2": 0.999,
        "weight_decay": 1e-05,
    },
    "data": {"train_batch_size": 16},
    "trainer": {"max_epochs": 200},
}


def test_the_paper_config_holds_the_papers_values_as_the_cli_parses_them(tmp_path: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "fegan_mvtec.yaml"
    parsed = yaml.safe_load(anomalib_cli("train", "--config", str(config), "--print_config", cwd=tmp_path).stdout)
    sections = {
        "model": parsed["model"]["init_args"],
        "data": parsed["data"]["init_args"],
        "trainer": parsed["trainer"],
    }
    for section, values in PAPER.items():
        for name, value in values.items():
            assert sections[section][name] == value, f"{section}.{name}: {sections[section][name]!r}, paper {value!r}"


def test_predict_on_a_folder_reports_unreadable_files_and_predicts_the_rest(
    trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for name in ("000.png", "001.png"):
        shutil.copy(synthetic_root / "texture" / "test" / "good" / name, folder / name)
    (folder / "002.png").write_bytes(b"")
    (folder / "003.png").write_bytes(b"not an image")
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = anomalib_cli(
        "predict", "--model", "FEGAN", *TINY, "--ckpt_path", str(checkpoint_of(trained[0])),
        "--data", str(folder), "--default_root_dir", str(workdir / "results"), cwd=workdir,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert "2 unreadable image(s) were not predicted" in log
    report = next(workdir.rglob("unreadable_images.csv")).read_text()
    assert f'"{folder / "002.png"}","empty file (0 bytes)"' in report
    assert str(folder / "003.png") in report and "unreadable image" in report
    predicted = sorted(p.name for p in workdir.rglob("images/**/*.png"))
    assert predicted == ["000.png", "001.png"], predicted
