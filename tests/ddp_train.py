"""Train FEGAN for a few steps under Lightning DDP on 2 CPU processes (gloo); save each rank's weights.

Run by ``tests/test_ddp.py`` as ``python tests/ddp_train.py OUT_DIR``: Lightning's ``ddp`` strategy
re-launches this script once per rank, which a pytest process cannot do for itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from anomalib.data import ImageBatch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import DataLoader, Dataset

from fegan_anomalib import Fegan


class _Images(Dataset):
    """Eight fixed images; each rank gets its own half through Lightning's distributed sampler."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(index))


def _collate(images: list[torch.Tensor]) -> ImageBatch:
    return ImageBatch(image=torch.stack(images))


def main() -> None:
    """Fit 2 batches per rank, then each rank writes its weights and its first M-SE draw."""
    out = Path(sys.argv[1])
    seed_everything(3)
    torch.set_num_threads(1)
    model = Fegan(image_size=32, pre_trained=False, evaluator=False, visualizer=False, max_epochs=1)
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_find_unused_parameters_true",
        max_epochs=1,
        default_root_dir=out,  # run files (learning curves) beside the weights, not in the working tree
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, DataLoader(_Images(), batch_size=2, collate_fn=_collate))
    rank = trainer.global_rank
    mask = model.augmenter(torch.rand(1, 3, 32, 32), generator=model._augmenter_generator())[1]
    torch.save({"state": model.model.state_dict(), "mask": mask}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
