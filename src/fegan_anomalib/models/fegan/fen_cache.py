"""The frozen FEN's features of each clean training image, computed once and reused across epochs.

Why FEGAN needs this and anomalib has nothing like it: the FEN is frozen and reads the clean
(un-augmented) image, so ``θ*(x)`` of a training image is the same in every one of the paper's 200
epochs; only the encoder sees the M-SE-augmented copy. Recomputing it costs one VGG forward per
image per step (benchmarks/training.py measures the share).

The key is the image's content (a hash of its bytes), not its path or index, so the cache cannot
serve stale features: when a random train transform changes the image from one epoch to the next,
the key changes and the features are computed afresh. An epoch after the first that finds no hit
at all turns the cache off (a random pipeline would only fill memory), with a log line saying so.
Misses are computed one image at a time, so an image's features do not depend on which other
images shared its batch (float rounding of batched convolutions) and a resumed run reproduces an
uninterrupted one bit for bit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)


class FenFeatureCache:
    """Content-keyed store of FEN features, bounded in megabytes.

    Args:
        max_megabytes: memory budget; images beyond it are computed every time. ``0`` turns caching off.

    Example:
        >>> cache = FenFeatureCache(max_megabytes=1)
        >>> fen = lambda images: images.mean(dim=(2, 3), keepdim=True)
        >>> images = torch.rand(2, 3, 4, 4)
        >>> first, second = cache(images, fen), cache(images, fen)
        >>> torch.equal(first, second), cache.hits, cache.misses
        (True, 2, 2)

    """

    def __init__(self, max_megabytes: float = 1024.0) -> None:
        if max_megabytes < 0:
            msg = f"fen_cache_mb must be >= 0 (0 turns the cache off), got {max_megabytes}."
            raise ValueError(msg)
        self.max_bytes = int(max_megabytes * 2**20)
        self.enabled = self.max_bytes > 0
        self.store: dict[bytes, torch.Tensor] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.epoch_hits = 0
        self.epoch_misses = 0

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        """Hash of the image's values, shape and dtype: equal keys mean equal FEN input."""
        data = image.detach().contiguous().cpu()
        digest = hashlib.blake2b(data.numpy().tobytes(), digest_size=16)
        digest.update(f"{tuple(data.shape)}{data.dtype}".encode())
        return digest.digest()

    def __call__(self, images: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Return ``compute(images)``, taking each image's features from the store when it holds them."""
        if not self.enabled:
            return compute(images)
        features: list[torch.Tensor] = []
        for image in images:
            key = self.key(image)
            cached = self.store.get(key)
            if cached is None:
                cached = compute(image.unsqueeze(0))[0].detach()
                self.misses += 1
                self.epoch_misses += 1
                size = cached.numel() * cached.element_size()
                if self.bytes + size <= self.max_bytes:
                    self.store[key] = cached
                    self.bytes += size
            else:
                self.hits += 1
                self.epoch_hits += 1
            features.append(cached)
        return torch.stack(features)

    def end_epoch(self, epoch: int) -> None:
        """After the first epoch, turn the cache off if no image came back unchanged (random transforms)."""
        if self.enabled and epoch > 0 and self.epoch_misses and not self.epoch_hits:
            logger.info(
                "FEGAN's FEN feature cache found no repeated training image in epoch %d (random train "
                "transforms?): turned off, features are computed every step.",
                epoch,
            )
            self.clear()
            self.enabled = False
        self.epoch_hits = self.epoch_misses = 0

    def clear(self) -> None:
        """Forget every stored feature (the FEN's weights may have changed)."""
        self.store.clear()
        self.bytes = 0
