"""FEGAN: Feature Extraction Based Approach for GAN Anomaly Detection and Localization.

Fan, Zhang, Dai, IEEE Access 2024. A frozen VGG19 (FEN) supervises a VGG-shaped encoder on M-SE-augmented
normal images, a decoder reconstructs the clean image and a DCGAN discriminator sharpens it; the anomaly
map fuses the FEN-vs-encoder feature distance with the reconstruction error.

This module is the training recipe: constructor arguments (**[A#]** tags resolve in docs/decisions.md), two
Adam optimisers, manual G-then-D steps with the augmenter inside ``training_step``. Around it: the checks and
checkpoint hooks in ``guards.py``, the score's statistics in ``statistics.py``, the data checks in
``fegan_anomalib.data.checks``, the registration in ``models/registration.py``.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from fegan_anomalib import Fegan
    >>> model = Fegan(image_size=128)  # doctest: +SKIP
    >>> Engine(max_epochs=5).train(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

"""

from __future__ import annotations

import logging
import warnings
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
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import optim
from torchvision.transforms.v2 import Compose, Resize

from fegan_anomalib import callbacks
from fegan_anomalib.data.checks import check_mvtec_masks
from fegan_anomalib.metrics import ComponentAUROC

from .augmentation import build_augmentation, step_generator
from .defaults import DEFAULTS
from .evaluation import fegan_evaluator, fegan_visualizer
from .fen_cache import FenFeatureCache
from .guards import (
    MODEL_ARGUMENTS,
    CheckpointGuards,
    FiniteLosses,
    RequireTrainStats,
    check_arguments,
    warn_collapse_arguments,
)
from .loss import DiscriminatorLoss, GeneratorLoss
from .renamed import rename_in_place
from .statistics import measure_scoring_statistics
from .subnormal import flush_subnormal_
from .torch_model import FeganModel

__all__ = ["FEGAN", "Fegan"]

logger = logging.getLogger(__name__)
# warnings FEGAN's fit, test and predict trigger in Lightning that a user can do nothing about, silenced for that
# stage only (setup to teardown)
QUIET_STAGE = (
    # the frozen FEN and frozen BatchNorm layers are in eval mode by design; Lightning warns about any such module
    (PossibleUserWarning, r"Found \d+ module\(s\) in eval mode"),
    # Lightning 2.6's own use of a pytree API that torch 2.14 deprecates (lightning/pytorch/utilities/_pytree.py)
    (Warning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)


class Fegan(CheckpointGuards, AnomalibModule):
    """FEGAN Lightning module.

    Args:
        image_size (int | tuple[int, int]): model input (H, W), a multiple of the tap's stride; the
            default pre-processor only resizes to it **[A5]**. Defaults to ``256``.
        backbone (str): torchvision VGG of FEN and encoder. Defaults to ``"vgg19"``.
        tap (str): FEN and encoder cut **[A1b]**: block 4's last ReLU, stride 8 (a VGG16's is ``relu4_3``); the
            paper's is ``relu5_4``, stride 16 (``configs/fegan_mvtec.yaml``). Defaults to ``"relu4_4"``.
        pre_trained (bool): torchvision ImageNet weights for the FEN (downloaded when online).
            Defaults to ``True``.
        weights (str | None): local torchvision-keyed state dict for the FEN; overrides
            ``pre_trained``. Defaults to ``None``.
        encoder_init (str): ``"pretrained"`` (copy the FEN, whatever its weights: with ``pre_trained=False`` and no
            ``weights``, a copy of the random FEN, logged) or ``"random"`` (an initialisation of its own) **[A2]**.
        encoder_batchnorm (str): ``"frozen"``: the encoder's BatchNorm layers (``_bn`` backbones) keep the FEN's
            statistics; ``"train"``: batch statistics. ``"frozen"`` by measurement (docs/decisions.md,
            "Departures"); VGGs without BatchNorm (the paper's VGG19) are unaffected. Defaults to ``"frozen"``.
        lambda_fea (float): weight of the feature loss. Defaults to ``30``.
        lambda_con (float): weight of the content loss. Defaults to ``30``.
        lambda_adv (float): weight of the adversarial loss. Defaults to ``1``.
        adversarial_loss (str): the generator's adversarial term: ``"feature_matching"`` (GANomaly's distance
            of D's features of x and G(x̃)) or ``"bce"`` (the paper's **[A6]**). Feature matching by measurement:
            the BCE gradient swamps the other terms (docs/decisions.md, "Departures").
            Defaults to ``"feature_matching"``.
        feature_map_weight (float): λ of the anomaly score (Eq. 8): ``S = λ·F + (1 − λ)·R``. Defaults to ``0.8``
            (the paper's 0.6 in ``configs/fegan_mvtec.yaml``; 0.8 measured with the default F **[A7c]**).
        component_norm (str): ``"train_stats"``: F and R standardised by their statistics on normal training images,
            measured during fit (before validation, and for the final weights) **[A7]**; ``"none"``: the paper.
            Defaults to ``"train_stats"``.
        sigma (float): Gaussian smoothing of the map; ``0`` is none (the paper). Defaults to ``0``.
        feature_distance (str): how F scores a tap cell's residual θ*(x) − θ(x). ``"nearest"``: its distance (after
            3×3 averaging) to the nearest residual of any cell of the normal training images, a k-center memory of at
            most ``memory_size`` cells measured during fit **[A7c]**: position-free, so parts that turn or shift
            between images score as parts in place (BENCHMARKS.md, "Unaligned parts"). ``"mahalanobis"``: standardised
            per tap cell and channel by its statistics on the training images **[A7b]** (0.3.0.dev0's default; it learns
            where things usually are). ``"mahalanobis+nearest"``: both, each standardised on the training images,
            summed **[A7c]**: the one setting measured at or above PaDiM and PatchCore on parts in place and parts
            that move. ``"l2"``: Eq. 6, the paper. Defaults to ``"mahalanobis+nearest"``.
        image_score_top_ratio (float): the image score is the mean of this share of the anomaly map's highest
            pixels; ``0`` is their maximum (Eq. 10, the paper) **[A8b]**. A scoring option: rescoring a checkpoint
            needs no retraining. Defaults to ``0.01``.
        mahalanobis_ridge (float): with ``"mahalanobis"`` in ``feature_distance``, divide each residual by
            ``sqrt(var + ridge·mean(var))`` (``0``: plain per-cell whitening, which whitens noise when few images
            estimate the variances) **[A7b]**; a scoring option. Defaults to ``0.3``.
        memory_size (int): with ``"nearest"`` in ``feature_distance``, the most training cells its memory keeps (a
            k-center coreset beyond that) **[A7c]**: the exported graph's size, the search's cost and, on CPU, the
            time to measure the statistics grow with it. Defaults to ``4096`` (the same figures as 16,384 on
            magnetic_tile and hazelnut_mini; BENCHMARKS.md, "Unaligned parts").
        use_discriminator (bool): train with the discriminator (Table 7). Defaults to ``True``.

        The network and scoring arguments (``image_size`` to ``encoder_batchnorm``, ``feature_map_weight`` to
        ``memory_size``, ``use_discriminator``, ``use_fen``, ``channels_last``) default to ``None``: "not given", filled
        from ``defaults.DEFAULTS`` (the values above). Loading a checkpoint (``--ckpt_path``), an argument not given
        takes the checkpoint's setting and one given wins, also when its value equals the default.

        use_fen (bool): use the FEN in loss and score (Table 7). Defaults to ``True``.
        use_augmenter (bool): augment training images with the ``augmenter`` (M-SE; off: Table 7's "G").
            Defaults to ``True``.
        augmenter (str): a class of ``augmentation.py`` (``MultiScaleSelfEnhancement``, ``Cutout``, ``CutoutColour``,
            ``RIAD``, ``SCADN``: Table 6) or a dotted class path; a name keeps hyper-parameters plain data.
        augmenter_args (dict | None): further constructor arguments of ``augmenter``. Defaults to ``None``.
        augmenter_area_ratio (float): altered area / image area (M-SE's total pasted area, Table 5); the
            same for every augmenter, so Table 6 compares them at the same budget. Defaults to ``0.20``.
        augmenter_max_patch_ratio (float): M-SE's largest patch / image area. Defaults to ``0.01``.
        augmenter_seed (int): seeds the augmenter with (seed, global step, rank), not the global RNG, so a
            resumed run repeats the uninterrupted one and DDP ranks differ. Defaults to ``0``.
        gradient_share_every (int): every this many batches, log each weighted loss term's share of the update at
            the encoder's and the decoder's parameters and the cosines between the terms' gradients
            (``grad_share/*``, ``grad_cos/*``: ``GeneratorLoss.gradient_shares``); ``0`` never. Defaults to ``10``.
        fen_cache_mb (float): memory for the frozen FEN's features of each clean training image, reused every
            epoch, on the training device (GPU memory on a GPU: 2 MB per image at 256² and relu4_4); looked up by
            path and checked by a pixel fingerprint, without a host-device wait (``fen_cache.py``); ``0`` off.
            Defaults to ``1024``.
        lr (float): Adam learning rate of G and D. Defaults to ``2e-4``.
        beta1 (float): Adam β1. Defaults to ``0.5``.
        beta2 (float): Adam β2. Defaults to ``0.999``.
        weight_decay (float): Adam weight decay. Defaults to ``1e-5``.
        d_collapse_threshold (float | None): deprecated, no effect since 0.3 (``FutureWarning``; removed in 0.4): the
            re-initialisation of a "collapsed" D it set never fired, and its premise fails for both losses
            (``guards.warn_collapse_arguments``).
        d_collapse_steps (int | None): deprecated with ``d_collapse_threshold``, no effect since 0.3.
        max_epochs (int | None): ``None`` (default) leaves the epoch budget to the trainer, as anomalib's
            own models do (the paper's 200 is in ``configs/fegan_mvtec.yaml``); a number overrides the trainer's,
            for pipelines that give it none (``anomalib benchmark``, ``fegan-compare``).
        channels_last (bool): channels-last convolution weights, faster with oneDNN on CPU
            (``benchmarks/inference.py``). Defaults to ``True``.
        flush_denormal (bool): on CPU, set weights under 1e-20 and subnormal Adam moments to zero after every
            optimiser step: the weights of dead encoder channels decay through that range, and x86 CPUs compute
            with subnormal values many times slower (``subnormal.py``: a late step 6.7 s → 1.7 s; epochs grew 3-6x
            over a run without it). Defaults to ``True``.
        pre_processor, post_processor, evaluator, visualizer: anomalib components, as for any model.
        use_mse (bool | None): deprecated 0.1 name of ``use_augmenter`` (``FutureWarning``; removed in 0.4).
        augmentation (str | None): deprecated 0.1 name of ``augmenter`` (removed in 0.4).
        augmentation_args (dict | None): deprecated 0.1 name of ``augmenter_args`` (removed in 0.4).
        mse_area_ratio (float | None): deprecated 0.1 name of ``augmenter_area_ratio`` (removed in 0.4).
        mse_max_patch_ratio (float | None): deprecated 0.1 name of ``augmenter_max_patch_ratio`` (removed in 0.4).
        mse_seed (int | None): deprecated 0.1 name of ``augmenter_seed`` (removed in 0.4).
        score_lambda (float | None): deprecated 0.1 name of ``feature_map_weight`` (removed in 0.4).
        d_collapse_loss (float | None): deprecated 0.1 name of ``d_collapse_threshold`` (removed in 0.4).
        gradient_norm_every (int | None): deprecated 0.2 name of ``gradient_share_every`` (removed in 0.5).

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
        feature_map_weight: float | None = None,
        component_norm: str | None = None,
        sigma: float | None = None,
        feature_distance: str | None = None,
        image_score_top_ratio: float | None = None,
        mahalanobis_ridge: float | None = None,
        memory_size: int | None = None,
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
        if h.encoder_init == "pretrained" and not self.model.has_fen_source:
            logger.info(
                "FEGAN: encoder_init='pretrained' copies the FEN into the encoder; with pre_trained=false and no "
                "weights file the FEN keeps its random initialisation, so the encoder starts as a copy of that random "
                "network (what the CPU demo does). Give --model.weights or pre_trained=true for a pre-trained start."
            )
        self.augmenter = build_augmentation(
            h.augmenter, h.augmenter_area_ratio, h.augmenter_max_patch_ratio, **(h.augmenter_args or {})
        )
        self.use_augmenter = h.use_augmenter
        self.augmenter_seed = h.augmenter_seed
        self.gradient_share_every = h.gradient_share_every
        self.fen_cache = FenFeatureCache(fen_cache_mb)
        lambda_adv = lambda_adv if h.use_discriminator else 0.0
        self.generator_loss = GeneratorLoss(lambda_fea, lambda_con, lambda_adv, adversarial_loss)
        self.discriminator_loss = DiscriminatorLoss()
        self.finite_losses = FiniteLosses()
        self.automatic_optimization = False
        self.lr = lr
        self.betas = (beta1, beta2)
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.flush_denormal = flush_denormal
        warn_collapse_arguments(h.d_collapse_threshold, d_collapse_steps)
        # val_F_* / val_R_* rank images by the model's own image score (its top share), as the fused score does
        self.component_auroc = ComponentAUROC(image_score=self._image_score)
        self.statistics_step: int | None = None  # the global step the scoring statistics were measured at
        self._quiet_stage: warnings.catch_warnings | None = None
        self.trained_epochs: int | None = None  # epochs of a loaded checkpoint (Lightning's "epoch" + 1)

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

        Lightning asks again at every stage and announces each returned callback whose type the Trainer
        already holds ("... will override existing callbacks passed to Trainer"): after ``engine.fit``, the
        ``engine.test`` of anomalib's Engine (one Trainer for both) printed that line for every callback below.
        So a stage returns only what the Trainer lacks: anomalib's (this module's pre/post-processor,
        evaluator, visualizer) unless that very object is attached, FEGAN's own unless one of its type is
        (they hold no state across stages: each resets itself when its stage starts).
        """
        attached = self._trainer.callbacks if self._trainer is not None else []
        attached_ids, attached_types = {id(c) for c in attached}, {type(c) for c in attached}
        own = [
            callbacks.ValidateData(),
            RequireTrainStats(),
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
        """Adam for the generator (encoder + decoder) and, when used, for the discriminator.

        On a GPU, torch's fused Adam: one kernel per step instead of several per parameter, and it takes a
        gradient scaler's inf check on the device (``16-mixed``) instead of a host read per step.
        """
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
        fen_features = self.fen_cache(clean, self.model.fen_features, batch.image_path) if self.model.use_fen else None
        output = self.model(augmented, clean, fen_features)
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
        """Load the FEN's pre-trained weights, unless they are there (a checkpoint or state dict brought them).

        After Lightning's checkpoint restore, so ``--ckpt_path`` never downloads what it replaces; also at the
        start of a test, predict or validation of a model that was neither fitted nor loaded.
        """
        self.model.load_fen_weights()

    on_validation_start = on_test_start = on_predict_start = on_fit_start

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

    def on_train_start(self) -> None:
        """Start every fit with an empty FEN cache: the FEN's weights may have been loaded since."""
        self.fen_cache.clear()

    def on_train_epoch_end(self) -> None:
        """Read the epoch's last loss check; let the FEN cache judge the epoch (trust, or switch itself off).

        After the fit's last epoch, also measure the statistics if no validation did (the epoch's checkpoint, saved
        after this hook, then carries the final weights' own).
        """
        self.finite_losses.check()
        self.fen_cache.end_epoch(self.current_epoch)
        max_epochs = self.trainer.max_epochs
        if self.trainer.should_stop or (max_epochs is not None and self.current_epoch + 1 >= max_epochs):
            self.on_train_end()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """No checkpoint of weights stepped with a non-finite loss: read every pending loss check first."""
        self.finite_losses.check()
        super().on_save_checkpoint(checkpoint)

    def measure_statistics(self) -> None:
        """Measure the training-image statistics scoring uses, unless the weights have not moved since the last time.

        Two passes over the training images (one for ``"nearest"``): before a fit's validation (its thresholds must
        be on the final scale) and at the end of a fit whose last steps no validation followed, never twice for the
        same weights. ``statistics_step`` (a buffer-free attribute) is the global step they were measured at.
        """
        if not self.model.anomaly_map_generator.measures_train_stats or self.statistics_step == self.global_step:
            return
        # in eval mode, as inference scores (the end of a fit calls this in train mode, where the decoder's
        # BatchNorm would use batch statistics and update its running ones)
        training = self.model.training
        self.model.eval()
        try:
            measure_scoring_statistics(self)
        finally:
            self.model.train(training)
        self.statistics_step = self.global_step

    def on_validation_epoch_start(self) -> None:
        """Measure the training-image statistics scoring uses first, for this validation's thresholds."""
        super().on_validation_epoch_start()
        if self.trainer.state.fn == "fit":
            self.measure_statistics()

    def on_train_end(self) -> None:
        """Read the last loss checks; score the final weights with their own statistics, validated or not."""
        self.finite_losses.check()
        if self.statistics_step != self.global_step and self.model.anomaly_map_generator.measures_train_stats:
            logger.info(
                "FEGAN: measuring the scoring statistics of the final weights (no validation after step %d); "
                "the post-processor's thresholds are from the last validation.",
                self.global_step,
            )
            self.measure_statistics()

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Score as inference does, keeping R and F apart for the F-only and R-only AUROCs (``val_F_*``/``val_R_*``)."""
        residual, feature, _ = self.model.component_maps(batch.image)
        anomaly_map = self.model.anomaly_map_generator.fuse(residual, feature)
        self.component_auroc.update(residual, feature, batch.gt_label, batch.gt_mask)
        return batch.update(
            pred_score=self.model.anomaly_map_generator.image_score(anomaly_map), anomaly_map=anomaly_map
        )

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
    """:class:`Fegan` under the paper's spelling for ``--model FEGAN`` (jsonargparse is case-sensitive).

    Its docstring is :class:`Fegan`'s (set below), so ``--model.help FEGAN`` describes every argument.
    """

    @property
    def name(self) -> str:
        """Same results folder as :class:`Fegan`."""
        return "Fegan"


FEGAN.__doc__ = f"{FEGAN.__doc__.splitlines()[0]}\n\n{Fegan.__doc__.split(chr(10), 1)[1]}"
