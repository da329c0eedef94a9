"""Make FEGAN known to anomalib's CLI without importing anything heavy at interpreter start.

anomalib 2.7 has no plugin entry points: ``anomalib train --model Fegan`` resolves the name
among the ``AnomalibModule`` subclasses that are already imported. ``fegan_anomalib_hook.pth``
imports this module at start-up; it only puts a one-shot finder on ``sys.meta_path``. When (and
only when) a process imports ``anomalib.models``, the finder lets it load and then imports
``fegan_anomalib.models``, whose Lightning module registers itself with anomalib. A process
that never touches anomalib pays for this file and nothing else (no torch, no anomalib).
"""

from __future__ import annotations

import sys

_TARGET = "anomalib.models"
_PLUGIN = "fegan_anomalib.models"
# anomalib 2.7's import of anomalib.models imports its own deprecated modules (timm's old path, its dinov2 package)
_ANOMALIB_IMPORT_WARNINGS = (
    r"Importing from timm\.models\.layers is deprecated",
    r"The anomalib\.models\.components\.dinov2 package is deprecated",
)


class _AnomalibModelsFinder:
    """One-shot meta-path finder that runs the plugin import right after ``anomalib.models``."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        from importlib.util import find_spec  # noqa: PLC0415 - only once anomalib is being imported

        spec = find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: object) -> None:
            import warnings  # noqa: PLC0415

            with warnings.catch_warnings():  # anomalib 2.7 warns about its own imports: nothing a user can change
                for message in _ANOMALIB_IMPORT_WARNINGS:
                    warnings.filterwarnings("ignore", message=message, category=FutureWarning)
                exec_module(module)
            sys.modules["anomalib"].models = module  # import would bind it only after we return
            if _PLUGIN in sys.modules:  # importing (or done): the module registers itself at its end
                return
            try:
                __import__(_PLUGIN)
            except Exception as error:
                warnings.warn(f"fegan-anomalib could not register FEGAN with anomalib: {error!r}", stacklevel=2)

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Put the finder on ``sys.meta_path`` unless anomalib is already imported or it is there."""
    if _TARGET in sys.modules:
        return
    if not any(isinstance(finder, _AnomalibModelsFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AnomalibModelsFinder())


install()
