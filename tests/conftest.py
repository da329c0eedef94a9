"""Shared fixtures: generated data only, random-init weights, nothing from the network."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import pytest
import torch

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
