"""A training loader that Lightning can resume mid-epoch, for anomalib datamodules.

anomalib's ``train_dataloader`` returns a plain shuffled ``DataLoader``: its order comes from the
global RNG at the start of each epoch and it keeps no position, so a run resumed from a mid-epoch
checkpoint sees a different order and starts its epoch over (Lightning warns "your dataloader is
not resumable"). A 200-epoch GAN run interrupted on a shared GPU would then not end where the
uninterrupted run ends.

``ResumableDataLoader`` keeps the datamodule's dataset, batch size, workers and collate function
and changes two things: the order of epoch ``e`` is a permutation seeded by ``(seed, e)``, and the
loader implements ``state_dict``/``load_state_dict`` (Lightning stores it in the checkpoint), so the
resumed epoch replays the same permutation and skips the batches already trained on. Its sampler is
a ``DistributedSampler``, so under DDP each rank reads its own shard and Lightning keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled by seed and epoch) that can start an epoch part-way."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.skip = 0  # samples of this rank's epoch to leave out, once

    def __iter__(self) -> Iterator[int]:
        """Yield this epoch's indices from position ``skip`` on; later epochs start from the beginning."""
        indices = list(super().__iter__())[self.skip :]
        self.skip = 0
        return iter(indices)


class ResumableDataLoader(DataLoader):
    """A shuffled training ``DataLoader`` with a per-epoch seeded order and a resumable position.

    Args:
        dataset, batch_size, num_workers, collate_fn: as for ``DataLoader``.
        seed: seed of the per-epoch permutations.
        num_replicas, rank: DDP world size and this process's rank.
        progress: returns how many batches of the current epoch the training loop has processed;
            saved in ``state_dict`` (the loader itself runs ahead of training by its prefetch).

    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        num_workers: int = 0,
        collate_fn: Callable | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        progress: Callable[[], int] | None = None,
    ) -> None:
        sampler = ResumableSampler(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
        super().__init__(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn
        )
        self.progress = progress

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches processed in it (Lightning writes this into checkpoints)."""
        processed = self.progress() if self.progress is not None else 0
        return {"epoch": self.sampler.epoch, "batches": int(processed), "seed": self.sampler.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume: the next iteration replays this epoch's order (the checkpoint's seed) minus the processed batches."""
        self.sampler.seed = int(state_dict.get("seed", self.sampler.seed))
        batches = int(state_dict.get("batches", 0))
        self.sampler.set_epoch(int(state_dict.get("epoch", 0)))
        finished = batches >= len(self)  # saved at the end of the epoch: the next one starts fresh
        self.sampler.skip = 0 if finished else batches * self.batch_size
