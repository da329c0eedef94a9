"""README's configuration table and the metric names it states, against the code they document."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import torch
import yaml

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan.defaults import DEFAULTS
from fegan_anomalib.models.fegan.renamed import RENAMED

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMPONENTS = {"self", "pre_processor", "post_processor", "evaluator", "visualizer"}  # anomalib's, for every model


def _table_rows() -> list[tuple[list[str], list[object]]]:
    """(argument names, their defaults) of each row of README's configuration table."""
    lines = README.read_text().splitlines()
    start = lines.index("| argument | default | meaning |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = line.split("|")
        names = re.findall(r"`([a-z_0-9]+)`", cells[1])
        defaults = [_value(value.strip().strip("`")) for value in cells[2].split(",")]
        rows.append((names, defaults))
    return rows


def _value(text: str) -> object:
    """A README default as the code holds it: YAML's reading, numbers in any notation (``2e-4``) as floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _effective_default(name: str) -> object:
    """The value an argument takes when not given: its signature default, or DEFAULTS' for those left None."""
    default = inspect.signature(Fegan.__init__).parameters[name].default
    return DEFAULTS[name] if default is None and name in DEFAULTS else default


def test_readme_configuration_table_lists_every_argument_once() -> None:
    documented = [name for names, _ in _table_rows() for name in names]
    assert len(documented) == len(set(documented)), sorted(n for n in documented if documented.count(n) > 1)
    signature = set(inspect.signature(Fegan.__init__).parameters) - COMPONENTS - set(RENAMED)
    assert set(documented) == signature, (sorted(signature - set(documented)), sorted(set(documented) - signature))


def test_readme_configuration_defaults_are_the_codes() -> None:
    for names, defaults in _table_rows():
        values = defaults if len(defaults) == len(names) else defaults * len(names)  # one default for several
        assert len(values) == len(names), (names, defaults)
        for name, value in zip(names, values, strict=True):
            assert value == _effective_default(name), (
                f"README says {name}: {value!r}, the code {_effective_default(name)!r}"
            )


def _logged_names() -> set[str]:
    """Every metric name FEGAN logs: its evaluator's, the F/R validation AUROCs and the gradient shares."""
    from fegan_anomalib.metrics import ComponentAUROC
    from fegan_anomalib.models.fegan.evaluation import fegan_evaluator
    from fegan_anomalib.models.fegan.loss import _shares

    evaluator = fegan_evaluator()
    names = {metric.name for metric in [*evaluator.val_metrics, *evaluator.test_metrics]}
    components = ComponentAUROC(pixel_stride=1)
    maps, labels = torch.rand(2, 4, 4), torch.tensor([0, 1])
    components.update(maps, maps, labels, torch.rand(2, 4, 4) > 0.5)
    names |= set(components.compute())
    gradients = {"feature": [torch.ones(2)], "content": [torch.ones(2)], "adversarial": [torch.ones(2)]}
    names |= set(_shares(gradients, "encoder")) | set(_shares(gradients, "decoder"))
    return names


def test_every_metric_name_the_readme_states_is_one_the_code_logs() -> None:
    """`grad_norm/*` stayed in the README for a release after the code logged `grad_share/*`: names must exist."""
    logged = _logged_names()
    stated = set(re.findall(r"`([^` ]*(?:grad_|val_|IoU|AUROC|AUPRO)[^` ]*)`", README.read_text()))
    assert stated, "no metric names found: the pattern no longer matches the README"
    for name in stated:
        if name.endswith("*"):
            assert any(key.startswith(name[:-1]) for key in logged), f"README names {name}: no such metric is logged"
        else:
            assert name in logged, f"README names {name}: no such metric is logged ({sorted(logged)})"
