"""Checks that stop FEGAN before it trains, tests, exports or loads something broken.

Each one turns a failure that would otherwise surface far away (a NaN model, a key-list error, NaN
scores in an exported graph) into a message that names the cause and the fix. None of them is part
of the training recipe, so they live here rather than in ``lightning_model.py``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from anomalib.post_processing import PostProcessor
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from .defaults import (
    ARCHITECTURE_FIELDS,
    ARCHITECTURE_KEY,
    FEATURE_SETTINGS,
    MODEL_ARGUMENTS,
    NEWER_THAN_RECORD,
    SCORING_KEY,
    SCORING_SETTINGS,
    STATISTICS_SETTINGS,
    UNRECORDED_SETTINGS,
)
from .renamed import rename_in_place

logger = logging.getLogger(__name__)

# the ONNX opset the exporter of torch 2.14 builds natively (to_onnx)
ONNX_OPSET = 18
# 0.2's values of the deprecated collapse arguments: every 0.2 checkpoint carries them, nobody chose them
COLLAPSE_DEFAULTS_0_2 = (1e-4, 20)
# warnings FEGAN's fit, test and predict trigger in Lightning that a user can do nothing about, silenced for that
# stage only (setup to teardown)
QUIET_STAGE = (
    # the frozen FEN and frozen BatchNorm layers are in eval mode by design; Lightning warns about any such module
    (PossibleUserWarning, r"Found \d+ module\(s\) in eval mode"),
    # Lightning 2.6's own use of a pytree API that torch 2.14 deprecates (lightning/pytorch/utilities/_pytree.py)
    (Warning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)
# the statistics buffers of the score: a checkpoint's are dropped when a statistics setting differs from its own
STATISTICS_PREFIX = "model.anomaly_map_generator."


def check_arguments(input_size: tuple[int, int] | None, image_size: tuple[int, int], max_epochs: int | None) -> None:
    """Refuse a custom pre-processor that resizes elsewhere than ``image_size``, and a non-positive epoch budget."""
    if input_size is not None and tuple(input_size) != image_size:
        msg = (
            f"The pre_processor resizes to {tuple(input_size)} but image_size is {image_size}. Set "
            f"image_size to the pre-processor's size, or drop the custom pre_processor."
        )
        raise ValueError(msg)
    if max_epochs is not None and max_epochs < 1:
        msg = f"max_epochs must be a positive number of epochs, got {max_epochs}."
        raise ValueError(msg)


def resolve_fine_feature_loss(fine_feature_loss: bool | None, fine_tap: str) -> bool:
    """Return whether L_fea reads what F reads: not given (``None``), wherever F reads a ``fine_tap`` [A7d].

    ``None`` rather than ``True`` is the default so that ``fine_tap: none`` (the paper's reading,
    ``configs/fegan_mvtec.yaml``) trains the paper's loss at the tap alone, with no second setting.
    """
    return fine_tap != "none" if fine_feature_loss is None else fine_feature_loss


def check_fine_feature_loss(fine_feature_loss: bool, fine_tap: str) -> None:
    """Refuse to train a feature loss at the fine tap without one.

    Checked when training starts, not when the module is built: a checkpoint trained at both layers may be scored
    with ``fine_tap: none`` (the loss is not used then).
    """
    if fine_feature_loss and fine_tap == "none":
        msg = (
            "fine_feature_loss=True trains the encoder at fine_tap too, but fine_tap is 'none': give one "
            "(e.g. fine_tap='relu3_3') or set fine_feature_loss=False."
        )
        raise ValueError(msg)


class FiniteLosses:
    """Stop a diverged run (a NaN/Inf loss) with the loss's name and step, without a host wait in every step.

    Each step's losses are tested on their device and copied to the host asynchronously (pinned memory and a CUDA
    event on a GPU); the step after reads them, once its own work is queued, so the GPU never idles for the
    check. A non-finite step has then updated the weights once more, but no checkpoint holds them: every
    pending check is read before a checkpoint is saved and when an epoch ends (``Fegan.on_save_checkpoint``,
    ``on_train_epoch_end``).
    """

    def __init__(self) -> None:
        self.pending: list[tuple[list[str], torch.Tensor, Any, int, int]] = []

    def record(self, losses: dict[str, torch.Tensor], global_step: int, epoch: int) -> None:
        """Queue one step's losses for checking."""
        values = torch.stack([value.detach().float().reshape(()) for value in losses.values()])
        event = None
        if values.is_cuda:
            values = values.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        self.pending.append((list(losses), values, event, global_step, epoch))

    def check(self, keep: int = 0) -> None:
        """Read every queued step but the last ``keep``; raise on the first non-finite loss."""
        while len(self.pending) > keep:
            names, values, event, global_step, epoch = self.pending.pop(0)
            if event is not None:
                event.synchronize()
            if not bool(torch.isfinite(values).all()):
                name, value = next((n, float(v)) for n, v in zip(names, values, strict=True) if not torch.isfinite(v))
                self.pending.clear()
                msg = (
                    f"FEGAN training diverged: {name} is {value} at global step {global_step} (epoch {epoch}). "
                    "Lower `lr`, check the input images for NaN/Inf, or resume from an earlier checkpoint."
                )
                raise FloatingPointError(msg)


def check_train_stats(anomaly_map_generator: nn.Module, action: str) -> None:
    """Scoring with training-image statistics needs them measured, which a fit does (before validation, at its end)."""
    if anomaly_map_generator.needs_train_stats:
        which = (
            f"component_norm={anomaly_map_generator.component_norm!r}, "
            f"feature_distance={anomaly_map_generator.feature_distance!r}"
        )
        msg = (
            f"Cannot {action}: this FEGAN scores with training statistics ({which}) that were never measured "
            "(a fit measures them on its training images; a test or predict measures them when its datamodule has "
            "training images). Load the checkpoint of a finished fit "
            "(`--ckpt_path <run>/weights/lightning/model.ckpt`) with a datamodule of its training images, or use "
            "`--model.component_norm none --model.feature_distance l2`."
        )
        raise RuntimeError(msg)


def check_exportable(post_processor: Any, anomaly_map_generator: nn.Module, rescored: list[str]) -> None:
    """Refuse to export a model whose post-processor (or ``train_stats``) was never fitted, or fitted to another score.

    anomalib's PostProcessor starts with NaN thresholds and min/max and learns them in validation;
    exported before that, every score of the graph is NaN (and OpenVINO's INT8 quantisation fails
    deep inside with NaN clamp bounds), so the user is told here instead. A checkpoint loaded with other
    scoring settings (``rescored``) holds thresholds and min/max learnt on its own score's scale until a test
    re-learns them: exported as it is, its labels and normalised scores would be another scoring's.
    """
    check_train_stats(anomaly_map_generator, "export")
    if not isinstance(post_processor, PostProcessor):  # no thresholds to be unfitted or stale
        return
    if rescored:
        msg = (
            f"Cannot export: the scoring settings {', '.join(rescored)} differ from the checkpoint's, whose thresholds "
            "and normalisation were learnt for its own scoring. Test first, which measures what the settings need "
            "and re-learns them: in Python `engine.test(model, datamodule=...)` and then `engine.export(model, ...)` "
            "without ckpt_path; on the command line `anomalib test ... --ckpt_path CKPT --model.<setting> ... "
            "--trainer.callbacks+=fegan_anomalib.callbacks.SaveRescoredCheckpoint "
            "--trainer.callbacks.path rescored.ckpt`, then `anomalib export --ckpt_path rescored.ckpt`."
        )
        raise RuntimeError(msg)
    needed: dict[str, torch.Tensor] = {}
    if post_processor.enable_thresholding:
        needed |= {"image threshold": post_processor.image_threshold, "pixel threshold": post_processor.pixel_threshold}
    if post_processor.enable_normalization:
        needed |= {"image min/max": post_processor.image_max - post_processor.image_min}
        needed |= {"pixel min/max": post_processor.pixel_max - post_processor.pixel_min}
    unset = [name for name, value in needed.items() if torch.isnan(value).any()]
    if unset:
        msg = (
            f"This FEGAN has no fitted {', '.join(unset)} (its post_processor learns them in validation), so "
            "the exported model would give NaN scores. Export a trained checkpoint: `anomalib export --model "
            "FEGAN --export_type openvino --ckpt_path <run>/weights/lightning/model.ckpt`, or call "
            "Fegan.load_from_checkpoint(...) / engine.fit(...) before to_onnx/to_openvino/to_torch."
        )
        raise RuntimeError(msg)


def check_checkpoint_fits(checkpoint: dict[str, Any], own: dict[str, torch.Tensor], hparams: dict[str, Any]) -> None:
    """Refuse a checkpoint of another model or another FEGAN configuration, naming the difference.

    Drops the derived blur kernel from the checkpoint first, so scoring options can differ from training's.

    Lightning's own message for this is a long key list; here the user learns which model or
    backbone the checkpoint holds and what to pass instead. ``own`` is the model's state dict,
    ``hparams`` its constructor arguments.
    """
    state = checkpoint.get("state_dict", {})
    # the blur kernel is derived from sigma, not learnt; checkpoints written before it became
    # non-persistent carry it: drop it so sigma can differ from training's
    for key in [key for key in state if ".anomaly_map_generator.blur." in key]:
        del state[key]
    missing = [key for key in own if key.startswith("model.") and key not in state]
    unexpected = [key for key in state if key.startswith("model.") and key not in own]
    misshapen = [key for key in own if key in state and not _fits(key, state[key].shape, own[key].shape)]
    if not (missing or unexpected or misshapen):
        return
    saved = checkpoint.get("hyper_parameters", {})
    examples = (missing + unexpected + misshapen)[:5]
    counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(misshapen)} misshapen weights"
    counts += f", e.g. {examples}"
    if "backbone" not in saved:
        msg = (
            f"This checkpoint is not a FEGAN checkpoint (hyper-parameters: {sorted(saved)[:6]}); {counts}. "
            "Pass a checkpoint trained with `--model FEGAN`."
        )
        raise ValueError(msg)
    # Lightning overwrites the saved hyper-parameters with load_from_checkpoint's keyword arguments
    # before on_load_checkpoint, so the architecture is read from the key on_save_checkpoint wrote
    architecture = checkpoint.get(ARCHITECTURE_KEY)
    if architecture is None:
        which = "a checkpoint from before fegan-anomalib recorded its architecture"
    else:
        recorded = {name: architecture.get(name) for name in ARCHITECTURE_FIELDS}
        differing = [
            f"{name}: checkpoint {value!r}, this model {hparams.get(name)!r}"
            for name, value in recorded.items()
            if _same(value) != _same(hparams.get(name))
        ]
        which = "; ".join(differing) if differing else "no architecture argument differs"
    msg = (
        f"This FEGAN checkpoint does not fit this FEGAN ({which}); {counts}. Pass the checkpoint's settings "
        "(e.g. --model.backbone/--model.tap/--model.image_size as it was trained), or a checkpoint trained with these."
    )
    raise ValueError(msg)


def _fits(key: str, saved: torch.Size, own: torch.Size) -> bool:
    """Tell whether a saved tensor fits: the same shape, but the memory keeps as many rows as training chose."""
    if key.endswith(".memory_bank"):
        return saved[1:] == own[1:]
    return saved == own


def _scored_with(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """Return a FEGAN checkpoint's settings, each scoring one at the value it scored with; ``None`` if not FEGAN's.

    Lightning overwrites the saved hyper-parameters with ``load_from_checkpoint``'s arguments, so the record
    ``on_save_checkpoint`` writes (``SCORING_KEY``) wins, and a setting it lacks is newer than the checkpoint: its value
    then (``UNRECORDED_SETTINGS``). A checkpoint written before the record: its hyper-parameters, over those values;
    but a setting added after records began (``NEWER_THAN_RECORD``) can only be an overwritten one, so its value then.
    ``checkpoint_settings`` and ``scoring_changes`` both read this.
    """
    saved = dict(checkpoint.get("hyper_parameters", {}))
    if "backbone" not in saved:
        return None
    rename_in_place(saved, checkpoint=True)  # a 0.1 checkpoint's score_lambda is 0.2's feature_map_weight
    if SCORING_KEY in checkpoint:
        return {**saved, **UNRECORDED_SETTINGS, **checkpoint[SCORING_KEY]}
    return {**UNRECORDED_SETTINGS, **saved, **{name: UNRECORDED_SETTINGS[name] for name in NEWER_THAN_RECORD}}


def checkpoint_settings(checkpoint: dict[str, Any], hparams: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """Return the checkpoint's model arguments for each one not ``given`` here, where they differ.

    anomalib's CLI builds the model from the command line before it loads ``--ckpt_path``, so ``anomalib
    test|predict --model FEGAN --ckpt_path CKPT`` would otherwise build a default FEGAN (256², ...) and refuse
    a checkpoint trained at 128². An argument given (typed, in a config, or by ``load_from_checkpoint``; also at its
    default value: ``Fegan`` leaves the arguments of ``defaults.DEFAULTS`` unset, ``None``, until filled) is kept: a
    scoring option (``sigma``, ``feature_map_weight``, ``image_score_top_ratio``) then rescores the checkpoint, an
    architecture argument that differs is refused by :func:`check_checkpoint_fits`. Training arguments (loss
    weights, augmenter, lr) are not taken: ``fit --ckpt_path`` resumes with the command line's. Empty for a
    checkpoint that is not FEGAN's (that function names it).
    """
    saved = _scored_with(checkpoint)
    if saved is None:
        return {}
    return {
        name: saved[name]
        for name in MODEL_ARGUMENTS
        if name in saved and name not in given and _same(saved[name]) != _same(hparams.get(name))
    }


def scoring_changes(checkpoint: dict[str, Any], hparams: dict[str, Any], own: dict[str, torch.Tensor]) -> list[str]:
    """Return the scoring settings of ``hparams`` that differ from those the checkpoint's statistics were measured with.

    From the record ``on_save_checkpoint`` writes (Lightning overwrites the saved hyper-parameters with
    ``load_from_checkpoint``'s arguments). A checkpoint written before it: its hyper-parameters, and the settings that
    pick F's features (``FEATURE_SETTINGS``) when its statistics do not fit ``own``, the model's state (another grid).
    Empty for a checkpoint that is not FEGAN's.
    """
    recorded = _scored_with(checkpoint)
    if recorded is None:
        return []
    changed = [
        name for name in SCORING_SETTINGS if name in recorded and _same(recorded[name]) != _same(hparams.get(name))
    ]
    state = checkpoint.get("state_dict", {})
    misfit = any(
        key in state and not _fits(key, state[key].shape, value.shape)
        for key, value in own.items()
        if key.startswith(STATISTICS_PREFIX)
    )
    if misfit and SCORING_KEY not in checkpoint:
        changed += [name for name in FEATURE_SETTINGS if name not in changed]
    return changed


def drop_statistics(checkpoint: dict[str, Any], own: dict[str, torch.Tensor]) -> None:
    """Replace the checkpoint's score statistics with the model's unmeasured ones (NaN, an empty memory)."""
    state = checkpoint.get("state_dict", {})
    for key in [key for key in state if key.startswith(STATISTICS_PREFIX)]:
        del state[key]
    state.update({key: value for key, value in own.items() if key.startswith(STATISTICS_PREFIX)})


def _same(value: Any) -> Any:
    """Compare hyper-parameters across YAML/CLI forms: ``128`` and ``[128, 128]`` are the same size."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


class CheckpointGuards:
    """The Lightning module's checkpoint and export hooks: record, adopt and check settings; refuse unfit exports.

    A mixin of :class:`~fegan_anomalib.models.fegan.lightning_model.Fegan` (before ``AnomalibModule`` in its bases,
    each hook calls anomalib's through ``super()``), kept here with the checks it runs so the recipe stays the recipe.
    """

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the settings that shape the weights and the score; never save weights stepped with a NaN loss.

        Every pending loss check is read first (``FiniteLosses``), so no checkpoint holds a diverged step's weights.
        """
        self.finite_losses.check()
        super().on_save_checkpoint(checkpoint)
        checkpoint[ARCHITECTURE_KEY] = {name: self.hparams.get(name) for name in ARCHITECTURE_FIELDS}
        checkpoint[SCORING_KEY] = {name: self.hparams.get(name) for name in SCORING_SETTINGS}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take the checkpoint's settings for arguments left at their defaults; refuse one that does not fit."""
        self.trained_epochs = checkpoint["epoch"] + 1 if "epoch" in checkpoint else None  # for test reports
        adopted = checkpoint_settings(checkpoint, self.hparams, self.given_settings)
        if adopted:  # rebuild before the checkpoint's weights load into it
            logger.info("FEGAN: settings from the checkpoint (left at their defaults here): %s", adopted)
            self.hparams.update(adopted)
            self.model = self._build_model().to(self.device)
            if "image_size" in adopted and self._default_pre_processor and self.pre_processor is not None:
                # in place: the trainer already holds this pre-processor as a callback (anomalib's own
                # on_load_checkpoint, below, then restores the transform the checkpoint recorded, if any)
                resized = self.configure_pre_processor(self.model.image_size)
                self.pre_processor.transform = resized.transform
                self.pre_processor.export_transform = resized.export_transform
            check_arguments(self.input_size, self.model.image_size, self.max_epochs)  # a custom pre-processor
        # a test re-learns the thresholds for these
        self.rescored = scoring_changes(checkpoint, self.hparams, self.state_dict())
        if set(self.rescored) & set(STATISTICS_SETTINGS):  # measured again when a test or predict starts
            logger.info("FEGAN: %s differ from the checkpoint's: its statistics are measured again", self.rescored)
            drop_statistics(checkpoint, self.state_dict())
        check_checkpoint_fits(checkpoint, self.state_dict(), self.hparams)
        super().on_load_checkpoint(checkpoint)

    def to_torch(self, *args: Any, **kwargs: Any) -> Any:
        """Export to torch (anomalib's), for a model with fitted thresholds only (:func:`check_exportable`)."""
        check_exportable(self.post_processor, self.model.anomaly_map_generator, self.rescored)
        return super().to_torch(*args, **kwargs)

    def to_onnx(self, *args: Any, **kwargs: Any) -> Any:
        """Export to ONNX (anomalib's; ``to_openvino`` goes through it), for a model with fitted thresholds only.

        Opset 18 unless asked otherwise: anomalib 2.7 asks for 14, torch 2.14's exporter builds 18 and its
        down-conversion of this graph fails, printing a traceback and keeping 18 ("The model was not modified");
        asking for 18 writes the same graph without the traceback.
        """
        check_exportable(self.post_processor, self.model.anomaly_map_generator, self.rescored)
        kwargs.setdefault("opset_version", ONNX_OPSET)
        return super().to_onnx(*args, **kwargs)


def warn_collapse_arguments(threshold: float | None, steps: int | None) -> None:
    """Warn that ``d_collapse_threshold``/``d_collapse_steps``, when given, do nothing since 0.3, and why.

    In 0.1-0.2 they re-initialised D after ``steps`` in a row with its loss under ``threshold``.

    The guard's premise, "a collapsed D's gradient to G vanishes", holds for neither adversarial term: feature matching
    (the default) never reads D's logit, and the non-saturating BCE's gradient at the logit, σ(l) − 1, is largest
    when D is sure G(x̃) is fake. At the project's budgets it never fired (D's lowest epoch mean: 0.003 in the demo,
    ≥ 0.02 on magnetic_tile, against its 1e-4 threshold), and re-initialising left D's BatchNorm statistics behind.
    A diverged run is stopped by :class:`FiniteLosses` instead.
    """
    if (threshold, steps) == COLLAPSE_DEFAULTS_0_2:  # a 0.2 checkpoint's hyper-parameters: nothing to tell
        return
    pairs = (("d_collapse_threshold", threshold), ("d_collapse_steps", steps))
    given = [name for name, value in pairs if value is not None]
    if given:
        warnings.warn(
            f"FEGAN's {' and '.join(f'`{name}`' for name in given)} has no effect since fegan-anomalib 0.3 and will be "
            "removed in 0.4: the discriminator is no longer re-initialised (its collapse guard never fired, and "
            "neither adversarial loss loses its gradient when D is confident). Drop the argument.",
            FutureWarning,
            stacklevel=3,
        )


class QuietStages:
    """Silence, from a stage's setup to its teardown, the third-party warnings of ``QUIET_STAGE``: a mixin of ``Fegan``.

    They are about what FEGAN does by design, so a user can do nothing about them; the process gets its filters back.
    """

    _quiet_stage: warnings.catch_warnings | None = None

    def setup(self, stage: str) -> None:
        """Silence two third-party warnings about what FEGAN does by design, until the stage's teardown."""
        super().setup(stage)
        if self._quiet_stage is None:
            self._quiet_stage = warnings.catch_warnings()
            self._quiet_stage.__enter__()
            for category, message in QUIET_STAGE:
                warnings.filterwarnings("ignore", message=message, category=category)

    def teardown(self, stage: str) -> None:
        """Give the process its warning filters back after the stage."""
        super().teardown(stage)
        if self._quiet_stage is not None:
            self._quiet_stage.__exit__(None, None, None)
            self._quiet_stage = None


def log_encoder_source(encoder_init: str, has_fen_source: bool) -> None:
    """Say that a pre-trained-style encoder copies a random FEN (no weights given), which the CPU demo does."""
    if encoder_init == "pretrained" and not has_fen_source:
        logger.info(
            "FEGAN: encoder_init='pretrained' copies the FEN into the encoder; with pre_trained=false and no "
            "weights file the FEN keeps its random initialisation, so the encoder starts as a copy of that random "
            "network (what the CPU demo does). Give --model.weights or pre_trained=true for a pre-trained start."
        )
