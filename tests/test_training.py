"""FEGAN's training step under Lightning: what moves, what does not, and what it learns."""

from __future__ import annotations

import pytest
import torch
from anomalib.data import ImageBatch
from lightning.pytorch import Callback, seed_everything
from torch.utils.data import DataLoader

from fegan_anomalib import Fegan

from .conftest import quiet_trainer


class _Recorder(Callback):
    def __init__(self) -> None:
        self.losses: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append({k: float(v) for k, v in outputs.items()})


def _fit(model: Fegan, batches: list[ImageBatch], steps: int) -> _Recorder:
    recorder = _Recorder()
    trainer = quiet_trainer(max_steps=steps, max_epochs=-1, callbacks=[recorder])
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    return recorder


def _model(**kwargs) -> Fegan:
    return Fegan(image_size=32, pre_trained=False, evaluator=False, visualizer=False, **kwargs)


def test_one_step_moves_encoder_decoder_discriminator_not_fen() -> None:
    seed_everything(0)
    model = _model()
    before = {name: p.detach().clone() for name, p in model.model.named_parameters()}
    recorder = _fit(model, [ImageBatch(image=torch.rand(4, 3, 32, 32))], steps=1)
    assert set(recorder.losses[0]) == {
        "generator_loss",
        "content_loss",
        "feature_loss",
        "adversarial_loss",
        "discriminator_loss",
    }
    changed = {name for name, p in model.model.named_parameters() if not torch.equal(p, before[name])}
    for part in ("encoder", "decoder", "discriminator"):
        assert any(name.startswith(part) for name in changed), part
    assert not any(name.startswith("fen") for name in changed)


def test_generator_loss_goes_down_on_a_fixed_batch() -> None:
    seed_everything(0)
    batch = ImageBatch(image=torch.rand(4, 3, 32, 32))
    recorder = _fit(_model(use_mse=False, lr=1e-3), [batch], steps=12)
    losses = [step["generator_loss"] for step in recorder.losses]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_component_switches_drop_their_losses() -> None:
    seed_everything(0)
    model = _model(use_discriminator=False, use_fen=False, use_mse=False)
    assert model.model.discriminator is None
    assert len(model.configure_optimizers()) == 1
    recorder = _fit(model, [ImageBatch(image=torch.rand(2, 3, 32, 32))], steps=1)
    assert set(recorder.losses[0]) == {"generator_loss", "content_loss"}


def test_planted_defect_scores_higher_after_training_on_a_trivial_texture() -> None:
    seed_everything(0)
    grid = torch.arange(64).remainder(8).lt(4).float()
    texture = (0.35 + 0.3 * grid[None, :] * grid[:, None]).expand(3, 64, 64)
    batches = [ImageBatch(image=(texture + 0.02 * torch.randn(8, 3, 64, 64)).clamp(0, 1)) for _ in range(2)]
    model = Fegan(image_size=64, pre_trained=False, evaluator=False, visualizer=False, lr=1e-3)
    _fit(model, batches, steps=30)
    clean = texture.unsqueeze(0).clone()
    defect = clean.clone()
    defect[:, :, 20:32, 24:36] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)
    model.model.eval()
    with torch.no_grad():
        scores = model.model(torch.cat([clean, defect])).pred_score
        anomaly_map = model.model(defect).anomaly_map[0]
    assert scores[1] > scores[0] * 1.2, scores
    assert anomaly_map[20:32, 24:36].mean() > anomaly_map.mean()


def test_nan_loss_stops_with_the_loss_name_and_step() -> None:
    seed_everything(0)
    bad = torch.rand(2, 3, 32, 32)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"generator_loss is nan at global step 0"):
        _fit(_model(use_mse=False), [ImageBatch(image=bad)], steps=1)


def test_trainer_arguments_have_a_finite_budget_and_no_clipping() -> None:
    arguments = _model(max_epochs=7).trainer_arguments
    assert arguments["max_epochs"] == 7
    assert arguments["gradient_clip_val"] == 0
    with pytest.raises(ValueError, match="max_epochs"):
        _model(max_epochs=0)


@pytest.mark.parametrize(("collapse_steps", "reinitialised"), [(1, True), (0, False)])
def test_collapsed_discriminator_is_reinitialised(collapse_steps: int, reinitialised: bool) -> None:
    seed_everything(0)
    model = _model(use_mse=False, d_collapse_loss=1e9, d_collapse_steps=collapse_steps)  # every loss "collapsed"
    _fit(model, [ImageBatch(image=torch.rand(2, 3, 32, 32))], steps=2)
    g_opt, d_opt = model.trainer.optimizers
    assert len(g_opt.state) > 0
    assert (len(d_opt.state) == 0) is reinitialised
    assert ("discriminator_reinit" in model.trainer.callback_metrics) is reinitialised
