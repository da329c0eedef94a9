"""``BroadcastBuffers``: rank 0's BatchNorm statistics to every DDP rank at the end of each epoch."""

from __future__ import annotations

import logging

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

logger = logging.getLogger(__name__)


class BroadcastBuffers(Callback):
    """Under DDP, give every rank rank 0's buffers (BatchNorm statistics) at the end of each training epoch.

    DDP syncs BatchNorm statistics only at each forward and SyncBatchNorm would need GPUs; without
    the broadcast, ranks end an epoch with statistics that differ by their last local batch, so
    validation and checkpoints would depend on the rank. Lightning runs checkpointing after this.
    """

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Broadcast every buffer of the torch model from rank 0."""
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            for buffer in pl_module.model.buffers():
                torch.distributed.broadcast(buffer, src=0)
