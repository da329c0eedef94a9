"""Data for fegan-anomalib: the offline synthetic data set."""

from .synthetic import make_synthetic_dataset

__all__ = ["make_synthetic_dataset"]
