"""One registration of fegan-anomalib's models with anomalib.

anomalib 2.7 has no plugin registry: ``anomalib train --model FEGAN``, ``get_model`` and ``anomalib
benchmark`` resolve short class names among the attributes of ``anomalib.models``. Setting those
attributes is the smallest registration they honour. ``fegan_anomalib.models`` calls this once when
it is imported (the start-up hook ``_fegan_anomalib_hook`` imports it right after ``anomalib.models``).
"""

from __future__ import annotations


def register_with_anomalib() -> None:
    """Expose ``Fegan``/``FEGAN`` and the peers ``BenchPadim``/``BenchPatchcore``/``BenchDraem`` in anomalib.models."""
    import anomalib.models  # noqa: PLC0415 - already imported as the parent of anomalib.models.components

    from fegan_anomalib.experiments.peers import BenchDraem, BenchPadim, BenchPatchcore  # noqa: PLC0415 - imports Fegan

    from .fegan.lightning_model import FEGAN, Fegan  # noqa: PLC0415

    for model in (Fegan, FEGAN, BenchPadim, BenchPatchcore, BenchDraem):
        setattr(anomalib.models, model.__name__, model)
