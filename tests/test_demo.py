"""fegan-demo, the README's main job, end to end at a tiny size."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fegan_anomalib.demo import main, seeded_cli

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


def test_demo_applies_the_config_seed_so_two_runs_train_the_same_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # anomalib 2.7's CLI ignores seed_everything: unseeded, the second run's losses differed from the first's
    monkeypatch.chdir(tmp_path)
    arguments = [
        "--config", str(REPO / "configs" / "fegan_cpu.yaml"), "--root", str(tmp_path / "data"),
        "--trainer.max_epochs", "1", "--model.image_size", "32", "--data.eval_batch_size", "8",
    ]  # fmt: skip
    curves = []
    for _ in range(2):  # the first run writes the data set, the second finds it
        main(arguments)
        report = Path(capsys.readouterr().out.split("report: ", 1)[1].split()[0])
        curves.append((report.parent / "learning_curves.csv").read_text())
    assert curves[0] == curves[1]


def test_seeded_cli_applies_the_config_seed_and_lets_an_override_win(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "seed_everything: 42\nmodel: {class_path: Fegan, init_args: {image_size: 32, pre_trained: false}}\n"
    )
    base = ["train", "--config", str(config), "--data", "anomalib.data.MVTecAD", "--data.root", str(tmp_path)]
    seeded_cli()(base, run=False)
    assert torch.initial_seed() == 42
    seeded_cli()([*base, "--seed_everything", "7"], run=False)
    assert torch.initial_seed() == 7
    seeded_cli()([*base, "--seed_everything=8"], run=False)
    assert torch.initial_seed() == 8
    torch.manual_seed(5)
    seeded_cli()([*base, "--seed_everything", "true"], run=False)  # anomalib's random seed: nothing applied
    assert torch.initial_seed() == 5
