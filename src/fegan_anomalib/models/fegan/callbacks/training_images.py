"""``TrainingImages``: a fixed batch's input, augmented input, reconstruction, F and R maps during training."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image

from ..scoring.anomaly_map import residual_map

logger = logging.getLogger(__name__)


class TrainingImages(Callback):
    """Every ``every_n_epochs``, show a fixed batch: input, augmented input, reconstruction, F and R maps.

    The first thing a GAN user looks at. Rows are images; columns the clean input, its augmented
    copy (fixed seed, so the same patches every time), the reconstruction G(x̃), and the F and R
    maps of x̃ in eval mode (one colour scale per column across the grid). Written to
    ``training_images/epoch_NNN.png`` in the run folder and, with a TensorBoard logger
    (``--logger TensorBoardLogger``), as the image ``fegan/training_images``.

    Args:
        every_n_epochs: how often. Defaults to ``5`` (and always after the first and the last epoch).
        num_images: rows of the grid. Defaults to ``4``.

    """

    def __init__(self, every_n_epochs: int = 5, num_images: int = 4) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self._images: torch.Tensor | None = None

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        """Keep the first training batch (already pre-processed) of the fit."""
        del trainer, pl_module, outputs, batch_idx
        if self._images is None and hasattr(batch, "image"):
            self._images = batch.image[: self.num_images].detach().clone()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Render and write the grid when this epoch is due."""
        if self._images is None or not trainer.is_global_zero or self.every_n_epochs <= 0:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if epoch != 0 and (epoch + 1) % self.every_n_epochs != 0 and not last:
            return
        grid = self.render(pl_module)
        folder = Path(trainer.default_root_dir) / "training_images"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.nan_to_num(grid.permute(1, 2, 0).numpy())  # a diverged step's NaN (the run then stops) draws black
        Image.fromarray((pixels * 255).round().astype(np.uint8)).save(folder / f"epoch_{epoch:03d}.png")
        for experiment_logger in trainer.loggers:
            experiment = getattr(experiment_logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("fegan/training_images", grid, global_step=epoch)

    @torch.no_grad()
    def render(self, pl_module: LightningModule) -> torch.Tensor:
        """(3, H', W') grid in [0, 1]: one row per image, columns input/augmented/reconstruction/F/R."""
        import matplotlib as mpl  # noqa: PLC0415
        from torchvision.utils import make_grid  # noqa: PLC0415

        model = pl_module.model
        images = self._images.to(pl_module.device)
        augmented, _ = pl_module.augmenter(images, generator=torch.Generator().manual_seed(0))
        with model.evaluating():
            if model.use_fen and not model.anomaly_map_generator.needs_train_stats:
                residual, feature, reconstruction = model.component_maps(augmented)
            else:  # no FEN, or F's statistics not measured yet (no validation so far): R alone, F's tile blank
                _, reconstruction = model.generate(augmented)
                residual = residual_map(augmented, reconstruction)
                feature = torch.zeros_like(residual)
        colormap = mpl.colormaps["jet"]

        def coloured(maps: torch.Tensor) -> torch.Tensor:
            low, high = maps.min(), maps.max()
            scaled = ((maps - low) / (high - low).clamp_min(1e-12)).cpu().numpy()
            return torch.from_numpy(colormap(scaled)[..., :3]).permute(0, 3, 1, 2).float()

        columns = [images.cpu(), augmented.cpu(), model.from_gan_range(reconstruction).cpu()]
        columns.append(coloured(feature))
        columns.append(coloured(residual))
        tiles = torch.stack(columns, dim=1).flatten(0, 1)  # image-major: one row per image
        return make_grid(tiles, nrow=len(columns), padding=2, pad_value=1.0)
