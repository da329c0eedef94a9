"""The user-visible paths: anomalib's own CLI, checkpoints, and the registration hook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fegan_anomalib import Fegan

TINY = ["--model.pre_trained", "false", "--model.image_size", "32", "--model.max_epochs", "1"]


def _anomalib(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "anomalib.cli.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _data(root: Path) -> list[str]:
    return [
        "--data",
        "anomalib.data.MVTecAD",
        "--data.root",
        str(root),
        "--data.category",
        "texture",
        "--data.train_batch_size",
        "4",
        "--data.eval_batch_size",
        "4",
        "--data.num_workers",
        "0",
    ]


@pytest.fixture(scope="module")
def trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``anomalib train --model FEGAN`` on the generated data; returns the run folder and its output."""
    workdir = tmp_path_factory.mktemp("cli")
    result = _anomalib(
        "train", "--model", "FEGAN", *TINY, *_data(synthetic_root), "--seed_everything", "1", cwd=workdir
    )
    return workdir, result.stdout + result.stderr


def _checkpoint(workdir: Path) -> Path:
    (checkpoint,) = workdir.glob("results/Fegan/MVTecAD/texture/v0/weights/lightning/model.ckpt")
    return checkpoint


def test_cli_train_prints_metrics_and_writes_heat_maps(trained: tuple[Path, str]) -> None:
    workdir, output = trained
    for metric in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO"):
        assert metric in output
    heat_maps = list(workdir.glob("results/Fegan/MVTecAD/texture/v0/images/*/*.png"))
    assert len(heat_maps) == 8  # 4 good + 2 scratch + 2 stain
    assert _checkpoint(workdir).is_file()


def test_cli_test_and_predict_by_other_names(trained: tuple[Path, str], synthetic_root: Path) -> None:
    workdir, _ = trained
    checkpoint = str(_checkpoint(workdir))
    tested = _anomalib(
        "test", "--model", "Fegan", *TINY, *_data(synthetic_root), "--ckpt_path", checkpoint, cwd=workdir
    )
    assert "pixel_AUROC" in tested.stdout + tested.stderr
    _anomalib(
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
    checkpoint = torch.load(_checkpoint(trained[0]), map_location="cpu", weights_only=False)
    reloaded = Fegan.load_from_checkpoint(_checkpoint(trained[0]))  # anomalib default: weights_only=True
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
