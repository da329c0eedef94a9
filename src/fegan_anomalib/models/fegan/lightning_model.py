"""FEGAN: Feature Extraction Based Approach for GAN Anomaly Detection and Localization.

Fan, Zhang, Dai, IEEE Access 2024. A GAN trained on normal images only: a frozen VGG19
feature-extraction network (FEN) supervises a VGG-shaped generator encoder on M-SE-augmented
inputs, a one-block decoder reconstructs the clean image, and a DCGAN discriminator sharpens
the reconstruction. The anomaly map fuses the FEN-vs-encoder feature distance with the
reconstruction error; the image score is its maximum.

This module is the training recipe: constructor arguments (the paper's defaults; **[A#]** tags mark
readings of the paper resolved in docs/decisions.md),
the two Adam optimisers, manual G-then-D optimisation, M-SE inside ``training_step`` and the
``train_stats`` measurement of the scoring step.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from fegan_anomalib import Fegan
    >>> model = Fegan(image_size=128)  # doctest: +SKIP
    >>> Engine(max_epochs=5).train(model, datamodule=MVTecAD(category="bottle"))  # doctest: +SKIP

Paper:
    Title: FEGAN: A Feature Extraction Based Approach for GAN Anomaly Detection and Localization
    Journal: IEEE Access, 2024

"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import ImageVisualizer, Visualizer
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import optim
from torchvision.transforms.v2 import Compose, Resize

from fegan_anomalib.callbacks import LearningCurves, ResumableTrainLoader, SaveTestMetrics, TrainingImages, ValidateData
from fegan_anomalib.metrics import BestIoU, ComponentAUROC, ThresholdIoU

from .augmentation import build_augmentation
from .fen_cache import FenFeatureCache
from .loss import DiscriminatorLoss, GeneratorLoss
from .torch_model import FeganModel, dcgan_init

logger = logging.getLogger(__name__)

__all__ = ["FEGAN", "Fegan"]

ARCHITECTURE_KEY = "fegan_architecture"
ARCHITECTURE_FIELDS = ("backbone", "tap", "image_size", "use_discriminator", "use_fen")


class Fegan(AnomalibModule):
    """FEGAN Lightning module.

    Args:
        image_size (int | tuple[int, int]): model input (H, W), a multiple of the tap's stride; the
            default pre-processor only resizes to it **[A5]**. Defaults to ``256``.
        backbone (str): torchvision VGG of FEN and encoder. Defaults to ``"vgg19"``.
        tap (str): layer the FEN and encoder stop at **[A1]**. Defaults to ``"relu5_4"``.
        pre_trained (bool): torchvision ImageNet weights for the FEN (downloaded when online).
            Defaults to ``True``.
        weights (str | None): local torchvision-keyed state dict for the FEN; overrides
            ``pre_trained``. Defaults to ``None``.
        encoder_init (str): ``"pretrained"`` (copy the FEN) or ``"random"`` **[A2]**.
        encoder_batchnorm (str): ``"frozen"``: the encoder's BatchNorm layers (``_bn`` backbones) keep the
            FEN's statistics, so the encoder starts as the FEN's copy in eval as well as in training;
            ``"train"``: they train on batch statistics. ``"frozen"`` by measurement (magnetic_tile, 128²,
            stand-in VGG16-BN, BCE, 3 epochs: F-only test image AUROC 0.645 vs 0.611, epoch 1 0.599 vs 0.504;
            BENCHMARKS.md). VGGs without BatchNorm (the paper's VGG19) are unaffected. Defaults to ``"frozen"``.
        lambda_fea (float): weight of the feature loss. Defaults to ``30``.
        lambda_con (float): weight of the content loss. Defaults to ``30``.
        lambda_adv (float): weight of the adversarial loss. Defaults to ``1``.
        adversarial_loss (str): the generator's adversarial term: ``"feature_matching"`` (GANomaly's
            mean squared distance between D's features of the image and of the reconstruction) or
            ``"bce"`` (the paper's non-saturating GAN loss **[A6]**). A deviation from the paper by
            measurement: with ``"bce"`` and λ_adv = 1 the adversarial gradient at the encoder's output is up to
            16x the feature term's and at the decoder's output up to 77x the content term's, the reconstruction
            stays a flat grey and F learns slowly; feature matching brings both to the size of the other
            terms and lifts the test curve (magnetic_tile, BENCHMARKS.md "Learning curves").
            Defaults to ``"feature_matching"``.
        score_lambda (float): λ of the anomaly score (Eq. 8), weight of the feature map. Defaults to ``0.6``.
        component_norm (str): ``"none"`` (the paper) or ``"train_stats"`` **[A7]**.
        sigma (float): Gaussian smoothing of the map; ``0`` is none (the paper). Defaults to ``0``.
        use_discriminator (bool): train with the discriminator (Table 7). Defaults to ``True``.
        use_fen (bool): use the FEN in loss and score (Table 7). Defaults to ``True``.
        use_mse (bool): augment training images with M-SE, or with ``augmentation`` (Table 7). Defaults to ``True``.
        mse_area_ratio (float): M-SE total pasted area / image area (Table 5); the altered area of the
            other augmentations too, so Table 6 compares them at the same budget. Defaults to ``0.20``.
        mse_max_patch_ratio (float): M-SE largest patch / image area. Defaults to ``0.01``.
        augmentation (str): training augmentation, ``(images, generator) -> (augmented, mask)``: a class
            of ``fegan_anomalib.models.fegan.augmentation`` (``MultiScaleSelfEnhancement``, ``Cutout``,
            ``CutoutColour``, ``RIAD``, ``SCADN``, Table 6) or a dotted class path. A name, not a module,
            so the checkpoint's hyper-parameters stay plain data. Defaults to ``"MultiScaleSelfEnhancement"``.
        augmentation_args (dict | None): further constructor arguments of ``augmentation``. Defaults to ``None``.
        mse_seed (int): M-SE draws come from a generator seeded with (mse_seed, global step, rank), not
            from the global RNG: a resumed run repeats the uninterrupted one's augmentations, and DDP
            ranks augment differently. Defaults to ``0``.
        gradient_norm_every (int): log the norm of each weighted generator-loss term's gradient at the
            encoder's and the decoder's output every this many batches (epoch means, ``grad_norm/*``);
            ``0`` never. Defaults to ``10``.
        lr (float): Adam learning rate of G and D. Defaults to ``2e-4``.
        beta1 (float): Adam β1. Defaults to ``0.5``.
        beta2 (float): Adam β2. Defaults to ``0.999``.
        weight_decay (float): Adam weight decay. Defaults to ``1e-5``.
        d_collapse_loss (float): discriminator loss under which D counts as collapsed (it separates
            real and fake perfectly and its gradient to G vanishes). Defaults to ``1e-4``.
        d_collapse_steps (int): consecutive collapsed steps before D is re-initialised, as GANomaly
            does; ``0`` disables the check. Defaults to ``20``.
        max_epochs (int | None): ``None`` (default) leaves the epoch budget to the trainer
            (``--trainer.max_epochs``, ``Engine(max_epochs=...)``), as anomalib's own models do; the
            paper's 200 is in ``configs/fegan_mvtec.yaml``. A number is handed to the Engine through
            ``trainer_arguments``, which anomalib lets override the trainer's: only for pipelines that
            give the trainer no budget (``anomalib benchmark``, ``fegan-compare``).
        channels_last (bool): keep convolution weights channels-last, which oneDNN runs faster on CPU
            (1.2x inference here, ``benchmarks/inference.py``; scores equal to 1e-6). ``False`` for the
            plain layout. Defaults to ``True``.
        pre_processor, post_processor, evaluator, visualizer: anomalib components, as for any model.

    Example:
        >>> model = Fegan(image_size=64, pre_trained=False)
        >>> model.model(torch.rand(1, 3, 64, 64)).anomaly_map.shape  # doctest: +SKIP

    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 256,
        backbone: str = "vgg19",
        tap: str = "relu5_4",
        pre_trained: bool = True,
        weights: str | None = None,
        encoder_init: str = "pretrained",
        encoder_batchnorm: str = "frozen",
        lambda_fea: float = 30.0,
        lambda_con: float = 30.0,
        lambda_adv: float = 1.0,
        adversarial_loss: str = "feature_matching",
        score_lambda: float = 0.6,
        component_norm: str = "none",
        sigma: float = 0.0,
        use_discriminator: bool = True,
        use_fen: bool = True,
        use_mse: bool = True,
        mse_area_ratio: float = 0.20,
        mse_max_patch_ratio: float = 0.01,
        augmentation: str = "MultiScaleSelfEnhancement",
        augmentation_args: dict[str, Any] | None = None,
        mse_seed: int = 0,
        gradient_norm_every: int = 10,
        fen_cache_mb: float = 1024.0,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        weight_decay: float = 1e-5,
        d_collapse_loss: float = 1e-4,
        d_collapse_steps: int = 20,
        max_epochs: int | None = None,
        channels_last: bool = True,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        if self.input_size is not None and tuple(self.input_size) != size:
            msg = (
                f"The pre_processor resizes to {tuple(self.input_size)} but image_size is {size}. Set "
                f"image_size to the pre-processor's size, or drop the custom pre_processor."
            )
            raise ValueError(msg)
        if max_epochs is not None and max_epochs < 1:
            msg = f"max_epochs must be a positive number of epochs, got {max_epochs}."
            raise ValueError(msg)
        self.model = FeganModel(
            image_size=size,
            backbone=backbone,
            tap=tap,
            pre_trained=pre_trained,
            weights=weights,
            encoder_init=encoder_init,
            encoder_batchnorm=encoder_batchnorm,
            use_discriminator=use_discriminator,
            use_fen=use_fen,
            score_lambda=score_lambda,
            component_norm=component_norm,
            sigma=sigma,
            channels_last=channels_last,
        )
        self.m_se = build_augmentation(augmentation, mse_area_ratio, mse_max_patch_ratio, **(augmentation_args or {}))
        self.use_mse = use_mse
        self.mse_seed = mse_seed
        self.gradient_norm_every = gradient_norm_every
        self.fen_cache = FenFeatureCache(fen_cache_mb)
        self.generator_loss = GeneratorLoss(
            lambda_fea,
            lambda_con,
            lambda_adv if use_discriminator else 0.0,
            adversarial=adversarial_loss,
        )
        self.discriminator_loss = DiscriminatorLoss()
        self.automatic_optimization = False
        self.lr = lr
        self.betas = (beta1, beta2)
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.d_collapse_loss = d_collapse_loss
        self.d_collapse_steps = d_collapse_steps
        self.collapsed_steps = 0
        self.component_auroc = ComponentAUROC()
        self.trained_epochs: int | None = None  # epochs of a loaded checkpoint (Lightning's "epoch" + 1)

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize only: the model normalises internally, so the exported graph holds it **[A5]**."""
        image_size = image_size or (256, 256)
        return PreProcessor(transform=Compose([Resize(image_size, antialias=True)]))

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Report the paper's figures (image/pixel AUROC, IoU two ways **[A10]**) plus AUPRO and F1.

        Validation reports image/pixel AUROC and AUPRO (``val_`` prefix) every time it runs, so any
        logger records the learning curve; the F-only and R-only AUROCs beside them come from
        ``validation_step``.
        """
        val_metrics = [
            AUROC(fields=["pred_score", "gt_label"], prefix="val_image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="val_pixel_", strict=False),
            AUPRO(fields=["anomaly_map", "gt_mask"], prefix="val_pixel_", strict=False),
        ]
        test_metrics = [
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            F1Score(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
            BestIoU(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            ThresholdIoU(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
        ]
        return Evaluator(val_metrics=val_metrics, test_metrics=test_metrics)

    @classmethod
    def configure_visualizer(cls) -> ImageVisualizer:
        """Draw the paper's four panels (Figs. 6-8): image, ground truth, heat map, segmentation.

        The heat map is min-max normalised per image (Eq. 9, **[A8]**: for display only); the
        segmentation fills the predicted region and draws the true boundary.
        """
        return ImageVisualizer(
            fields=["image", "gt_mask"],
            overlay_fields=[("image", ["anomaly_map"]), ("image", ["pred_mask", "gt_mask"])],
            overlay_fields_config={
                "anomaly_map": {"colormap": True, "normalize": True},
                "pred_mask": {"mode": "fill", "color": (255, 0, 0), "alpha": 0.45},
                "gt_mask": {"mode": "contour", "color": (0, 255, 0), "alpha": 1.0},
            },
        )

    def prepare_data(self) -> None:
        """Check an MVTec-layout data set's masks by name before anomalib's MVTecAD reads it.

        Lightning runs this before the datamodule's ``setup``. There anomalib pairs masks with
        defective images by sorted position: a missing mask fails inside pandas ("Must have equal
        len keys and value") without naming a file, and a missing ``ground_truth`` folder the same
        way. This names every image without a mask and every mask without an image.
        """
        from anomalib.data import MVTecAD  # noqa: PLC0415

        from fegan_anomalib.data.bottle_cap import match_masks  # noqa: PLC0415

        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if not isinstance(datamodule, MVTecAD):
            return
        folder = Path(datamodule.root) / datamodule.category
        if not folder.is_dir():
            return  # anomalib's own prepare_data downloads the category or says it cannot
        if match_masks(folder, layout="MVTec AD") is None:
            msg = (
                f"{folder} has defective test images but no ground_truth/ folder. anomalib's MVTecAD needs a "
                f"mask per defective image (ground_truth/<defect>/NAME_mask.png); for image-level data use "
                f"fegan_anomalib.data.BottleCap, which accepts a folder without masks."
            )
            raise FileNotFoundError(msg)

    def configure_callbacks(self) -> list[Callback]:
        """Add the input check, the resumable training loader and the metrics file to anomalib's callbacks."""
        return [
            *super().configure_callbacks(),
            ValidateData(),
            ResumableTrainLoader(),
            SaveTestMetrics(),
            LearningCurves(),
            TrainingImages(),
        ]

    def configure_optimizers(self) -> list[optim.Optimizer]:
        """Adam for the generator (encoder + decoder) and, when used, for the discriminator."""
        generator_params = [*self.model.encoder.parameters(), *self.model.decoder.parameters()]
        optimizers = [optim.Adam(generator_params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)]
        if self.model.discriminator is not None:
            optimizers.append(
                optim.Adam(
                    self.model.discriminator.parameters(),
                    lr=self.lr,
                    betas=self.betas,
                    weight_decay=self.weight_decay,
                ),
            )
        return optimizers

    def _mse_generator(self) -> torch.Generator:
        """Seed this step's M-SE draws from (mse_seed, global step, rank) only, not the global RNG."""
        seed = (self.mse_seed * 1_000_003 + self.global_step) * 4099 + self.global_rank
        return torch.Generator().manual_seed(seed % (2**63))

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Stop a diverged run before it steps an optimiser or saves a broken model."""
        for name, value in losses.items():
            if not torch.isfinite(value).all():
                msg = (
                    f"FEGAN training diverged: {name} is {value.item()} at global step {self.global_step} "
                    f"(epoch {self.current_epoch}). Lower `lr`, check the input images for NaN/Inf, or resume "
                    f"from an earlier checkpoint."
                )
                raise FloatingPointError(msg)

    def training_step(self, batch: Batch, batch_idx: int = 0, *args, **kwargs) -> STEP_OUTPUT:
        """One forward, then a generator step and a discriminator step on the detached fake."""
        del args, kwargs
        optimizers = self.optimizers()
        g_opt, d_opt = (optimizers, None) if not isinstance(optimizers, list) else (optimizers[0], optimizers[-1])
        clean = batch.image
        augmented = self.m_se(clean, generator=self._mse_generator())[0] if self.use_mse else clean
        fen_features = self.fen_cache(clean, self.model.fen_features) if self.model.use_fen else None
        output = self.model(augmented, clean, fen_features)
        real = clean * 2 - 1
        discriminator = self.model.discriminator
        # toggling freezes D while G steps (no D gradients computed or all-reduced under DDP) and vice versa
        self.toggle_optimizer(g_opt)
        fake_logits = self._adversarial_input(discriminator, real, output.reconstruction)
        g_loss, terms = self.generator_loss(
            real,
            output.reconstruction,
            output.fen_features,
            output.encoder_features,
            fake_logits,
        )
        self._check_finite({"generator_loss": g_loss, **terms})
        gradient_norms = self._gradient_norms(terms, output) if self._logs_gradient_norms(batch_idx) else {}
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        self.untoggle_optimizer(g_opt)
        losses = {"generator_loss": g_loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        if discriminator is not None and d_opt is not None:
            self.toggle_optimizer(d_opt)
            d_loss = self.discriminator_loss(discriminator(real), discriminator(output.reconstruction.detach()))
            self._check_finite({"discriminator_loss": d_loss})
            d_opt.zero_grad()
            self.manual_backward(d_loss)
            d_opt.step()
            self.untoggle_optimizer(d_opt)
            losses["discriminator_loss"] = d_loss.detach()
            self._handle_discriminator_collapse(float(d_loss.detach()), d_opt)
        self.log_dict(losses, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(clean))
        if gradient_norms:
            self.log_dict(gradient_norms, on_step=False, on_epoch=True, batch_size=len(clean))
        return losses

    def _adversarial_input(
        self,
        discriminator: torch.nn.Module | None,
        real: torch.Tensor,
        reconstruction: torch.Tensor,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
        """Return what the generator's adversarial term reads: D's logits of G(x̃), or D's features of (x, G(x̃))."""
        if discriminator is None:
            return None
        if self.generator_loss.adversarial == "feature_matching":
            return discriminator.features(real).detach(), discriminator.features(reconstruction)
        return discriminator(reconstruction)

    def _logs_gradient_norms(self, batch_idx: int) -> bool:
        """Measure the per-term gradient norms on every ``gradient_norm_every``-th batch (0: never)."""
        return self.gradient_norm_every > 0 and batch_idx % self.gradient_norm_every == 0

    def _gradient_norms(self, terms: dict[str, torch.Tensor], output: Any) -> dict[str, torch.Tensor]:
        """Norm of each weighted loss term's gradient at the encoder's output and at the decoder's output.

        Which term steers the generator is a question of gradients, not of loss values: the
        adversarial term can be large and still push weakly. Measured at the two activations
        (not the weights) so it costs a backward through decoder and discriminator only.
        """
        weights = self.generator_loss.weights
        norms = {}
        for name, term in terms.items():
            at_encoder, at_decoder = torch.autograd.grad(
                weights[name] * term,
                [output.encoder_features, output.reconstruction],
                retain_graph=True,
                allow_unused=True,
            )
            short = name.removesuffix("_loss")
            for where, gradient in (("encoder", at_encoder), ("decoder", at_decoder)):
                value = torch.zeros(()) if gradient is None else torch.linalg.vector_norm(gradient.detach().float())
                norms[f"grad_norm/{short}_at_{where}"] = value.to(self.device)
        return norms

    def _handle_discriminator_collapse(self, d_loss: float, d_opt: optim.Optimizer) -> None:
        """Re-initialise D (DCGAN init, fresh Adam state) after ``d_collapse_steps`` near-zero losses."""
        if self.d_collapse_steps <= 0:
            return
        self.collapsed_steps = self.collapsed_steps + 1 if d_loss < self.d_collapse_loss else 0
        if self.collapsed_steps >= self.d_collapse_steps:
            logger.warning(
                "FEGAN discriminator collapsed (loss < %g for %d steps) at global step %d: re-initialising it.",
                self.d_collapse_loss,
                self.collapsed_steps,
                self.global_step,
            )
            self.model.discriminator.apply(dcgan_init)
            d_opt.state.clear()
            self.collapsed_steps = 0
            self.log("discriminator_reinit", 1.0, on_step=True, on_epoch=False)

    def on_train_start(self) -> None:
        """Start every fit with an empty FEN cache: the FEN's weights may have been loaded since."""
        self.fen_cache.clear()

    def on_train_epoch_end(self) -> None:
        """Let the FEN cache judge the epoch; under DDP, give every rank rank 0's BatchNorm statistics.

        DDP syncs BatchNorm statistics only at each forward and SyncBatchNorm would need GPUs; without
        the broadcast, ranks end an epoch with statistics that differ by their last local batch, so
        validation and checkpoints would depend on the rank.
        """
        self.fen_cache.end_epoch(self.current_epoch)
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def on_validation_epoch_start(self) -> None:
        """With ``component_norm="train_stats"``, measure F and R on the normal training images first.

        Validation runs before ``on_train_epoch_end``; measuring here makes the threshold the
        PostProcessor picks on this validation match the statistics the checkpoint stores.
        """
        super().on_validation_epoch_start()
        if self.model.anomaly_map_generator.component_norm == "train_stats" and self.trainer.state.fn == "fit":
            self._measure_train_stats()

    @torch.no_grad()
    def _measure_train_stats(self) -> None:
        """Pixel mean and std of R and F over the training set, stored in the map generator's buffers."""
        loader = (
            self.trainer.datamodule.train_dataloader() if self.trainer.datamodule else self.trainer.train_dataloader
        )
        sums = torch.zeros(2, 2, dtype=torch.float64)  # rows R, F; columns sum, sum of squares
        count = 0
        for batch in loader:
            images = batch.image.to(self.device)
            if self.pre_processor is not None:
                images = self.pre_processor.transform(images)
            # the clean training images again: the FEN's features come from the cache after the first epoch
            fen_features = self.fen_cache(images, self.model.fen_features) if self.model.use_fen else None
            residual, feature, _ = self.model.component_maps(images, fen_features)
            for row, values in enumerate((residual, feature)):
                if values is not None:
                    sums[row, 0] += values.double().sum().cpu()
                    sums[row, 1] += values.double().square().sum().cpu()
            count += residual.numel()
        stats = torch.cat([sums.flatten(), torch.tensor([count], dtype=torch.float64)]).to(self.device)
        stats = self.trainer.strategy.reduce(stats, reduce_op="sum").cpu()  # sums over DDP ranks
        sums, count = stats[:4].view(2, 2), stats[4].item()
        mean = sums[:, 0] / count
        std = (sums[:, 1] / count - mean.square()).clamp_min(1e-12).sqrt()
        feature = (mean[1].item(), std[1].item()) if self.model.use_fen else None
        self.model.anomaly_map_generator.set_train_stats((mean[0].item(), std[0].item()), feature)
        logger.info("FEGAN train_stats: R mean/std %.4g/%.4g, F %s", mean[0], std[0], feature)

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Score the validation batch (the PostProcessor learns its thresholds from these).

        The same forward as the model's inference, with R and F kept apart on the way so the F-only
        and R-only AUROCs can be logged beside the fused map's.
        """
        del args, kwargs
        residual, feature, _ = self.model.component_maps(batch.image)
        anomaly_map = self.model.anomaly_map_generator.fuse(residual, feature)
        self.component_auroc.update(residual, feature, batch.gt_label, batch.gt_mask)
        return batch.update(pred_score=torch.amax(anomaly_map, dim=(-2, -1)), anomaly_map=anomaly_map)

    def on_validation_epoch_end(self) -> None:
        """Log the F-only and R-only image/pixel AUROCs of this validation (``val_F_*``, ``val_R_*``)."""
        super().on_validation_epoch_end()
        values = self.component_auroc.compute()
        self.component_auroc.reset()
        if values:
            self.log_dict(values, sync_dist=True)

    def on_test_start(self) -> None:
        """Refuse to score with ``train_stats`` that were never measured."""
        super().on_test_start()
        self._check_train_stats("test")

    def on_predict_start(self) -> None:
        """Refuse to score with ``train_stats`` that were never measured."""
        super().on_predict_start()
        self._check_train_stats("predict")

    def _check_train_stats(self, action: str) -> None:
        """``component_norm="train_stats"`` needs statistics that only a fit with validation measures."""
        if self.model.anomaly_map_generator.needs_train_stats:
            msg = (
                f"Cannot {action}: this FEGAN has component_norm='train_stats' but its training statistics were "
                "never measured (they are taken when validation runs during fit). Load a checkpoint trained with "
                "validation (`--ckpt_path <run>/weights/lightning/model.ckpt`), train with a validation split "
                "(the datamodule's default), or use `--model.component_norm none`."
            )
            raise RuntimeError(msg)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the arguments that shape the weights, for a precise error when a checkpoint does not fit."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[ARCHITECTURE_KEY] = {name: self.hparams.get(name) for name in ARCHITECTURE_FIELDS}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another model or another FEGAN configuration, naming the difference.

        Lightning's own message for this is a long key list; here the user learns which model or
        backbone the checkpoint holds and what to pass instead.
        """
        self.trained_epochs = checkpoint["epoch"] + 1 if "epoch" in checkpoint else None  # for test reports
        state = checkpoint.get("state_dict", {})
        # the blur kernel is derived from sigma, not learnt; checkpoints written before it became
        # non-persistent carry it: drop it so sigma can differ from training's
        for key in [key for key in state if ".anomaly_map_generator.blur." in key]:
            del state[key]
        own = self.state_dict()
        missing = [key for key in own if key.startswith("model.") and key not in state]
        unexpected = [key for key in state if key.startswith("model.") and key not in own]
        misshapen = [key for key in own if key in state and state[key].shape != own[key].shape]
        if missing or unexpected or misshapen:
            saved = checkpoint.get("hyper_parameters", {})
            examples = (missing + unexpected + misshapen)[:5]
            counts = (
                f"{len(missing)} missing, {len(unexpected)} unexpected, {len(misshapen)} misshapen weights, "
                f"e.g. {examples}"
            )
            if "backbone" not in saved:
                msg = (
                    f"This checkpoint is not a FEGAN checkpoint (hyper-parameters: {sorted(saved)[:6]}); {counts}. "
                    "Pass a checkpoint trained with `--model FEGAN`."
                )
                raise ValueError(msg)
            # Lightning overwrites the saved hyper-parameters with load_from_checkpoint's keyword arguments
            # before this hook, so the architecture is read from the key on_save_checkpoint wrote
            architecture = checkpoint.get(ARCHITECTURE_KEY)
            if architecture is None:
                which = "a checkpoint from before fegan-anomalib recorded its architecture"
            else:
                differing = [
                    f"{name}: checkpoint {value!r}, this model {self.hparams.get(name)!r}"
                    for name, value in architecture.items()
                    if _same(value) != _same(self.hparams.get(name))
                ]
                which = "; ".join(differing) if differing else "no architecture argument differs"
            msg = (
                f"This FEGAN checkpoint does not fit this FEGAN ({which}); {counts}. Pass the checkpoint's "
                "settings (e.g. --model.backbone/--model.tap/--model.image_size as it was trained), or a "
                "checkpoint trained with these."
            )
            raise ValueError(msg)
        super().on_load_checkpoint(checkpoint)

    def _check_exportable(self) -> None:
        """Refuse to export a model whose post-processor was never fitted.

        anomalib's PostProcessor starts with NaN thresholds and min/max and learns them in validation;
        exported before that, every score of the graph is NaN (and OpenVINO's INT8 quantisation fails
        deep inside with NaN clamp bounds), so the user is told here instead.
        """
        self._check_train_stats("export")
        post = self.post_processor
        if not isinstance(post, PostProcessor):
            return
        needed: dict[str, torch.Tensor] = {}
        if post.enable_thresholding:
            needed |= {"image threshold": post.image_threshold, "pixel threshold": post.pixel_threshold}
        if post.enable_normalization:
            needed |= {"image min/max": post.image_max - post.image_min}
            needed |= {"pixel min/max": post.pixel_max - post.pixel_min}
        unset = [name for name, value in needed.items() if torch.isnan(value).any()]
        if unset:
            msg = (
                f"This FEGAN has no fitted {', '.join(unset)} (its post_processor learns them in validation), so "
                "the exported model would give NaN scores. Export a trained checkpoint: `anomalib export --model "
                "FEGAN --export_type openvino --ckpt_path <run>/weights/lightning/model.ckpt`, or call "
                "Fegan.load_from_checkpoint(...) / engine.fit(...) before to_onnx/to_openvino/to_torch."
            )
            raise RuntimeError(msg)

    def to_torch(self, *args: Any, **kwargs: Any) -> Path:
        """Export to torch (anomalib's), for a model with fitted thresholds only (see ``_check_exportable``)."""
        self._check_exportable()
        return super().to_torch(*args, **kwargs)

    def to_onnx(self, *args: Any, **kwargs: Any) -> Path:
        """Export to ONNX (anomalib's; ``to_openvino`` goes through it), for a model with fitted thresholds only."""
        self._check_exportable()
        return super().to_onnx(*args, **kwargs)

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


def _same(value: Any) -> Any:
    """Compare hyper-parameters across YAML/CLI forms: ``128`` and ``[128, 128]`` are the same size."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


class FEGAN(Fegan):
    """:class:`Fegan` under the paper's spelling, so ``anomalib train --model FEGAN`` resolves.

    jsonargparse matches short class names case-sensitively; results and checkpoints still go under
    ``Fegan``.
    """

    @property
    def name(self) -> str:
        """Same results folder as :class:`Fegan`."""
        return "Fegan"


def _register_with_anomalib() -> None:
    """Expose FEGAN in ``anomalib.models``: ``get_model``/the benchmark resolve short names only there.

    anomalib 2.7 has no plugin registry; this attribute is the smallest registration its
    ``get_model({"class_path": "Fegan"})`` honours.
    """
    import anomalib.models  # noqa: PLC0415 - already imported as the parent of anomalib.models.components

    for model in (Fegan, FEGAN):
        setattr(anomalib.models, model.__name__, model)


_register_with_anomalib()
