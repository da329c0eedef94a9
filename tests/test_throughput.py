"""Training-speed features: the FEN feature cache and mixed precision with two manual optimisers."""

from __future__ import annotations

import logging

import pytest
import torch
from anomalib.data import ImageBatch
from torch.utils.data import DataLoader

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan.fen_cache import FenFeatureCache

from .conftest import quiet_trainer


def _counting(function):
    calls = []

    def wrapped(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return function(images)

    return wrapped, calls


def test_cache_computes_each_image_once_and_returns_what_the_fen_gives() -> None:
    fen = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    compute, calls = _counting(lambda images: fen(images).detach())
    cache = FenFeatureCache(max_megabytes=1)
    images = torch.rand(3, 3, 8, 8)
    first = cache(images, compute)
    torch.testing.assert_close(first, fen(images).detach())
    again = cache(images[[2, 0]], compute)  # same images, other order and batch
    assert torch.equal(again, first[[2, 0]])
    assert calls == [1, 1, 1] and (cache.hits, cache.misses) == (2, 3)


def test_changed_image_is_a_miss_not_a_stale_hit() -> None:
    cache = FenFeatureCache(max_megabytes=1)
    image = torch.zeros(1, 3, 4, 4)
    cache(image, lambda x: x.sum(dim=(1, 2, 3)))
    changed = image.clone()
    changed[0, 1, 2, 3] = 1e-6  # one value of one pixel
    assert cache(changed, lambda x: x.sum(dim=(1, 2, 3))).item() == pytest.approx(1e-6)
    assert cache.misses == 2 and cache.hits == 0


def test_cache_respects_its_memory_budget_and_zero_turns_it_off() -> None:
    cache = FenFeatureCache(max_megabytes=1024 / 2**20)  # 1 KiB: one 1x16x16 float feature map
    compute, calls = _counting(lambda x: x[:, :1].repeat(1, 1, 1, 1))
    images = torch.rand(2, 3, 16, 16)
    cache(images, compute)
    cache(images, compute)
    assert len(cache.store) == 1 and cache.bytes == 1024 and calls == [1, 1, 1]
    off = FenFeatureCache(max_megabytes=0)
    compute, calls = _counting(lambda x: x)
    off(images, compute)
    off(images, compute)
    assert calls == [2, 2] and not off.store
    with pytest.raises(ValueError, match="fen_cache_mb must be >= 0"):
        FenFeatureCache(max_megabytes=-1)


def test_cache_turns_itself_off_when_no_image_repeats(caplog: pytest.LogCaptureFixture) -> None:
    """A random train transform makes every image new each epoch: the cache would only fill memory."""
    cache = FenFeatureCache(max_megabytes=1)
    for epoch in range(2):
        cache(torch.rand(2, 3, 4, 4), lambda x: x)
        with caplog.at_level(logging.INFO):
            cache.end_epoch(epoch)
    assert not cache.enabled and not cache.store
    assert "turned off" in caplog.text
    repeating = FenFeatureCache(max_megabytes=1)
    images = torch.rand(2, 3, 4, 4)
    for epoch in range(2):
        repeating(images, lambda x: x)
        repeating.end_epoch(epoch)
    assert repeating.enabled and len(repeating.store) == 2


BATCHES = [ImageBatch(image=torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(i))) for i in range(2)]


def _train(precision: str, fen_cache_mb: float = 1024.0, max_epochs: int = 2) -> tuple[Fegan, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = Fegan(
        image_size=32,
        pre_trained=False,
        evaluator=False,
        visualizer=False,
        max_epochs=max_epochs,
        fen_cache_mb=fen_cache_mb,
    )
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    trainer = quiet_trainer(max_epochs=max_epochs, precision=precision)
    trainer.fit(model, DataLoader(BATCHES, batch_size=None))
    return model, before


def test_training_reuses_fen_features_from_the_second_epoch() -> None:
    model, _ = _train("32-true")
    assert (model.fen_cache.misses, model.fen_cache.hits) == (4, 4)  # 4 images: computed once, reused once


def test_bf16_mixed_trains_both_networks_with_fp32_weights_and_finite_losses() -> None:
    """Lightning's bf16-mixed with FEGAN's two manual optimisers: G and D both step, weights stay fp32."""
    model, before = _train("bf16-mixed")
    after = model.model.state_dict()
    for prefix in ("encoder.", "decoder.", "discriminator."):
        changed = [
            k
            for k in before
            if k.startswith(prefix) and before[k].is_floating_point() and not torch.equal(before[k], after[k])
        ]
        assert changed, f"{prefix} did not train under bf16-mixed"
    assert all(v.dtype == torch.float32 for v in after.values() if v.is_floating_point())
    fen = [k for k in before if k.startswith("fen.")]
    assert all(torch.equal(before[k], after[k]) for k in fen)
    logged = model.trainer.logged_metrics
    for name in ("generator_loss", "feature_loss", "content_loss", "adversarial_loss", "discriminator_loss"):
        assert torch.isfinite(logged[name]) and logged[name].dtype == torch.float32, name


def test_losses_and_maps_are_float32_under_bf16_autocast() -> None:
    model = Fegan(image_size=32, pre_trained=False, evaluator=False, visualizer=False, max_epochs=1).model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        residual, feature, reconstruction = model.component_maps(torch.rand(2, 3, 32, 32))
    assert reconstruction.dtype == torch.bfloat16  # autocast did run the networks in bf16
    assert residual.dtype == feature.dtype == torch.float32  # maps: no bf16 ties in AUROC


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed (fp16 with gradient scaling) needs a CUDA GPU")
def test_fp16_mixed_with_gradient_scaling_trains_on_gpu() -> None:
    torch.manual_seed(0)
    model = Fegan(image_size=32, pre_trained=False, evaluator=False, visualizer=False, max_epochs=2)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    trainer = quiet_trainer(max_epochs=2, precision="16-mixed", accelerator="gpu", devices=1)
    trainer.fit(model, DataLoader(BATCHES, batch_size=None))
    after = {k: v.cpu() for k, v in model.model.state_dict().items()}
    for prefix in ("encoder.", "decoder.", "discriminator."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
    assert all(torch.isfinite(v).all() for k, v in after.items() if v.is_floating_point() and "stats" not in k)
