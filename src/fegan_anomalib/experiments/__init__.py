"""Experiment tools: runs beside PaDiM/DRAEM, ablations, reports, builders of the real data and weights.

Not needed to train, test or export FEGAN: the library is ``fegan_anomalib.models``, ``.data``,
``.metrics`` and ``.callbacks``; the edge tools are ``fegan_anomalib.deploy``.
"""
