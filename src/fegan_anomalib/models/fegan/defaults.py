"""FEGAN's default settings of the network and the score, in one place.

``Fegan`` (the Lightning module) leaves these arguments unset (``None``) in its signature and fills what was not
given from here, so it can tell an argument a user typed, even at its default value, from one left alone: loading
a checkpoint, an argument left alone takes the checkpoint's setting, one typed wins (``guards.checkpoint_settings``).
``FeganModel`` (the torch model) keeps the paper's scoring defaults (relu5_4, L2, no statistics); ``Fegan`` passes it
every argument.
The paper's literal reading is ``configs/fegan_mvtec.yaml`` (docs/decisions.md).
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    "image_size": 256,
    "backbone": "vgg19",
    "tap": "relu4_4",  # [A1b]
    "pre_trained": True,
    "encoder_init": "pretrained",  # [A2]
    "encoder_batchnorm": "frozen",
    "use_discriminator": True,
    "use_fen": True,
    "feature_map_weight": 0.8,  # λ of Eq. 8 (the paper: 0.6) [A7c]
    "component_norm": "train_stats",  # [A7]
    "sigma": 0.0,
    "feature_distance": "mahalanobis+nearest",  # [A7b] [A7c]
    "image_score_top_ratio": 0.01,  # [A8b]
    "mahalanobis_ridge": 0.3,  # [A7b]
    "memory_size": 4096,  # [A7c]
    "channels_last": True,
}
