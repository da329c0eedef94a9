"""The Lightning side of the scoring statistics: which images they are measured on, and over how many processes.

``scoring.statistics.measure_statistics`` takes the torch model and clean batches and knows nothing of a trainer;
this module supplies them from the trainer (the datamodule's training images, pre-processed, FEN features from the
fit's cache) and reduces over DDP ranks. It also re-learns the post-processor's thresholds when a test re-measures
the statistics of a checkpoint: its normalisation clamps scores to the range seen in validation, so thresholds of the
old scoring would flatten the new one's ranking.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from anomalib.post_processing import PostProcessor
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch.utils.data import DataLoader, Subset

from .defaults import STATISTICS_SETTINGS
from .guards import check_train_stats
from .scoring.statistics import MEMORY_SEED, CleanBatch, Reduce, measure_statistics

if TYPE_CHECKING:
    from .lightning_model import Fegan

logger = logging.getLogger(__name__)


class TrainingImages:
    """The normal training images as :class:`CleanBatch` es, in a seeded order, each image on one DDP rank.

    The order is a permutation seeded by ``MEMORY_SEED``, not the global RNG: the statistics are sums and a coreset
    whose rounding follows the order, and a pass must not consume the run's random state. An image's id is its place
    in that order, so it is the same on every rank; rank r takes places r, r + world, ... (as a DistributedSampler).
    From the datamodule's ``train_data`` (anomalib's datamodules; the fitted part under ``PlantedValidation``), else
    from the trainer's training loader; a loader of ready-made batches (``batch_size=None``) is passed over as it is,
    its images numbered in the order they come.
    """

    def __init__(self, module: Fegan) -> None:
        trainer = module.trainer
        self.module, self.rank, self.world = module, trainer.global_rank, trainer.world_size
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "train_data", None)
        loader = trainer.train_dataloader if dataset is None else None
        self.loader = loader if loader is not None and getattr(loader, "batch_size", 1) is None else None
        if self.loader is None:
            dataset = dataset if dataset is not None else getattr(loader, "dataset", None)
            if dataset is None or len(dataset) == 0:
                msg = "FEGAN found no training images to measure its scoring statistics on (the datamodule has none)."
                raise RuntimeError(msg)
            self.dataset = dataset
            self.batch_size = getattr(datamodule, "train_batch_size", None) or getattr(loader, "batch_size", None) or 8
            self.collate_fn = getattr(dataset, "collate_fn", None) or getattr(loader, "collate_fn", None)
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(MEMORY_SEED))
            self.ids = torch.arange(self.rank, len(dataset), self.world)
            self.indices = order[self.ids].tolist()

    def _batches(self) -> Iterator[tuple[Any, torch.Tensor]]:
        """Yield this rank's raw batches with their images' ids."""
        if self.loader is not None:
            seen = 0
            for batch in self.loader:
                count = batch.image.shape[0]
                yield batch, (torch.arange(seen, seen + count) * self.world + self.rank)
                seen += count
            return
        subset = Subset(self.dataset, self.indices)
        for start, batch in zip(
            range(0, len(subset), self.batch_size),
            DataLoader(subset, batch_size=self.batch_size, collate_fn=self.collate_fn),
            strict=True,
        ):
            yield batch, self.ids[start : start + self.batch_size]

    def __iter__(self) -> Iterator[CleanBatch]:
        """Yield this rank's images, pre-processed as inference sees them, with their FEN features from the cache."""
        module, model = self.module, self.module.model
        for batch, ids in self._batches():
            images = batch.image.to(module.device)
            images = module.pre_processor.transform(images) if module.pre_processor is not None else images
            fen = module.fen_cache(images, module.fen_target, batch.image_path) if model.use_fen else None
            yield CleanBatch(images, fen, ids.to(module.device))


class StrategyReduce(Reduce):
    """Sums and concatenations over the trainer's processes (DDP); a single process passes through."""

    def __init__(self, module: Fegan) -> None:
        self.module = module

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return the sum over ranks."""
        return self.module.trainer.strategy.reduce(tensor, reduce_op="sum")

    def cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return every rank's rows in rank order (padded for ``all_gather``, which needs one shape)."""
        if self.module.trainer.world_size == 1:
            return tensor
        counts = self.module.all_gather(torch.tensor(tensor.shape[0], device=tensor.device)).flatten().tolist()
        padded = torch.cat([tensor, tensor.new_zeros(max(counts) - tensor.shape[0], *tensor.shape[1:])])
        gathered = self.module.all_gather(padded)
        return torch.cat([gathered[rank, :count] for rank, count in enumerate(counts)])


def relearn_thresholds(module: Fegan) -> bool:
    """Re-learn the post-processor's thresholds and normalisation on the datamodule's validation set, as a fit does.

    Returns whether the post-processor now fits the score: ``True`` without anomalib's ``PostProcessor`` (no
    thresholds to be stale), ``False`` without a validation set or with an empty one (nothing to learn them on).
    """
    trainer, post_processor = module.trainer, module.post_processor
    if not isinstance(post_processor, PostProcessor):
        return True
    datamodule = trainer.datamodule
    loader = datamodule.val_dataloader() if datamodule is not None and hasattr(datamodule, "val_data") else None
    if loader is None or len(loader) == 0:
        logger.warning(
            "FEGAN: no validation set to re-learn the thresholds on: this run's normalised scores and labels use the "
            "checkpoint's thresholds, learnt for its own scoring."
        )
        return False
    with module.model.evaluating(), torch.no_grad():
        for batch in loader:
            moved = move_data_to_device(batch, module.device)
            _run_hook(module.pre_processor, "on_validation_batch_start", trainer, module, moved, 0)
            prediction = module.model(moved.image)
            scored = moved.update(pred_score=prediction.pred_score, anomaly_map=prediction.anomaly_map)
            post_processor.on_validation_batch_end(trainer, module, scored, scored, 0)
    post_processor.on_validation_epoch_end(trainer, module)
    logger.info("FEGAN: thresholds re-learnt on %d validation images for the new scoring.", len(loader.dataset))
    return True


def _run_hook(callback: Any, name: str, *args: Any) -> None:
    """Call a callback hook if the callback exists (a model built with ``pre_processor=False`` has none)."""
    if callback is not None and hasattr(callback, name):
        getattr(callback, name)(*args)


class StatisticsSchedule:
    """When ``Fegan`` measures its score's statistics: a mixin of the Lightning module (before ``AnomalibModule``).

    Before a fit's validation when the weights moved (its thresholds must be on the final scale), at the end of a fit
    whose last steps no validation followed, and when a test or predict of a checkpoint starts without statistics that
    its settings need (loaded with another ``feature_distance``, ``memory_size``, ...), on the datamodule's training
    images, with a log line saying so. A model that was neither fitted nor loaded is refused instead: its scores
    would say nothing.
    """

    def measure_statistics(self, force: bool = False) -> None:
        """Measure the statistics scoring uses, unless the weights have not moved since (``statistics_step``)."""
        if not self.model.anomaly_map_generator.measures_train_stats:
            return
        if self.statistics_step == self.global_step and not force:
            return
        measure_statistics(self.model, TrainingImages(self), StrategyReduce(self))
        self.statistics_step = self.global_step

    def on_validation_epoch_start(self) -> None:
        """Measure the statistics first, for this validation's thresholds (which a rescoring's then no longer lacks)."""
        super().on_validation_epoch_start()
        if self.trainer.state.fn == "fit":
            self.measure_statistics()
            self.rescored = []

    def measure_final_statistics(self) -> None:
        """At the end of a fit, measure the final weights' statistics if no validation did."""
        if self.statistics_step != self.global_step and self.model.anomaly_map_generator.measures_train_stats:
            logger.info(
                "FEGAN: measuring the scoring statistics of the final weights (no validation after step %d); "
                "the post-processor's thresholds are from the last validation.",
                self.global_step,
            )
            self.measure_statistics()

    def on_test_start(self) -> None:
        """Score with statistics of the weights being tested: measure those a setting needs, or refuse."""
        self.model.load_fen_weights()
        self._statistics_for("test")

    def on_predict_start(self) -> None:
        """As a test: measure the statistics a setting needs, or refuse; re-learn a rescoring's thresholds."""
        self.model.load_fen_weights()
        self._statistics_for("predict")

    def _statistics_for(self, action: str) -> None:
        """Measure unmeasured statistics on the datamodule's training images; re-learn a rescoring's thresholds."""
        generator = self.model.anomaly_map_generator
        measured = generator.needs_train_stats
        if measured:
            datamodule = self._trainer.datamodule if self._trainer is not None else None
            images = getattr(datamodule, "train_data", None)
            if images is None or self.trained_epochs is None:  # no images, or weights never trained: refuse
                check_train_stats(generator, action)
            settings = ", ".join(f"{name}={self.hparams[name]}" for name in STATISTICS_SETTINGS)
            logger.info(
                "FEGAN: measuring the scoring statistics (%s) on the datamodule's %d training images before the %s; "
                "the weights are the checkpoint's.",
                settings,
                len(images),
                action,
            )
            self.measure_statistics(force=True)
        # a new scale: the checkpoint's thresholds are stale (labels, normalised scores); export refuses until re-learnt
        if (measured or self.rescored) and relearn_thresholds(self):
            self.rescored = []
