"""``SaveTestMetrics``: write a run's test metrics next to its results, for ``fegan-report``.

``anomalib train``/``test`` print their metrics but store them only through a logger, and the
stored layout differs per logger. This callback writes one small JSON per test run into the run
folder (``results/<Model>/<Data>/<category>/vN/test_metrics.json``) for any anomalib model::

    anomalib train --model Padim ... --trainer.callbacks+=fegan_anomalib.callbacks.SaveTestMetrics

FEGAN adds it by itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer


class SaveTestMetrics(Callback):
    """Write ``test_metrics.json`` (model, data set, category, metrics) into the run's root folder."""

    FILENAME = "test_metrics.json"

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the metrics the Evaluator logged for this test run."""
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        record = {
            "model": getattr(pl_module, "name", type(pl_module).__name__),
            "data": getattr(datamodule, "name", None),
            "category": getattr(datamodule, "category", None),
            "metrics": {key: float(value) for key, value in trainer.callback_metrics.items()},
        }
        path = Path(trainer.default_root_dir) / self.FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
