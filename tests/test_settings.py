"""One settings table: every default of the network and the score is ``defaults.DEFAULTS``'s, stated once."""

from __future__ import annotations

import inspect

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan import defaults
from fegan_anomalib.models.fegan.scoring.anomaly_map import AnomalyMapGenerator
from fegan_anomalib.models.fegan.torch_model import FeganModel


def _defaults(function: object) -> dict[str, object]:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def test_every_signature_default_is_the_tables() -> None:
    table = defaults.DEFAULTS
    module = _defaults(Fegan.__init__)
    assert all(module[name] is None for name in table), "Fegan leaves table settings unset: 'given' is told by None"
    model = _defaults(FeganModel.__init__)
    assert model["image_size"] == (table["image_size"],) * 2
    # the score's settings are its generator's, but those that pick the features F reads
    scoring = set(defaults.SCORING_SETTINGS) - set(defaults.FEATURE_SETTINGS)
    assert set(model) == set(defaults.MODEL_ARGUMENTS) - scoring
    for name in set(model) - {"image_size", "weights"}:
        assert model[name] == table[name], name
    generator = _defaults(AnomalyMapGenerator.__init__)
    for name in set(generator) - {"feature_shape"}:
        assert generator[name] == table[name], name
    assert set(generator) - {"feature_shape"} == scoring


def test_the_checkpoint_tables_name_real_arguments() -> None:
    arguments = set(inspect.signature(Fegan.__init__).parameters)
    assert set(defaults.MODEL_ARGUMENTS) <= arguments
    assert set(defaults.MODEL_ARGUMENTS) - {"weights"} == set(defaults.DEFAULTS)
    assert set(defaults.STATISTICS_SETTINGS) <= set(defaults.SCORING_SETTINGS) <= set(defaults.MODEL_ARGUMENTS)
    assert set(defaults.ARCHITECTURE_FIELDS) <= set(defaults.MODEL_ARGUMENTS)
    assert not set(defaults.ARCHITECTURE_FIELDS) & set(defaults.SCORING_SETTINGS)  # scoring never refuses a checkpoint
    assert set(defaults.UNRECORDED_SETTINGS) <= set(defaults.SCORING_SETTINGS)
    assert set(defaults.FEATURE_SETTINGS) <= set(defaults.STATISTICS_SETTINGS)
