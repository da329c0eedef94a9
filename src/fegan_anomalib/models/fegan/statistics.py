"""The statistics FEGAN's score is standardised by, measured on the normal training images during fit.

Scoring's business, not the recipe's: ``Fegan.on_validation_epoch_start`` calls
:func:`measure_scoring_statistics` before each validation of a fit, so the thresholds that validation
learns are on the final scale. Two passes over the clean (un-augmented) training images, FEN features
from the cache, sums reduced over DDP ranks:

- ``feature_distance="mahalanobis"`` **[A7b]**: per tap cell and channel, the mean and std of θ*(x) − θ(x);
- ``component_norm="train_stats"`` **[A7]**: the pixel mean and std of R and F (after the above, so F's
  moments are in its final units).

Which images: those the generator is fitted to. ``benchmarks/image_score.py`` measured the held-out
alternative (the ``PlantedValidation`` hold-out) on magnetic_tile and hazelnut_mini; it did not help
(BENCHMARKS.md, "Image score").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def clean_training_batches(module: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Pre-processed clean training images with their FEN features (from the cache), batch by batch."""
    trainer = module.trainer
    datamodule = trainer.datamodule
    for batch in datamodule.train_dataloader() if datamodule else trainer.train_dataloader:
        images = batch.image.to(module.device)
        images = module.pre_processor.transform(images) if module.pre_processor is not None else images
        yield images, module.fen_cache(images, module.model.fen_features) if module.model.use_fen else None


@torch.no_grad()
def measure_feature_residual_stats(module: Any) -> None:
    """Per-cell, per-channel mean and std of θ*(x) − θ(x) over the clean training images (``"mahalanobis"``)."""
    generator, strategy = module.model.anomaly_map_generator, module.trainer.strategy
    sums, count = None, 0
    for images, fen_features in clean_training_batches(module):
        moments = generator.feature_residual_moments(fen_features, module.model.encode(images))
        sums = moments if sums is None else sums + moments
        count += images.shape[0]
    sums = strategy.reduce(sums.to(module.device), reduce_op="sum").cpu()  # over DDP ranks
    count = int(strategy.reduce(torch.tensor(float(count), device=module.device), reduce_op="sum"))
    generator.set_feature_residual_stats(sums.to(module.device), count)


@torch.no_grad()
def measure_train_stats(module: Any) -> None:
    """Pixel mean and std of R and F over the clean training images (FEN features from the cache)."""
    moments = torch.zeros(5, dtype=torch.float64)
    for images, fen_features in clean_training_batches(module):
        residual, feature, _ = module.model.component_maps(images, fen_features)
        moments += module.model.anomaly_map_generator.moments(residual, feature)
    moments = module.trainer.strategy.reduce(moments.to(module.device), reduce_op="sum").cpu()  # over DDP ranks
    module.model.anomaly_map_generator.set_train_stats_from_moments(moments, module.model.use_fen)


def measure_scoring_statistics(module: Any) -> None:
    """Measure what the score's options need, Mahalanobis first (``train_stats`` then sees F's final units)."""
    generator = module.model.anomaly_map_generator
    if generator.feature_distance == "mahalanobis":
        measure_feature_residual_stats(module)
    if generator.component_norm == "train_stats":
        measure_train_stats(module)
