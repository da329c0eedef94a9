"""Shared fixtures: generated data only, random-init weights, nothing from the network."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from fegan_anomalib.data import make_synthetic_dataset

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic MVTec-layout data set: 64² images, 8 train, 4 good + 2x2 defective test."""
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"),
        categories=("texture",),
        image_size=64,
        num_train=8,
        num_test_good=4,
        num_test_defect=2,
    )


TINY = ["--model.pre_trained", "false", "--model.image_size", "32", "--trainer.max_epochs", "1"]


def anomalib_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
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


def cli_data(root: Path) -> list[str]:
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


@pytest.fixture(scope="session")
def trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``anomalib train --model FEGAN`` on the generated data; returns the run folder and its output."""
    workdir = tmp_path_factory.mktemp("cli")
    result = anomalib_cli(
        "train", "--model", "FEGAN", *TINY, *cli_data(synthetic_root), "--seed_everything", "1", cwd=workdir
    )
    return workdir, result.stdout + result.stderr


def checkpoint_of(workdir: Path) -> Path:
    (checkpoint,) = workdir.glob("results/Fegan/MVTecAD/texture/v0/weights/lightning/model.ckpt")
    return checkpoint


def quiet_trainer(**kwargs) -> Trainer:
    """A CPU Lightning trainer for training-only unit tests: no logger, bars, summary or validation."""
    defaults = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        "accelerator": "cpu",
        "default_root_dir": tempfile.mkdtemp(prefix="fegan-quiet-"),  # run files (learning curves) not in the cwd
    }
    return Trainer(**{**defaults, **kwargs})


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text`` (separator rows left out), stripped."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|:- "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows
