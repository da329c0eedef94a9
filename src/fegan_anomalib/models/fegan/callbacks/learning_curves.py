"""``LearningCurves``: every fit's per-epoch losses, gradient shares and validation figures, as CSV and PNG."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

logger = logging.getLogger(__name__)


class LearningCurves(Callback):
    """Write a fit's per-epoch losses, gradient shares and validation metrics as CSV and a figure.

    ``learning_curves.csv`` and ``learning_curves.png`` go into the run folder and are rewritten
    after every epoch, so a stopped run keeps its curve. Every logger also records the same
    values (FEGAN logs them with ``self.log``); this file is the logger-independent copy.
    """

    CSV = "learning_curves.csv"
    FIGURE = "learning_curves.png"

    # under this many validation images per class the validation panel is greyed and says so
    MIN_IMAGES_PER_CLASS = 20

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._validation: dict[str, float] = {}
        self.validation_counts: tuple[int, int] | None = None  # (normal, anomalous) validation images

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a fresh record for this fit; count the validation images per class."""
        del pl_module
        self.rows, self._validation = [], {}
        samples = getattr(getattr(trainer.datamodule, "val_data", None), "samples", None)
        labels = samples.label_index if samples is not None and "label_index" in samples else None
        self.validation_counts = None if labels is None else (int((labels == 0).sum()), int((labels == 1).sum()))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keep this validation's metrics for the epoch's row (after every epoch-end hook logged)."""
        del pl_module
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._validation = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Add the epoch's row and rewrite the files."""
        del pl_module
        if not trainer.is_global_zero:
            return
        row = {"epoch": float(trainer.current_epoch)}
        for key, value in trainer.callback_metrics.items():
            if not key.startswith("val_") and value.numel() == 1:
                row[key] = float(value)
        row |= self._validation
        self._validation = {}
        self.rows.append(row)
        self.write(Path(trainer.default_root_dir))

    def write(self, folder: Path) -> None:
        """Write the CSV and the figure (losses, gradient shares, validation metrics) into ``folder``."""
        import pandas as pd  # noqa: PLC0415

        folder.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame(self.rows)
        table.to_csv(folder / self.CSV, index=False)
        plot_learning_curves(table, folder / self.FIGURE, self.validation_counts, self.MIN_IMAGES_PER_CLASS)


def plot_learning_curves(
    table: object, path: Path, validation_counts: tuple[int, int] | None = None, min_per_class: int = 20
) -> None:
    """Three panels over epochs: loss terms, each term's share of the generator's update, validation figures.

    The validation panel names its image counts; with fewer than ``min_per_class`` per class it is drawn
    grey and says it is too small to pick an epoch by (its AUROC moves in steps of 1/(normal·anomalous)).
    """
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    panels = [
        ("losses", [c for c in table.columns if c.endswith("_loss")], "log"),
        ("share of the generator's update", [c for c in table.columns if c.startswith("grad_share/")], "linear"),
        ("validation", [c for c in table.columns if c.startswith("val_")], "linear"),
    ]
    panels = [panel for panel in panels if panel[1]]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4), squeeze=False)
    for axis, (title, columns, scale) in zip(axes[0], panels, strict=False):
        for column in columns:
            values = table[["epoch", column]].dropna()
            if scale == "log":
                values = values[values[column] > 0]
            label = column.removeprefix("grad_share/")
            axis.plot(values["epoch"], values[column], marker="o", markersize=3, label=label)
        axis.set_yscale(scale)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        heading = title
        if title == "validation" and validation_counts is not None:
            normal, anomalous = validation_counts
            heading = f"validation ({normal} normal + {anomalous} anomalous images)"
            if min(validation_counts) < min_per_class:
                heading += f"\ntoo few to pick an epoch by (< {min_per_class} per class)"
                axis.set_facecolor("#e6e6e6")
                for line in axis.get_lines():
                    line.set_alpha(0.35)
        axis.set_title(heading)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
