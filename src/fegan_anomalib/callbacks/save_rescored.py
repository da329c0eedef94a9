"""``SaveRescoredCheckpoint``: keep a test's rescoring (settings, statistics, thresholds) as a checkpoint to export."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from fegan_anomalib.models.fegan.defaults import MODEL_ARGUMENTS
from fegan_anomalib.models.fegan.renamed import rename_in_place

logger = logging.getLogger(__name__)


class SaveRescoredCheckpoint(Callback):
    r"""After ``anomalib test`` of a checkpoint with other scoring settings, write it again with them.

    Why a callback: a scoring option (``--model.sigma 4``, ``--model.feature_distance nearest``, ...) rescores a
    checkpoint when a test starts (statistics measured, thresholds re-learnt), but a test writes no checkpoint, and
    ``anomalib export --ckpt_path CKPT`` reloads the checkpoint alone (anomalib's ``Engine.export`` calls
    ``load_from_checkpoint(ckpt_path)`` without the model's arguments), so a setting typed there is not applied. The
    checkpoint this writes is the tested one with the model's state (weights, statistics, thresholds) and settings in
    place of its own; its training arguments and loop state stay the checkpoint's. Exported, it scores and labels as
    the test did. Use::

        anomalib test --model FEGAN --ckpt_path CKPT --data ... --model.feature_distance nearest --model.sigma 4 \
            --trainer.callbacks+=fegan_anomalib.callbacks.SaveRescoredCheckpoint \
            --trainer.callbacks.path rescored.ckpt
        anomalib export --model FEGAN --ckpt_path rescored.ckpt --export_type openvino

    Args:
        path: the checkpoint to write (its folder is made).

    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refuse before the test runs if it loads no checkpoint to rewrite."""
        if trainer.ckpt_path is None:
            msg = (
                "SaveRescoredCheckpoint rewrites the checkpoint a test loads: give the test one "
                "(`anomalib test --ckpt_path CKPT`, or `engine.test(model, datamodule=..., ckpt_path=CKPT)`)."
            )
            raise ValueError(msg)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refuse before scoring if the model's test start could not re-learn the thresholds (no validation set)."""
        if getattr(pl_module, "rescored", None):
            msg = (
                f"SaveRescoredCheckpoint: the thresholds for {pl_module.rescored} were not re-learnt (the datamodule "
                "has no validation images), so no checkpoint would score as this test. Test with a datamodule that "
                "has a validation split (anomalib's MVTecAD, Folder)."
            )
            raise RuntimeError(msg)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the tested checkpoint with the model's state and settings (rank 0; every rank waits for it)."""
        state = trainer.strategy.lightning_module_state_dict()  # whole on every strategy; a collective on some
        if trainer.is_global_zero:
            checkpoint = trainer.strategy.checkpoint_io.load_checkpoint(trainer.ckpt_path)
            hparams = dict(checkpoint.get("hyper_parameters", {}))
            rename_in_place(hparams, checkpoint=True)  # an old name left in would override the new value on load
            hparams.update({name: pl_module.hparams[name] for name in MODEL_ARGUMENTS})  # training's stay the file's
            checkpoint["state_dict"] = {name: value.detach().cpu() for name, value in state.items()}
            checkpoint["hyper_parameters"] = hparams
            pl_module.on_save_checkpoint(checkpoint)  # the module's own records (FEGAN's settings, anomalib's)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, self.path)
            logger.info("SaveRescoredCheckpoint: %s, the tested weights with this test's scoring, written.", self.path)
        trainer.strategy.barrier("SaveRescoredCheckpoint")
