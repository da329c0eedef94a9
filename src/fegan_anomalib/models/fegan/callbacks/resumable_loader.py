"""``ResumableTrainLoader``: a training loader Lightning can resume mid-epoch (torchdata's ``StatefulDataLoader``)."""

from __future__ import annotations

import logging
import os
import warnings

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

logger = logging.getLogger(__name__)


class ResumableTrainLoader(Callback):
    """Serve the datamodule's training set through torchdata's ``StatefulDataLoader``, which Lightning resumes.

    anomalib's ``train_dataloader`` is a plain shuffled ``DataLoader``: its order comes from the global
    RNG at each epoch and it keeps no position, so a run resumed from a mid-epoch checkpoint sees another
    order and starts its epoch over (Lightning warns "your dataloader is not resumable"); a 200-epoch GAN
    run interrupted on a shared GPU would then not end where the uninterrupted run ends. For ``fit``,
    this returns a ``StatefulDataLoader`` (Lightning stores its ``state_dict`` in checkpoints and
    restores it) over the same dataset, batch size, workers and collate function, with a
    ``StatefulDistributedSampler`` seeded by the run's seed (Lightning sets its epoch): epoch ``e``'s order is a
    permutation seeded by ``(seed, e)``, a resumed epoch skips the samples already trained on when it
    starts (after Lightning has set the epoch), and under DDP each rank reads its own shard. On a GPU its batches
    come in pinned memory, so Lightning's copy to the device is asynchronous instead of a wait for the GPU in
    every step; its workers persist across epochs instead of starting again at each.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Wrap ``train_dataloader`` of the datamodule this fit uses."""
        del pl_module
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None:
            return
        from torch.utils.data import DataLoader  # noqa: PLC0415
        from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: PLC0415
        from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler  # noqa: PLC0415

        # wrap anomalib's method, not a wrapper bound to an earlier trainer of the same datamodule
        original = getattr(datamodule, "_fegan_train_dataloader", datamodule.train_dataloader)
        seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**31))

        def train_dataloader() -> object:
            loader = original()
            if not isinstance(loader, DataLoader) or isinstance(loader, StatefulDataLoader):
                return loader
            sampler = StatefulDistributedSampler(
                loader.dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=True, seed=seed
            )
            with warnings.catch_warnings():  # torchdata 0.11 calls torch's deprecated set_vital in every __init__
                warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
                return StatefulDataLoader(
                    loader.dataset,
                    batch_size=loader.batch_size,
                    sampler=sampler,
                    num_workers=loader.num_workers,
                    collate_fn=loader.collate_fn,
                    pin_memory=trainer.strategy.root_device.type == "cuda",
                    persistent_workers=loader.num_workers > 0,  # no worker start-up at every epoch
                )

        datamodule._fegan_train_dataloader = original
        datamodule.train_dataloader = train_dataloader
