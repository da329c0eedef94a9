"""FEGAN's callbacks under one public name, ``fegan_anomalib.callbacks.<Name>`` (configs, ``--trainer.callbacks+=``).

| callback | job |
|---|---|
| ``ValidateData`` | each image and mask read before the first step; one error lists every bad file |
| ``ResumableTrainLoader`` | a seeded training loader Lightning resumes mid-epoch |
| ``BroadcastBuffers`` | rank 0's BatchNorm statistics to every DDP rank each epoch |
| ``SaveTestMetrics`` | test metrics, per-image predictions, pixel histogram in the run folder |
| ``LearningCurves`` | per-epoch losses, gradient shares, validation figures (CSV + PNG) |
| ``TrainingImages`` | a fixed batch's input, augmented input, reconstruction, F and R |
| ``PlantedValidation`` | label-free validation: held-out normals, half of them planted |
| ``SaveRescoredCheckpoint`` | a test's rescoring (settings, statistics, thresholds) written as a checkpoint to export |

FEGAN adds the first six to every run itself (``Fegan.configure_callbacks``), so they live with the model,
one per module, in ``fegan_anomalib/models/fegan/callbacks/`` and are re-exported here. ``PlantedValidation``
and ``SaveRescoredCheckpoint`` are ones a user adds: they stay here. ``models/`` never imports this package
(``tests/test_layering.py``).
"""

from fegan_anomalib.models.fegan.callbacks import (
    BroadcastBuffers,
    LearningCurves,
    ResumableTrainLoader,
    SaveTestMetrics,
    TrainingImages,
    ValidateData,
    plot_learning_curves,
)

from .planted_validation import PlantedValidation
from .save_rescored import SaveRescoredCheckpoint

__all__ = [
    "BroadcastBuffers",
    "LearningCurves",
    "PlantedValidation",
    "ResumableTrainLoader",
    "SaveRescoredCheckpoint",
    "SaveTestMetrics",
    "TrainingImages",
    "ValidateData",
    "plot_learning_curves",
]
