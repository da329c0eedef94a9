"""One registration of fegan-anomalib's models with anomalib, done once when this module is imported.

anomalib 2.7 has no plugin registry: ``anomalib train --model FEGAN``, ``get_model`` and ``anomalib
benchmark`` resolve short class names among the attributes of ``anomalib.models``. Setting those
attributes is the smallest registration they honour. The start-up hook ``_fegan_anomalib_hook`` imports
this module once ``anomalib.models`` is imported and no ``fegan_anomalib`` import is still running.

It lives above ``models/`` because it also registers the benchmark peers of ``experiments.peers``:
``models/`` imports neither ``experiments`` nor ``callbacks`` (``tests/test_layering.py``).
"""

from __future__ import annotations


def register_with_anomalib() -> None:
    """Expose ``Fegan``/``FEGAN`` and the peers ``BenchPadim``/``BenchPatchcore``/``BenchDraem`` in anomalib.models."""
    import anomalib.models  # noqa: PLC0415 - only when registering

    from fegan_anomalib.experiments.peers import BenchDraem, BenchPadim, BenchPatchcore  # noqa: PLC0415
    from fegan_anomalib.models.fegan.lightning_model import FEGAN, Fegan  # noqa: PLC0415

    for model in (Fegan, FEGAN, BenchPadim, BenchPatchcore, BenchDraem):
        setattr(anomalib.models, model.__name__, model)


register_with_anomalib()
