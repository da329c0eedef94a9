"""FEGAN under Lightning's DDP on two CPU processes (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from .conftest import checkpoint_of


def test_two_process_ddp_keeps_ranks_identical(tmp_path: Path) -> None:
    script = Path(__file__).with_name("ddp_train.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PL_DISABLE_FORK": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key, value in first["state"].items():
        # gradients and BN buffers synchronised, and the statistics measured at the fit's end (the same on both)
        torch.testing.assert_close(value, second["state"][key], rtol=0, atol=0, equal_nan=True, msg=key)
    assert not torch.equal(first["mask"], second["mask"])  # M-SE draws differ per rank


def test_two_process_statistics_equal_one_process_and_leave_each_image_out(
    trained: tuple[Path, str], synthetic_root: Path, tmp_path: Path
) -> None:
    """DDP with an anomalib datamodule: each image on one rank under one id; the memory and scores of one process."""
    script = Path(__file__).with_name("ddp_statistics.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PL_DISABLE_FORK": "1"}
    for devices in (1, 2):
        result = subprocess.run(
            [sys.executable, str(script), str(tmp_path), str(checkpoint_of(trained[0])), str(synthetic_root),
             str(devices)],
            env=env, capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    single = torch.load(tmp_path / "devices1_rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"devices2_rank{r}.pt", weights_only=True) for r in (0, 1)]
    # each of the 8 training images on one rank, with the id one process gives it
    indices = torch.cat([rank["indices"] for rank in ranks])
    assert sorted(indices.tolist()) == list(range(8))
    single_id = dict(zip(single["indices"].tolist(), single["ids"].tolist(), strict=True))
    for rank in ranks:
        assert all(single_id[i] == d for i, d in zip(rank["indices"].tolist(), rank["ids"].tolist(), strict=True))
    assert single["statistics"]["memory_bank"].shape[0] == 4  # the new memory_size, not the checkpoint's
    for rank in ranks:  # the memory, the statistics and the scores of one process, on every rank
        # to float tolerance: the ranks' batches hold other images than one process's, and float32 features of another
        # batch composition differ in their last bits, which a near-constant channel's floored 1/std (~1e4) magnifies
        for key, value in single["statistics"].items():
            torch.testing.assert_close(rank["statistics"][key], value, rtol=1e-3, atol=1e-5, msg=key)
        torch.testing.assert_close(rank["scores"], single["scores"], rtol=1e-3, atol=1e-2)
        torch.testing.assert_close(rank["maps"], single["maps"], rtol=1e-3, atol=1e-2)
        assert rank["left_out"].numel() > 0 and rank["left_out"].min() > 0  # no image is its own neighbour
