"""Callbacks FEGAN adds to every run, one job per module (as anomalib keeps ``anomalib/callbacks/``).

| module | callback | job |
|---|---|---|
| ``data_checks`` | ``ValidateData`` | each image and mask read before the first step; one error lists every bad file |
| ``resumable_loader`` | ``ResumableTrainLoader`` | a seeded training loader Lightning resumes mid-epoch |
| ``broadcast`` | ``BroadcastBuffers`` | rank 0's BatchNorm statistics to every DDP rank each epoch |
| ``metrics_files`` | ``SaveTestMetrics`` | test metrics, per-image predictions, pixel histogram in the run folder |
| ``planted_validation`` | ``PlantedValidation`` | label-free validation: held-out normals, half of them planted |
| ``learning_curves`` | ``LearningCurves`` | per-epoch losses, gradient shares, validation figures (CSV + PNG) |
| ``training_images`` | ``TrainingImages`` | a fixed batch's input, augmented input, reconstruction, F and R |

The names are re-exported here, so ``fegan_anomalib.callbacks.PlantedValidation`` (configs, the README's
``--trainer.callbacks+=``) keeps working.
"""

from .broadcast import BroadcastBuffers
from .data_checks import ValidateData
from .learning_curves import LearningCurves, plot_learning_curves
from .metrics_files import SaveTestMetrics
from .planted_validation import PlantedValidation
from .resumable_loader import ResumableTrainLoader
from .training_images import TrainingImages

__all__ = [
    "BroadcastBuffers",
    "LearningCurves",
    "PlantedValidation",
    "ResumableTrainLoader",
    "SaveTestMetrics",
    "TrainingImages",
    "ValidateData",
    "plot_learning_curves",
]
