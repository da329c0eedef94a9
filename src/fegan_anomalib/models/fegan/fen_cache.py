"""The frozen FEN's features of each clean training image, computed once and reused across epochs.

Why FEGAN needs this and anomalib has nothing like it: the FEN is frozen and reads the clean
(un-augmented) image, so ``θ*(x)`` of a training image is the same in every one of the paper's 200
epochs; only the encoder sees the M-SE-augmented copy. Recomputing it costs one VGG forward per
image per step (benchmarks/training.py measures the share).

Keys and checks without a host-device synchronisation in the step: an image is looked up by its file path
(``batch.image_path``, on the host with every anomalib data set), and a fingerprint of its pixels as the FEN
sees them (float64 sums, computed on the device) is stored beside its features. The first epoch that finds
stored images still computes their features afresh (a random train transform would otherwise serve stale
features that epoch) and compares fingerprints on the device; only the count of mismatches is read, once, when
the epoch ends. An epoch without a mismatch makes the cache trusted: from then on, stored features are served
(fingerprints still compared, and a mismatch still reported at the epoch's end, which turns the cache off). An
epoch that finds no stored image at all, or a mismatch, turns the cache off with a log line. Batches without
paths are computed every time.

Misses are computed one image at a time, so an image's features do not depend on which other images shared
its batch (float rounding of batched convolutions) and a resumed run (whose cache starts empty) reproduces an
uninterrupted one bit for bit. That costs one FEN call per image in the first two epochs; later steps are
served with a fixed number of operations whatever the batch size.

The store lives where the features are computed: on a GPU, in GPU memory (``fen_cache_mb``, 1024 MB by default).
It keeps what the feature loss reads: at 256² with VGG19, relu4_4's alone 2 MiB per image (512 images), and with the
default ``fine_feature_loss`` relu3_4's beside relu4_4's upsampled, 12 MiB (85 images); images beyond it are
computed each step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

logger = logging.getLogger(__name__)


def fingerprint(images: torch.Tensor) -> torch.Tensor:
    """(B, 2) float64 per image: the pixel sum and a position-weighted sum, changed by any change of one value."""
    flat = images.detach().flatten(1).double()
    ramp = torch.linspace(1.0, 2.0, flat.shape[1], dtype=torch.float64, device=flat.device)
    return torch.stack((flat.sum(1), (flat * ramp).sum(1)), 1)


class FenFeatureCache:
    """Path-keyed store of FEN features, checked by pixel fingerprints, bounded in megabytes.

    Args:
        max_megabytes: memory budget; images beyond it are computed every time. ``0`` turns caching off.

    Example:
        >>> cache = FenFeatureCache(max_megabytes=1)
        >>> fen = lambda images: images.mean(dim=(2, 3), keepdim=True)
        >>> images, paths = torch.rand(2, 3, 4, 4), ["a.png", "b.png"]
        >>> for epoch in range(3):  # fill, verify, serve
        ...     features = cache(images, fen, paths)
        ...     cache.end_epoch(epoch)
        >>> torch.equal(features, fen(images)), cache.trusted, (cache.misses, cache.hits, cache.served)
        (True, True, (2, 4, 2))

    """

    def __init__(self, max_megabytes: float = 1024.0) -> None:
        if max_megabytes < 0:
            msg = f"fen_cache_mb must be >= 0 (0 turns the cache off), got {max_megabytes}."
            raise ValueError(msg)
        self.max_bytes = int(max_megabytes * 2**20)
        self.enabled = self.max_bytes > 0
        self.store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # path → (features, fingerprint)
        self.bytes = 0
        self.trusted = False
        self.hits = 0  # stored images found (verified or served)
        self.served = 0  # of those, served without computing
        self.misses = 0
        self.epoch_hits = 0
        self.epoch_misses = 0
        self.mismatches: torch.Tensor | None = None  # on the device: found images whose pixels changed

    def __call__(
        self,
        images: torch.Tensor,
        compute: Callable[[torch.Tensor], torch.Tensor],
        keys: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Return ``compute(images)``, taking each image's features from the store once it is trusted."""
        if not self.enabled or keys is None or len(keys) != len(images):
            return compute(images)
        prints = fingerprint(images)
        found = [self.store.get(key) for key in keys]
        if self.trusted and all(entry is not None for entry in found):  # the usual step: no FEN, no loop
            self._compare(prints, found, range(len(keys)))
            self.hits += len(keys)
            self.served += len(keys)
            self.epoch_hits += len(keys)
            return torch.stack([entry[0] for entry in found])
        features: list[torch.Tensor] = []
        for index, (key, entry) in enumerate(zip(keys, found, strict=True)):
            if entry is not None and self.trusted:
                features.append(entry[0])
                self.served += 1
            else:  # a miss, or a found image not yet verified: computed alone
                features.append(compute(images[index : index + 1])[0].detach())
            if entry is None:
                self._keep(key, features[-1], prints[index])
                self.misses += 1
                self.epoch_misses += 1
            else:
                self.hits += 1
                self.epoch_hits += 1
        hit = [index for index, entry in enumerate(found) if entry is not None]
        if hit:
            self._compare(prints, found, hit)
        return torch.stack(features)

    def _keep(self, key: str, features: torch.Tensor, print_: torch.Tensor) -> None:
        size = features.numel() * features.element_size()
        if self.bytes + size <= self.max_bytes:
            self.store[key] = (features, print_)
            self.bytes += size

    def _compare(
        self, prints: torch.Tensor, found: list[tuple[torch.Tensor, torch.Tensor] | None], indices: Sequence[int]
    ) -> None:
        """Add the number of found images whose fingerprint changed to the device-side mismatch count."""
        stored = torch.stack([found[i][1] for i in indices])  # type: ignore[index]
        prints = prints if len(indices) == len(found) else prints[list(indices)]
        changed = (stored != prints).any(1).sum()
        self.mismatches = changed if self.mismatches is None else self.mismatches + changed

    def end_epoch(self, epoch: int) -> None:
        """Judge the epoch: trust the store after a clean verification, turn it off on a mismatch or no repeat."""
        if not self.enabled:
            return
        changed = int(self.mismatches) if self.mismatches is not None else 0  # the one read per epoch
        if changed:
            logger.warning(
                "FEGAN's FEN feature cache: %d training image(s) changed between epochs under the same path "
                "(random train transforms?): turned off, features are computed every step.%s",
                changed,
                f" Epoch {epoch} served stored features for them." if self.trusted else "",
            )
            self._off()
        elif epoch > 0 and self.epoch_misses and not self.epoch_hits:
            logger.info(
                "FEGAN's FEN feature cache found no repeated training image in epoch %d: turned off, features "
                "are computed every step.",
                epoch,
            )
            self._off()
        elif self.epoch_hits:
            self.trusted = True
        self.epoch_hits = self.epoch_misses = 0
        self.mismatches = None

    def _off(self) -> None:
        self.clear()
        self.enabled = False

    def clear(self) -> None:
        """Forget every stored feature and the trust in them (the FEN's weights may have changed)."""
        self.store.clear()
        self.bytes = 0
        self.trusted = False
        self.mismatches = None
