"""Make FEGAN known to anomalib's CLI without importing anything heavy at interpreter start.

anomalib 2.7 has no plugin entry points: ``anomalib train --model Fegan`` resolves the name
among the ``AnomalibModule`` subclasses that are already imported. ``fegan_anomalib_hook.pth``
imports this module at start-up; it only puts a finder on ``sys.meta_path``. Once a process has
imported ``anomalib.models`` and no ``fegan_anomalib`` module is still being imported, the finder
imports ``fegan_anomalib.registration`` (which registers FEGAN and the benchmark peers with anomalib)
and takes itself off ``sys.meta_path``. Waiting for the outermost ``fegan_anomalib`` import to finish
lets ``import fegan_anomalib.models`` or ``import fegan_anomalib.experiments.peers`` come first: they
import ``anomalib.models`` half-way through themselves, when registering would need them complete.
A process that never touches anomalib pays for this file and nothing else (no torch, no anomalib).
"""

from __future__ import annotations

import sys

_TARGET = "anomalib.models"
_PACKAGE = "fegan_anomalib"
_PLUGIN = "fegan_anomalib.registration"
# anomalib 2.7's import of anomalib.models imports its own deprecated modules (timm's old path, its dinov2 package)
_ANOMALIB_IMPORT_WARNINGS = (
    r"Importing from timm\.models\.layers is deprecated",
    r"The anomalib\.models\.components\.dinov2 package is deprecated",
)


class _AnomalibModelsFinder:
    """Meta-path finder that registers FEGAN once ``anomalib.models`` is in and no fegan_anomalib import runs."""

    def __init__(self) -> None:
        self.anomalib_loaded = False
        self.running = 0  # fegan_anomalib modules whose code is running (nested imports count each)

    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if fullname != _TARGET and fullname.partition(".")[0] != _PACKAGE:
            return None
        spec = self._spec_from_the_other_finders(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_anomalib_models(module: object) -> None:
            import warnings  # noqa: PLC0415

            with warnings.catch_warnings():  # anomalib 2.7 warns about its own imports: nothing a user can change
                for message in _ANOMALIB_IMPORT_WARNINGS:
                    warnings.filterwarnings("ignore", message=message, category=FutureWarning)
                exec_module(module)
            sys.modules["anomalib"].models = module  # import would bind it only after we return
            self.anomalib_loaded = True
            self._register_when_ready()

        def exec_fegan_module(module: object) -> None:
            self.running += 1
            try:
                exec_module(module)
            finally:
                self.running -= 1
            self._register_when_ready()

        spec.loader.exec_module = exec_anomalib_models if fullname == _TARGET else exec_fegan_module  # type: ignore[method-assign]
        return spec

    def _spec_from_the_other_finders(self, fullname: str, path: object, target: object) -> object:
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def _register_when_ready(self) -> None:
        if not self.anomalib_loaded or self.running or self not in sys.meta_path:
            return
        sys.meta_path.remove(self)  # once: what the registration imports loads as usual
        if _PLUGIN in sys.modules:
            return
        try:
            __import__(_PLUGIN)
        except Exception as error:
            import warnings  # noqa: PLC0415

            warnings.warn(f"fegan-anomalib could not register FEGAN with anomalib: {error!r}", stacklevel=2)


def install() -> None:
    """Put the finder on ``sys.meta_path`` unless anomalib is already imported or it is there."""
    if _TARGET in sys.modules:
        return
    if not any(isinstance(finder, _AnomalibModelsFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AnomalibModelsFinder())


install()
