"""README's configuration table against the constructor it documents."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan.renamed import RENAMED

README = Path(__file__).resolve().parents[1] / "README.md"
COMPONENTS = {"self", "pre_processor", "post_processor", "evaluator", "visualizer"}  # anomalib's, for every model


def _table_arguments() -> list[str]:
    lines = README.read_text().splitlines()
    start = lines.index("| argument | default | meaning |")
    names: list[str] = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        names += re.findall(r"`([a-z_0-9]+)`", line.split("|")[1])
    return names


def test_readme_configuration_table_lists_every_argument_once() -> None:
    documented = _table_arguments()
    assert len(documented) == len(set(documented)), sorted(n for n in documented if documented.count(n) > 1)
    signature = set(inspect.signature(Fegan.__init__).parameters) - COMPONENTS - set(RENAMED)
    assert set(documented) == signature, (sorted(signature - set(documented)), sorted(set(documented) - signature))
