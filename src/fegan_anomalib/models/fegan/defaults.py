"""FEGAN's settings table: every default of the network and the score, and how a checkpoint records them.

One place: ``Fegan`` (the Lightning module), ``FeganModel`` (the torch model) and ``AnomalyMapGenerator`` take their
defaults from ``DEFAULTS`` (``tests/test_settings.py`` compares their signatures with it). ``Fegan`` leaves these
arguments unset (``None``) in its signature and fills what was not given from here, so it can tell an argument a user
typed, even at its default value, from one left alone: loading a checkpoint, an argument left alone takes the
checkpoint's setting, one typed wins (``guards.checkpoint_settings``). The paper's literal reading is
``configs/fegan_mvtec.yaml``; each tag **[A#]** is resolved, with its measurements, in docs/decisions.md.

A new scoring option touches three files: a line in ``DEFAULTS`` and in ``SCORING_SETTINGS`` here (and in
``STATISTICS_SETTINGS`` if the statistics depend on it; ``MODEL_ARGUMENTS`` takes it), the argument of
``AnomalyMapGenerator`` that uses it (``scoring/anomaly_map.py``; of ``FeganModel`` for one in ``FEATURE_SETTINGS``),
and the argument of ``Fegan`` that surfaces it (``lightning_model.py``); ``FeganModel`` passes every other scoring
argument through.
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
    "fine_tap": "previous_block",  # [A7d]: F also reads the stage before the tap's (relu3_4 beside relu4_4)
    "image_score_from": "feature_map",  # [A8c]: F alone, before R and the blur; "anomaly_map" reads S (Eq. 10)
    "density_reweighting": False,  # [A7f]: the nearest distance over its memory row's spacing
    "channels_last": True,
}

# on_save_checkpoint records these under ARCHITECTURE_KEY: they shape the weights, so a checkpoint of other values
# cannot load (Lightning overwrites the saved hyper-parameters with load_from_checkpoint's arguments, the record not)
ARCHITECTURE_KEY = "fegan_architecture"
ARCHITECTURE_FIELDS = ("backbone", "tap", "image_size", "use_discriminator", "use_fen")
# the scoring settings, recorded under SCORING_KEY: a checkpoint loaded with other values keeps its weights, and a test
# or predict re-learns its thresholds; its statistics are measured again if they depend on one (STATISTICS_SETTINGS)
SCORING_KEY = "fegan_scoring"
SCORING_SETTINGS = (
    "feature_map_weight",
    "component_norm",
    "sigma",
    "feature_distance",
    "image_score_top_ratio",
    "mahalanobis_ridge",
    "memory_size",
    "fine_tap",
    "image_score_from",
    "density_reweighting",
)
STATISTICS_SETTINGS = (
    "component_norm",
    "feature_distance",
    "mahalanobis_ridge",
    "memory_size",
    "fine_tap",
    "density_reweighting",
)
# the scoring settings FeganModel reads itself (they pick the features F is computed from); its AnomalyMapGenerator
# takes the others
FEATURE_SETTINGS = ("fine_tap",)
# the Fegan arguments that build FeganModel: a checkpoint supplies those a command line left at their defaults
MODEL_ARGUMENTS = (
    "image_size",
    "backbone",
    "tap",
    "pre_trained",
    "weights",
    "encoder_init",
    "encoder_batchnorm",
    "use_discriminator",
    "use_fen",
    "channels_last",
    *SCORING_SETTINGS,
)
# what a checkpoint written before an argument existed scored with: its value then (0.3's defaults differ)
UNRECORDED_SETTINGS = {
    "feature_distance": "l2",
    "mahalanobis_ridge": 0.0,
    "fine_tap": "none",
    "image_score_from": "anomaly_map",  # S (Eq. 10): the default before 0.4 [A8c]
    "density_reweighting": False,  # [A7f]: added in 0.4
}
# the settings added after checkpoints began to record their scoring (SCORING_KEY): a checkpoint without the record
# cannot have scored with anything but their UNRECORDED_SETTINGS value, whatever its overwritten hyper-parameters say
NEWER_THAN_RECORD = ("image_score_from", "density_reweighting")
