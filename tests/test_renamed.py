"""Renamed arguments (0.1's use_mse, mse_*, augmentation*, score_lambda, d_collapse_loss; 0.2's gradient_norm_every)
still load, with a warning that names the release that drops them."""

from __future__ import annotations

from pathlib import Path

import lightning
import pytest
import torch

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan.augmentation import SCADN
from fegan_anomalib.models.fegan.renamed import RENAMED

from .conftest import anomalib_cli

SMALL = {"image_size": 32, "backbone": "vgg11", "tap": "relu4_2", "pre_trained": False, "fen_cache_mb": 0}
OLD = {
    "use_mse": False,
    "augmentation": "SCADN",
    "augmentation_args": {"widths": [4, 8]},
    "mse_area_ratio": 0.3,
    "mse_max_patch_ratio": 0.02,
    "mse_seed": 7,
    "score_lambda": 0.9,
    "d_collapse_loss": 0.5,
    "gradient_norm_every": 3,
}


def _check_new_values(model: Fegan) -> None:
    assert model.use_augmenter is False
    assert isinstance(model.augmenter, SCADN) and model.augmenter.area_ratio == 0.3
    assert tuple(model.augmenter.widths) == (4, 8)
    assert model.augmenter_seed == 7
    assert model.model.anomaly_map_generator.feature_map_weight == 0.9
    assert model.hparams["d_collapse_threshold"] == 0.5  # itself deprecated since 0.3, without effect
    assert not set(RENAMED) & set(model.hparams), "the old names must not be saved again"
    assert model.hparams["augmenter_max_patch_ratio"] == 0.02
    assert model.gradient_share_every == 3


def test_every_old_name_maps_onto_its_new_name_with_a_future_warning() -> None:
    with pytest.warns(FutureWarning) as record:
        model = Fegan(**SMALL, **OLD)
    warned = {str(warning.message).split("`")[1] for warning in record if "renamed" in str(warning.message)}
    assert warned == set(OLD)
    removal = {str(w.message).split("`")[1]: str(w.message).split("fegan-anomalib ")[1][:3] for w in record}
    assert removal["gradient_norm_every"] == "0.5" and removal["score_lambda"] == "0.4"
    _check_new_values(model)


def test_new_names_give_no_warning(recwarn: pytest.WarningsRecorder) -> None:
    Fegan(**SMALL, use_augmenter=False, feature_map_weight=0.9)
    assert not [w for w in recwarn if "renamed" in str(w.message)]


def test_checkpoint_of_0_1_with_old_names_loads(tmp_path: Path) -> None:
    with pytest.warns(FutureWarning):
        source = Fegan(**SMALL, **OLD)
    hyper_parameters = {k: v for k, v in source.hparams.items() if k not in {RENAMED[o] for o in OLD}}
    hyper_parameters.update(OLD)  # as 0.1 wrote them
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": source.state_dict(),
            "hyper_parameters": hyper_parameters,
            "pytorch-lightning_version": lightning.__version__,
            "epoch": 2,
        },
        path,
    )
    with pytest.warns(FutureWarning, match="`score_lambda` is renamed `feature_map_weight`"):
        loaded = Fegan.load_from_checkpoint(path)
    _check_new_values(loaded)
    assert loaded.trained_epochs == 3
    for key, value in source.state_dict().items():
        assert torch.allclose(loaded.state_dict()[key].float(), value.float(), equal_nan=True), key  # NaN: unfitted


def test_saved_config_with_old_names_parses_in_anomalib_cli(tmp_path: Path) -> None:
    config = tmp_path / "old.yaml"
    config.write_text(
        "model:\n  class_path: fegan_anomalib.Fegan\n  init_args:\n    use_mse: false\n    score_lambda: 0.8\n"
    )
    result = anomalib_cli("train", "--config", str(config), "--print_config", cwd=tmp_path)
    assert "use_mse: false" in result.stdout and "score_lambda: 0.8" in result.stdout
