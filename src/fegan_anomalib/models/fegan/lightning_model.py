"""FEGAN: Feature Extraction Based Approach for GAN Anomaly Detection and Localization.

Fan, Zhang, Dai, IEEE Access 2024. A frozen VGG19 (FEN) supervises a VGG-shaped encoder on M-SE-augmented
normal images, a decoder reconstructs the clean image and a DCGAN discriminator sharpens it; the anomaly
map fuses the FEN-vs-encoder feature distance with the reconstruction error.

This module is the training recipe: constructor arguments, two Adam optimisers, manual G-then-D steps with the
augmenter inside ``training_step``. Around it: the checks and checkpoint hooks (``guards.py``), the settings table
(``defaults.py``), the score (``scoring/``), when and on which images its statistics are measured (``measuring.py``).

Example:
    >>> from anomalib.engine import Engine  # doctest: +SKIP
    >>> Engine(max_epochs=5).train(Fegan(image_size=128), datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

"""

from __future__ import annotations

import logging
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import ImageVisualizer, Visualizer
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import optim
from torchvision.transforms.v2 import Compose, Resize

from fegan_anomalib.data.checks import check_mvtec_masks
from fegan_anomalib.metrics import ComponentAUROC

from . import callbacks
from .augmentation import build_augmentation, step_generator
from .defaults import DEFAULTS, MODEL_ARGUMENTS
from .evaluation import fegan_evaluator, fegan_visualizer
from .fen_cache import FenFeatureCache
from .guards import (
    CheckpointGuards,
    FiniteLosses,
    QuietStages,
    check_arguments,
    check_fine_feature_loss,
    log_encoder_source,
    resolve_fine_feature_loss,
    warn_collapse_arguments,
)
from .loss import DiscriminatorLoss, GeneratorLoss
from .measuring import StatisticsSchedule
from .renamed import rename_in_place
from .subnormal import flush_subnormal_
from .torch_model import FeganModel

__all__ = ["FEGAN", "Fegan"]

logger = logging.getLogger(__name__)


class Fegan(CheckpointGuards, QuietStages, StatisticsSchedule, AnomalibModule):
    """FEGAN Lightning module.

    The network and scoring arguments default to ``None``, "not given", filled from ``defaults.DEFAULTS`` (the values
    below): loading a checkpoint, one not given takes the checkpoint's setting and one given wins (a scoring one
    rescores the checkpoint: ``measuring.StatisticsSchedule``). **[A#]** tags: docs/decisions.md.

    Args:
        image_size (int | tuple[int, int]): model input (H, W), a multiple of the tap's stride; the default
            pre-processor only resizes to it **[A5]**. Defaults to ``256``.
        backbone (str): torchvision VGG of FEN and encoder. Defaults to ``"vgg19"``.
        tap (str): FEN and encoder cut, block 4's last ReLU (VGG16: ``relu4_3``) **[A1b]**. Defaults to ``"relu4_4"``.
        pre_trained (bool): torchvision ImageNet weights for the FEN (downloaded when online). Defaults to ``True``.
        weights (str | None): local torchvision-keyed state dict for the FEN; overrides ``pre_trained``.
        encoder_init (str): ``"pretrained"`` (a copy of the FEN, whatever its weights) or ``"random"`` **[A2]**.
        encoder_batchnorm (str): ``"frozen"`` (keeps the FEN's statistics, by measurement) or ``"train"``.
        lambda_fea, lambda_con, lambda_adv (float): the loss weights (Eq. 4). Default ``30``, ``30``, ``1``.
        fine_feature_loss (bool | None): L_fea (Eq. 1) over the features F reads, ``fine_tap``'s beside the tap's, so
            the encoder is trained at both: an extension the paper does not make **[A7d]**. ``None`` (the default):
            wherever F reads a ``fine_tap``; ``False`` trains the paper's loss at the tap alone.
        adversarial_loss (str): ``"feature_matching"`` (GANomaly's, by measurement) or ``"bce"`` (the paper's) **[A6]**.
        feature_map_weight (float): λ of Eq. 8, ``S = λ·F + (1 − λ)·R``. Defaults to ``0.8`` (paper: 0.6) **[A7c]**.
        component_norm (str): ``"train_stats"`` (F, R standardised on training images **[A7]**) or ``"none"``.
        sigma (float): Gaussian smoothing of the map; ``0`` is none (the paper). Defaults to ``0``.
        feature_distance (str): F of a cell's residual θ*(x) − θ(x): ``"l2"`` (Eq. 6), ``"mahalanobis"`` (per cell)
            **[A7b]**, ``"nearest"`` (a memory, position-free), ``"mahalanobis+nearest"`` (both, default) **[A7c]**.
        image_score_top_ratio (float): image score = mean of this share of the map's top pixels; ``0`` is their
            maximum (Eq. 10) **[A8b]**. Defaults to ``0.01``.
        mahalanobis_ridge (float): per-cell divisor ``sqrt(var + ridge·mean(var))`` **[A7b]**. Defaults to ``0.3``.
        memory_size (int): the most training cells the ``"nearest"`` memory keeps (a coreset) **[A7c]**. ``4096``.
        fine_tap (str): an earlier layer whose residual F reads too, on its finer grid: ``"previous_block"`` (the last
            ReLU of the stage before the tap's: ``relu3_4``, VGG16 ``relu3_3``), a layer name, or ``"none"`` (the tap
            alone, the paper) **[A7d]**. Defaults to ``"previous_block"``.
        image_score_from (str): the map the image score is read from: ``"anomaly_map"`` (S, Eq. 10) or
            ``"feature_map"`` (F alone, before R and the blur) **[A8c]**. Defaults to ``"feature_map"``.
        density_reweighting (bool): divide the nearest distance by its memory row's spacing, PatchCore's density
            re-weighting read per cell **[A7f]**. Defaults to ``False``.
        use_discriminator, use_fen, use_augmenter (bool): Table 7's components. Default ``True``.
        augmenter (str): a class of ``augmentation`` (``MultiScaleSelfEnhancement``, ``Cutout``, ``CutoutColour``,
            ``RIAD``, ``SCADN``: Table 6) or a dotted class path; ``augmenter_args`` its further arguments.
        augmenter_area_ratio (float): altered area / image area, the same for every augmenter (Table 5). ``0.20``.
        augmenter_max_patch_ratio (float): M-SE's largest patch / image area. Defaults to ``0.01``.
        augmenter_seed (int): seeds the augmenter with (seed, step, rank): resumable, ranks differ. Defaults to ``0``.
        gradient_share_every (int): log each loss term's share of the update every this many batches. ``10``.
        fen_cache_mb (float): memory for the FEN's features of the training images (``fen_cache.py``). ``1024``.
        lr, beta1, beta2, weight_decay (float): Adam's, for G and D. Default ``2e-4``, ``0.5``, ``0.999``, ``1e-5``.
        d_collapse_threshold, d_collapse_steps: deprecated, no effect since 0.3 (``guards.warn_collapse_arguments``).
        max_epochs (int | None): ``None`` leaves it to the trainer; a number overrides it (``anomalib benchmark``).
        channels_last (bool): channels-last convolution weights, faster with oneDNN on CPU. Defaults to ``True``.
        flush_denormal (bool): on CPU, zero subnormal weights and Adam moments (slow on x86, ``subnormal.py``).
        pre_processor, post_processor, evaluator, visualizer: anomalib components, as for any model.
        use_mse, augmentation, augmentation_args, mse_area_ratio, mse_max_patch_ratio, mse_seed, score_lambda,
            d_collapse_loss, gradient_norm_every: deprecated names of 0.1 / 0.2 (``renamed.py``; ``FutureWarning``).

    """

    def __init__(
        self,
        image_size: int | tuple[int, int] | None = None,
        backbone: str | None = None,
        tap: str | None = None,
        pre_trained: bool | None = None,
        weights: str | None = None,
        encoder_init: str | None = None,
        encoder_batchnorm: str | None = None,
        lambda_fea: float = 30.0,
        lambda_con: float = 30.0,
        lambda_adv: float = 1.0,
        adversarial_loss: str = "feature_matching",
        fine_feature_loss: bool | None = None,
        feature_map_weight: float | None = None,
        component_norm: str | None = None,
        sigma: float | None = None,
        feature_distance: str | None = None,
        image_score_top_ratio: float | None = None,
        mahalanobis_ridge: float | None = None,
        memory_size: int | None = None,
        fine_tap: str | None = None,
        image_score_from: str | None = None,
        density_reweighting: bool | None = None,
        use_discriminator: bool | None = None,
        use_fen: bool | None = None,
        use_augmenter: bool = True,
        augmenter: str = "MultiScaleSelfEnhancement",
        augmenter_args: dict[str, Any] | None = None,
        augmenter_area_ratio: float = 0.20,
        augmenter_max_patch_ratio: float = 0.01,
        augmenter_seed: int = 0,
        gradient_share_every: int = 10,
        fen_cache_mb: float = 1024.0,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        weight_decay: float = 1e-5,
        d_collapse_threshold: float | None = None,
        d_collapse_steps: int | None = None,
        max_epochs: int | None = None,
        channels_last: bool | None = None,
        flush_denormal: bool = True,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
        *,
        use_mse: bool | None = None,
        augmentation: str | None = None,
        augmentation_args: dict[str, Any] | None = None,
        mse_area_ratio: float | None = None,
        mse_max_patch_ratio: float | None = None,
        mse_seed: int | None = None,
        score_lambda: float | None = None,
        d_collapse_loss: float | None = None,
        gradient_norm_every: int | None = None,
    ) -> None:
        side = DEFAULTS["image_size"] if image_size is None else image_size  # not a new image_size: hparams read it
        size = (side, side) if isinstance(side, int) else tuple(side)
        default_pre_processor = pre_processor is True
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(size)
        super().__init__(pre_processor, post_processor, evaluator, visualizer)
        rename_in_place(self.hparams)  # the deprecated names of 0.1, if given, win (with a FutureWarning)
        h = self.hparams
        # the settings given (typed, or from a config or checkpoint) win over a loaded checkpoint's; the rest default
        self.given_settings = {name for name in DEFAULTS if h.get(name) is not None}
        h.update({name: value for name, value in DEFAULTS.items() if h.get(name) is None})
        check_arguments(self.input_size, size, max_epochs)
        self._default_pre_processor = default_pre_processor  # resized with the model when a checkpoint sets the size
        self.model = self._build_model()  # its pre-trained FEN weights: read at fit start (on_fit_start)
        log_encoder_source(h.encoder_init, self.model.has_fen_source)
        self.augmenter = build_augmentation(
            h.augmenter, h.augmenter_area_ratio, h.augmenter_max_patch_ratio, **(h.augmenter_args or {})
        )
        self.use_augmenter, self.augmenter_seed = h.use_augmenter, h.augmenter_seed
        self.gradient_share_every = h.gradient_share_every
        self._fine_feature_loss_argument = fine_feature_loss
        self._resolve_feature_loss()
        self.fen_cache = FenFeatureCache(fen_cache_mb)
        lambda_adv = lambda_adv if h.use_discriminator else 0.0
        self.generator_loss = GeneratorLoss(lambda_fea, lambda_con, lambda_adv, adversarial_loss)
        self.discriminator_loss = DiscriminatorLoss()
        self.finite_losses = FiniteLosses()
        self.automatic_optimization = False
        self.lr, self.betas, self.weight_decay = lr, (beta1, beta2), weight_decay
        self.max_epochs, self.flush_denormal = max_epochs, flush_denormal
        warn_collapse_arguments(h.d_collapse_threshold, d_collapse_steps)
        # val_F_* / val_R_* rank images by the model's own image score (its top share), as the fused score does
        self.component_auroc = ComponentAUROC(image_score=self._image_score)
        self.statistics_step: int | None = None  # the global step the scoring statistics were measured at
        self.rescored: list[str] = []  # scoring settings that differ from a loaded checkpoint's (guards)
        self.trained_epochs: int | None = None  # epochs of a loaded checkpoint (Lightning's "epoch" + 1)

    @property
    def fine_feature_loss(self) -> bool:
        """Whether L_fea reads both layers F reads: the hyper-parameter as resolved (``_resolve_feature_loss``)."""
        return self.hparams.fine_feature_loss

    def _resolve_feature_loss(self) -> None:
        """Decide ``fine_feature_loss`` from its argument and ``fine_tap``, and record it with the checkpoint."""
        resolved = resolve_fine_feature_loss(self._fine_feature_loss_argument, self.hparams.fine_tap)
        self.hparams.fine_feature_loss = resolved

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Adopt the checkpoint's settings (``CheckpointGuards``); a ``fine_tap`` adopted decides an unset loss."""
        super().on_load_checkpoint(checkpoint)
        self._resolve_feature_loss()

    def fen_target(self, images: torch.Tensor) -> torch.Tensor:
        """Return the FEN's features the feature loss reads (and the cache keeps): the tap's, or both F reads."""
        return self.model.fen_scored_features(images) if self.fine_feature_loss else self.model.fen_features(images)

    def _image_score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Score (B, H, W) maps as the model does (its top share's mean, or maximum)."""
        return self.model.anomaly_map_generator.image_score(anomaly_map)

    def _build_model(self) -> FeganModel:
        """Build the torch model from the module's arguments (its FEN weights are read at ``on_fit_start``)."""
        h = self.hparams
        size = (h.image_size, h.image_size) if isinstance(h.image_size, int) else tuple(h.image_size)
        return FeganModel(image_size=size, **{name: h[name] for name in MODEL_ARGUMENTS if name != "image_size"})

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize only: the model normalises internally, so the exported graph holds it **[A5]**."""
        image_size = image_size or (DEFAULTS["image_size"],) * 2
        return PreProcessor(transform=Compose([Resize(image_size, antialias=True)]))

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Report the paper's figures plus AUPRO and F1 (``evaluation.fegan_evaluator``)."""
        return fegan_evaluator()

    @classmethod
    def configure_visualizer(cls) -> ImageVisualizer:
        """Draw image, ground truth, heat map, segmentation (``evaluation.fegan_visualizer``)."""
        return fegan_visualizer()

    def prepare_data(self) -> None:
        """Check an MVTec-layout data set's masks by name before anomalib's MVTecAD reads it (``data.checks``)."""
        check_mvtec_masks(self.trainer.datamodule if self._trainer is not None else None)

    def configure_callbacks(self) -> list[Callback]:
        """Add FEGAN's input check, resumable loader, DDP buffer sync, metrics files and curves to anomalib's.

        Lightning asks at every stage and announces each callback whose type the Trainer holds ("... will override
        existing callbacks"): a stage returns only what the Trainer lacks (FEGAN's hold no state across stages).
        """
        attached = self._trainer.callbacks if self._trainer is not None else []
        attached_ids, attached_types = {id(c) for c in attached}, {type(c) for c in attached}
        own = [
            callbacks.ValidateData(),
            callbacks.ResumableTrainLoader(),
            callbacks.BroadcastBuffers(),
            callbacks.SaveTestMetrics(),
            callbacks.LearningCurves(),
            callbacks.TrainingImages(),
        ]
        return [
            *(c for c in super().configure_callbacks() if id(c) not in attached_ids),
            *(c for c in own if type(c) not in attached_types),
        ]

    def configure_optimizers(self) -> list[optim.Optimizer]:
        """Adam for the generator (encoder + decoder) and, when used, for the discriminator (fused on a GPU)."""
        adam = {"lr": self.lr, "betas": self.betas, "weight_decay": self.weight_decay}
        if self.device.type == "cuda":
            adam["fused"] = True
        optimizers = [optim.Adam([*self.model.encoder.parameters(), *self.model.decoder.parameters()], **adam)]
        if self.model.discriminator is not None:
            optimizers.append(optim.Adam(self.model.discriminator.parameters(), **adam))
        return optimizers

    def _augmenter_generator(self) -> torch.Generator:
        """Seed this step's augmenter from (augmenter_seed, global step, rank) only (``step_generator``)."""
        return step_generator(self.augmenter_seed, self.global_step, self.global_rank)

    def training_step(self, batch: Batch, batch_idx: int = 0, *args, **kwargs) -> STEP_OUTPUT:
        """One forward, then a generator step and a discriminator step on the detached fake."""
        step = self.global_step  # before this step's optimiser steps: the step a diverged loss is reported at
        optimizers = self.optimizers()
        g_opt, d_opt = (optimizers, None) if not isinstance(optimizers, list) else (optimizers[0], optimizers[-1])
        clean = batch.image
        augmented = self.augmenter(clean, generator=self._augmenter_generator())[0] if self.use_augmenter else clean
        fen_features = self.fen_cache(clean, self.fen_target, batch.image_path) if self.model.use_fen else None
        output = self.model(augmented, clean, fen_features, scored=self.fine_feature_loss)
        real = self.model.to_gan_range(clean)
        discriminator = self.model.discriminator
        # toggling freezes D while G steps (no D gradients computed or all-reduced under DDP) and vice versa
        self.toggle_optimizer(g_opt)
        adversarial = self.generator_loss.adversarial_input(discriminator, real, output.reconstruction)
        g_loss, terms = self.generator_loss(
            real, output.reconstruction, output.fen_features, output.encoder_features, adversarial
        )
        gradient_shares = {}
        if self.gradient_share_every > 0 and batch_idx % self.gradient_share_every == 0:
            gradient_shares = self.generator_loss.gradient_shares(
                terms, list(self.model.encoder.parameters()), list(self.model.decoder.parameters())
            )
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        self._step(g_opt)
        self.untoggle_optimizer(g_opt)
        losses = {"generator_loss": g_loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        if discriminator is not None and d_opt is not None:
            self.toggle_optimizer(d_opt)
            d_loss = self.discriminator_loss(discriminator(real), discriminator(output.reconstruction.detach()))
            d_opt.zero_grad()
            self.manual_backward(d_loss)
            self._step(d_opt)
            self.untoggle_optimizer(d_opt)
            losses["discriminator_loss"] = d_loss.detach()
        self.finite_losses.record(losses, step, self.current_epoch)
        self.log_dict(losses, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(clean))
        if gradient_shares:
            self.log_dict(gradient_shares, on_step=False, on_epoch=True, batch_size=len(clean))
        self.finite_losses.check(keep=1)  # the step before's: this step's work is queued, the GPU stays busy
        return losses

    def _step(self, optimizer: Any) -> None:
        """Step an optimiser; on CPU, flush the subnormal values it leaves (``subnormal.py``)."""
        optimizer.step()
        if self.flush_denormal and self.device.type == "cpu":
            flush_subnormal_(optimizer.optimizer)

    def on_fit_start(self) -> None:
        """Load the FEN's pre-trained weights, unless a checkpoint or state dict brought them (no download then)."""
        self.model.load_fen_weights()

    on_validation_start = on_fit_start

    def on_train_end(self) -> None:
        """Read the last loss checks; score the final weights with their own statistics, validated or not."""
        self.finite_losses.check()
        self.measure_final_statistics()

    def on_train_start(self) -> None:
        """Refuse a feature loss at a fine tap without one; start every fit with an empty FEN cache."""
        check_fine_feature_loss(self.fine_feature_loss, self.hparams.fine_tap)
        self.fen_cache.clear()  # the FEN's weights may have been loaded since

    def on_train_epoch_end(self) -> None:
        """Read the loss checks; let the FEN cache judge the epoch; after the last, the final weights' statistics.

        The epoch's checkpoint, saved after this hook, then carries the final weights' own statistics.
        """
        self.finite_losses.check()
        self.fen_cache.end_epoch(self.current_epoch)
        max_epochs = self.trainer.max_epochs
        if self.trainer.should_stop or (max_epochs is not None and self.current_epoch + 1 >= max_epochs):
            self.on_train_end()

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Score as inference does, keeping R and F apart for the F-only and R-only AUROCs (``val_F_*``/``val_R_*``)."""
        residual, feature, _ = self.model.component_maps(batch.image)
        anomaly_map, pred_score = self.model.anomaly_map_generator.score(residual, feature)
        self.component_auroc.update(residual, feature, batch.gt_label, batch.gt_mask)
        return batch.update(pred_score=pred_score, anomaly_map=anomaly_map)

    def on_validation_epoch_end(self) -> None:
        """Log the F-only and R-only image/pixel AUROCs of this validation (``val_F_*``, ``val_R_*``)."""
        super().on_validation_epoch_end()
        values = self.component_auroc.compute()
        self.component_auroc.reset()
        if values:
            self.log_dict(values, sync_dist=True)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No gradient clipping (manual optimisation), no sanity validation; an epoch budget only when given."""
        arguments: dict[str, Any] = {"gradient_clip_val": 0, "num_sanity_val_steps": 0}
        if self.max_epochs is not None:
            arguments["max_epochs"] = self.max_epochs
        return arguments

    @property
    def learning_type(self) -> LearningType:
        """FEGAN learns from normal images only."""
        return LearningType.ONE_CLASS


class FEGAN(Fegan):
    """:class:`Fegan` under the paper's spelling for ``--model FEGAN``; its docstring is :class:`Fegan`'s (below)."""

    @property
    def name(self) -> str:
        """Same results folder as :class:`Fegan`."""
        return "Fegan"


FEGAN.__doc__ = f"{FEGAN.__doc__.splitlines()[0]}\n\n{Fegan.__doc__.split(chr(10), 1)[1]}"
