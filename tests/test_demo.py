"""fegan-demo, the README's main job, end to end at a tiny size."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fegan_anomalib.demo import main

REPO = Path(__file__).parents[1]


def test_demo_trains_the_trainer_budget_and_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    main([
        "--config", str(REPO / "configs" / "fegan_cpu.yaml"), "--root", str(tmp_path / "data"),
        "--trainer.max_epochs", "1", "--model.image_size", "32", "--data.eval_batch_size", "8",
    ])  # fmt: skip
    output = capsys.readouterr().out
    assert "image_AUROC" in output and "report: " in output
    report = Path(output.split("report: ", 1)[1].split()[0])
    assert report.is_file() and report.name == "report.html"
    curves = list(csv.DictReader((report.parent / "learning_curves.csv").open()))
    assert len(curves) == 1  # --trainer.max_epochs 1 over the config's 8 epochs
    predictions = list(csv.DictReader((report.parent / "test_predictions.csv").open()))
    assert len(predictions) == 24  # the synthetic texture test set: 8 good + 8 per defect kind (2)
    assert {row["gt_label"] for row in predictions} == {"0", "1"}
