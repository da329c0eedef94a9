"""FEGAN's score in one place: the anomaly map, the feature distances, the memory and the statistics they use.

As anomalib keeps PatchCore's memory bank beside its anomaly map. The measuring takes the torch model and clean
batches (``statistics.measure_statistics``); when and on which images is the Lightning module's (``measuring.py``).
"""

from .anomaly_map import AnomalyMapGenerator, residual_map
from .statistics import CleanBatch, Reduce, measure_statistics

__all__ = ["AnomalyMapGenerator", "CleanBatch", "Reduce", "measure_statistics", "residual_map"]
