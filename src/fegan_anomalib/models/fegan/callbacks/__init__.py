"""Callbacks FEGAN adds to every run (``Fegan.configure_callbacks``), one job per module.

| module | callback | job |
|---|---|---|
| ``data_checks`` | ``ValidateData`` | each image and mask read before the first step; one error lists every bad file |
| ``resumable_loader`` | ``ResumableTrainLoader`` | a seeded training loader Lightning resumes mid-epoch |
| ``broadcast`` | ``BroadcastBuffers`` | rank 0's BatchNorm statistics to every DDP rank each epoch |
| ``metrics_files`` | ``SaveTestMetrics`` | test metrics, per-image predictions, pixel histogram in the run folder |
| ``learning_curves`` | ``LearningCurves`` | per-epoch losses, gradient shares, validation figures (CSV + PNG) |
| ``training_images`` | ``TrainingImages`` | a fixed batch's input, augmented input, reconstruction, F and R |

They are part of the model's behaviour, so they live under it: nothing here imports
``fegan_anomalib.callbacks`` or ``fegan_anomalib.experiments`` (``tests/test_layering.py``). The public
names stay ``fegan_anomalib.callbacks.<Name>``, which re-exports them beside the callbacks a user adds
(``PlantedValidation``).
"""

from .broadcast import BroadcastBuffers
from .data_checks import ValidateData
from .learning_curves import LearningCurves, plot_learning_curves
from .metrics_files import SaveTestMetrics
from .resumable_loader import ResumableTrainLoader
from .training_images import TrainingImages

__all__ = [
    "BroadcastBuffers",
    "LearningCurves",
    "ResumableTrainLoader",
    "SaveTestMetrics",
    "TrainingImages",
    "ValidateData",
    "plot_learning_curves",
]
