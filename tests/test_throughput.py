"""Training-speed features: the FEN feature cache and mixed precision with two manual optimisers."""

from __future__ import annotations

import logging

import pytest
import torch
from anomalib.data import ImageBatch
from lightning.pytorch import Callback
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan.fen_cache import FenFeatureCache
from fegan_anomalib.models.fegan.scoring.memory import nearest_distance

from .conftest import quiet_trainer


def _counting(function):
    calls = []

    def wrapped(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return function(images)

    return wrapped, calls


PATHS = ["a.png", "b.png", "c.png"]


def _epochs(cache: FenFeatureCache, images: torch.Tensor, compute, epochs: int, paths=PATHS) -> list[torch.Tensor]:
    outputs = []
    for epoch in range(epochs):
        outputs.append(cache(images, compute, paths[: len(images)]))
        cache.end_epoch(epoch)
    return outputs


def test_cache_fills_verifies_then_serves_what_the_fen_gives() -> None:
    fen = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    compute, calls = _counting(lambda images: fen(images).detach())
    cache = FenFeatureCache(max_megabytes=1)
    images = torch.rand(3, 3, 8, 8)
    first, second, third = _epochs(cache, images, compute, 3)
    torch.testing.assert_close(first, fen(images).detach())
    assert torch.equal(second, first) and torch.equal(third, first)
    # epoch 1 computes each image alone (a miss), epoch 2 again (found, not yet trusted), epoch 3 serves
    assert calls == [1] * 6 and cache.trusted
    assert (cache.misses, cache.hits, cache.served) == (3, 6, 3)
    again = cache(images[[2, 0]], compute, ["c.png", "a.png"])  # same images, other order and batch
    assert torch.equal(again, first[[2, 0]]) and calls == [1] * 6


def test_an_image_changed_under_its_path_turns_the_cache_off(caplog: pytest.LogCaptureFixture) -> None:
    """A random train transform: same path, other pixels. Found while verifying: fresh features, cache off."""
    cache = FenFeatureCache(max_megabytes=1)
    image = torch.zeros(1, 3, 4, 4)
    cache(image, lambda x: x.sum(dim=(1, 2, 3)), ["a.png"])
    cache.end_epoch(0)
    changed = image.clone()
    changed[0, 1, 2, 3] = 1e-6  # one value of one pixel
    assert cache(changed, lambda x: x.sum(dim=(1, 2, 3)), ["a.png"]).item() == pytest.approx(1e-6)
    with caplog.at_level(logging.WARNING):
        cache.end_epoch(1)
    assert not cache.enabled and not cache.store and "changed between epochs" in caplog.text
    trusted = FenFeatureCache(max_megabytes=1)
    _epochs(trusted, image, lambda x: x.sum(dim=(1, 2, 3)), 2)
    assert trusted.trusted
    stale = trusted(changed, lambda x: x.sum(dim=(1, 2, 3)), ["a.png"])  # trusted: served, then reported
    assert stale.item() == 0.0
    with caplog.at_level(logging.WARNING):
        trusted.end_epoch(2)
    assert not trusted.enabled and "Epoch 2 served stored features" in caplog.text


def test_cache_respects_its_memory_budget_and_zero_or_no_paths_turn_it_off() -> None:
    cache = FenFeatureCache(max_megabytes=1024 / 2**20)  # 1 KiB: one 1x16x16 float feature map
    compute, calls = _counting(lambda x: x[:, :1].repeat(1, 1, 1, 1))
    images = torch.rand(2, 3, 16, 16)
    _epochs(cache, images, compute, 3)
    # b.png never fits, so it is computed every epoch; a.png is computed, verified, then served
    assert len(cache.store) == 1 and cache.bytes == 1024 and calls == [1] * 5
    off = FenFeatureCache(max_megabytes=0)
    compute, calls = _counting(lambda x: x)
    _epochs(off, images, compute, 2)
    assert calls == [2, 2] and not off.store
    no_paths = FenFeatureCache(max_megabytes=1)
    compute, calls = _counting(lambda x: x)
    no_paths(images, compute, None)
    assert calls == [2] and not no_paths.store
    with pytest.raises(ValueError, match="fen_cache_mb must be >= 0"):
        FenFeatureCache(max_megabytes=-1)


def test_cache_turns_itself_off_when_no_image_repeats(caplog: pytest.LogCaptureFixture) -> None:
    """Every epoch brings other paths (a generated stream): the cache would only fill memory."""
    cache = FenFeatureCache(max_megabytes=1)
    for epoch in range(2):
        cache(torch.rand(2, 3, 4, 4), lambda x: x, [f"{epoch}-{i}.png" for i in range(2)])
        with caplog.at_level(logging.INFO):
            cache.end_epoch(epoch)
    assert not cache.enabled and not cache.store
    assert "turned off" in caplog.text


BATCHES = [
    ImageBatch(
        image=torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(i)),
        image_path=[f"{i}-{j}.png" for j in range(2)],
    )
    for i in range(2)
]


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


def test_training_serves_fen_features_from_the_third_epoch() -> None:
    model, _ = _train("32-true", max_epochs=3)
    cache = model.fen_cache
    # 4 images: computed in epoch 1, found and verified in epoch 2 (no validation here), served in epoch 3 and to
    # the default score's two statistics passes over the training images when the fit ends (per-cell moments,
    # then the memory and the hybrid's distance statistics)
    assert (cache.misses, cache.hits, cache.served) == (4, 16, 12) and cache.trusted


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
    generator = model.anomaly_map_generator
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # a memory of near copies of these cells: small distances between large norms
        cells = generator.memory_cells(*model.scored_features(images)[:2])
    generator.set_memory(cells + 0.01 * torch.randn(cells.shape, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        residual, feature, reconstruction = model.component_maps(images)
        fen, encoder, _ = model.scored_features(images)
        cells = generator.memory_cells(fen, encoder)
        distance = nearest_distance(cells, generator.memory_bank)
    assert reconstruction.dtype == torch.bfloat16  # autocast did run the networks in bf16
    assert residual.dtype == feature.dtype == torch.float32  # maps: no bf16 ties in AUROC
    exact = torch.cdist(cells.double(), generator.memory_bank.double()).amin(1)
    torch.testing.assert_close(distance.double(), exact, rtol=1e-4, atol=1e-3)  # the search itself in float32


class _Operators(TorchDispatchMode):
    """Count the operators dispatched to torch's kernels (each is at least one kernel launch on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


class _CountSteps(Callback):
    """Count each training step's operators in one epoch (the hooks bracket the whole step: G and D)."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.counts, self.mode = epoch, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch:
            self.mode = _Operators()
            self.mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.counts.append(self.mode.count)
            self.mode = None


@pytest.mark.parametrize("fen_cache_mb", [1024.0, 0.0])
def test_operators_per_step_do_not_grow_with_the_batch(fen_cache_mb: float) -> None:
    """M-SE and the cache run a fixed number of operators per step: batch 4 and 16 dispatch the same count.

    The count depends on the networks' depth, not the image size, so 32² stands for the paper's 256²
    (VGG19 to relu4_4, the default tap). Epoch 3: the FEN cache serves (epochs 1-2 compute each image alone).
    """
    counts = {}
    for batch in (4, 16):
        batches = [
            ImageBatch(image=torch.rand(batch, 3, 32, 32), image_path=[f"{i}-{j}.png" for j in range(batch)])
            for i in range(2)
        ]
        torch.manual_seed(0)
        model = Fegan(
            image_size=32,
            pre_trained=False,
            evaluator=False,
            visualizer=False,
            max_epochs=3,
            gradient_share_every=0,
            fen_cache_mb=fen_cache_mb,
            flush_denormal=False,  # CPU only (a pass over the weights per step); the count stands for a GPU's
        )
        counter = _CountSteps(epoch=2)
        quiet_trainer(max_epochs=3, callbacks=[counter]).fit(model, DataLoader(batches, batch_size=None))
        assert len(counter.counts) == 2  # the second step also reads the first's loss check
        counts[batch] = counter.counts
        assert model.fen_cache.trusted == (fen_cache_mb > 0)
    assert counts[4] == counts[16], counts
    assert max(counts[16]) <= 2000, counts  # the bound at 256², batch 16 (the per-patch loop: ~22,000)


@pytest.mark.parametrize(
    "accelerator",
    ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_fp16_mixed_with_gradient_scaling_trains(accelerator: str) -> None:
    """16-mixed (fp16 autocast, Lightning's gradient scaler, both manual optimisers) trains to finite weights.

    0.3's GPU run of this test failed on the scoring statistics, not on fp16: they are NaN until measured and it
    checked every buffer but those named "*_stats" (the per-cell buffers were not); the weights, BatchNorm
    buffers and Adam states were finite. A fit now measures its statistics when it ends, and they are checked too.
    """
    torch.manual_seed(0)
    model = Fegan(image_size=32, pre_trained=False, evaluator=False, visualizer=False, max_epochs=2)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    trainer = quiet_trainer(max_epochs=2, precision="16-mixed", accelerator=accelerator, devices=1)
    trainer.fit(model, DataLoader(BATCHES, batch_size=None))
    after = {k: v.cpu() for k, v in model.model.state_dict().items()}
    for prefix in ("encoder.", "decoder.", "discriminator."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point()), [
        k for k, v in after.items() if v.is_floating_point() and not torch.isfinite(v).all()
    ]  # weights, BatchNorm buffers and the scoring statistics (measured when the fit ended)
    assert not model.model.anomaly_map_generator.needs_train_stats
    for optimizer in model.trainer.optimizers:
        assert all(torch.isfinite(t).all() for state in optimizer.state.values() for t in state.values())
    assert all(torch.isfinite(model.trainer.logged_metrics[name]) for name in ("generator_loss", "discriminator_loss"))
