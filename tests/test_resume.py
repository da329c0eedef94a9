"""Determinism and resuming: the same seed gives the same model, a resumed run the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.data import ImageBatch, MVTecAD
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from fegan_anomalib import Fegan

from .conftest import quiet_trainer

BATCHES = [ImageBatch(image=torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(i))) for i in range(3)]


def _checkpoint_at(root: Path, step: int | None) -> list[ModelCheckpoint]:
    """One checkpoint at ``step`` (each FEGAN checkpoint is ~350 MB: the suite keeps only the one it resumes from)."""
    if step is None:
        return []
    return [ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_train_steps=step, filename="{step}")]


def _fit(root: Path, max_steps: int = -1, ckpt_path: Path | None = None, checkpoint_step: int | None = None) -> Fegan:
    seed_everything(1)
    model = Fegan(image_size=32, pre_trained=False, evaluator=False, visualizer=False, max_epochs=2)
    callbacks = _checkpoint_at(root, checkpoint_step)
    trainer = quiet_trainer(
        max_epochs=2,
        max_steps=max_steps,
        default_root_dir=root,
        enable_checkpointing=bool(callbacks),
        callbacks=callbacks,
    )
    trainer.fit(model, DataLoader(BATCHES, batch_size=None), ckpt_path=ckpt_path)
    return model


def _same(first: Fegan, second: Fegan, statistics_rtol: float | None = 0.0) -> bool:
    """Bit-equal weights; the scoring statistics within ``statistics_rtol`` (bit-equal by default, None: not read)."""
    second_state = second.model.state_dict()
    for key, saved in first.model.state_dict().items():
        value, other = saved.double(), second_state[key].double()
        statistics = ".anomaly_map_generator." in f".{key}"
        if statistics and statistics_rtol is None:
            continue
        rtol = statistics_rtol if statistics else 0.0
        atol = rtol * float(value.nan_to_num(0.0).abs().max()) if value.numel() else 0.0  # means near 0
        if not torch.allclose(value, other, rtol=rtol, atol=atol, equal_nan=True):
            return False
    return True


def test_same_seed_same_weights_and_scores(tmp_path: Path) -> None:
    first, second = _fit(tmp_path / "a"), _fit(tmp_path / "b")
    assert _same(first, second)
    images = torch.rand(2, 3, 32, 32)
    first.model.eval()
    second.model.eval()
    for model in (first, second):  # this loop never validates: score with Eq. 6's raw F, which needs no statistics
        model.model.anomaly_map_generator.component_norm = "none"
        model.model.anomaly_map_generator.feature_distance = "l2"
    scores = first.model(images).pred_score
    assert torch.isfinite(scores).all() and torch.equal(scores, second.model(images).pred_score)


def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    uninterrupted = _fit(tmp_path / "full")
    _fit(tmp_path / "stopped", max_steps=6, checkpoint_step=6)  # 3 batches x (G step + D step): one epoch
    (checkpoint,) = (tmp_path / "stopped").glob("step=6.ckpt")
    resumed = _fit(tmp_path / "resumed", ckpt_path=checkpoint)
    assert resumed.global_step == uninterrupted.global_step == 12
    assert _same(uninterrupted, resumed)


def _fit_datamodule(
    root: Path,
    data: Path,
    max_steps: int = -1,
    ckpt_path: Path | None = None,
    checkpoint_step: int | None = None,
    precision: str = "32-true",
) -> Fegan:
    """Two epochs over an anomalib datamodule (shuffled, 4 batches per epoch), optionally checkpointing."""
    seed_everything(3)
    model = Fegan(image_size=32, pre_trained=False, evaluator=False, visualizer=False, max_epochs=2)
    datamodule = MVTecAD(root=data, category="texture", num_workers=0, train_batch_size=2, eval_batch_size=8)
    callbacks = _checkpoint_at(root, checkpoint_step)
    trainer = quiet_trainer(
        max_epochs=2,
        max_steps=max_steps,
        default_root_dir=root,
        enable_checkpointing=bool(callbacks),
        callbacks=callbacks,
        precision=precision,
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_run_stopped_mid_epoch_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, synthetic_root: Path, precision: str
) -> None:
    """Bit-exact in fp32 and in the CPU configs' bf16-mixed, with the FEN cache on (its default).

    The resumed run starts with an empty cache and recomputes what the uninterrupted one reused.
    """
    uninterrupted = _fit_datamodule(tmp_path / "full", synthetic_root, precision=precision)
    assert uninterrupted.fen_cache.hits > 0
    # 8 images in batches of 2: 4 batches (8 optimiser steps) per epoch; stop after 3 batches of epoch 2
    _fit_datamodule(tmp_path / "stopped", synthetic_root, max_steps=14, checkpoint_step=14, precision=precision)
    (checkpoint,) = (tmp_path / "stopped").glob("step=14.ckpt")
    state = torch.load(checkpoint, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert state["_num_yielded"] == 3 and state["_sampler_iter_state"]["sampler_state"]["yielded"] == 6  # 3 x 2
    resumed = _fit_datamodule(tmp_path / "resumed", synthetic_root, ckpt_path=checkpoint, precision=precision)
    assert resumed.global_step == uninterrupted.global_step == 16
    # the statistics measured when the fit ends read the FEN's features from the cache; the resumed run's cache met
    # no stored image in its one epoch and switched itself off, so its pass computes them in batches: the same
    # features up to float rounding, amplified in the inverse std of near-constant cells (fp32); under bf16
    # autocast the pass itself rounds to bf16, so there only the weights are compared
    assert _same(uninterrupted, resumed, statistics_rtol=1e-2 if precision == "32-true" else None)
    assert not _same(
        uninterrupted, _fit_datamodule(tmp_path / "one-epoch", synthetic_root, max_steps=8, precision=precision)
    )
