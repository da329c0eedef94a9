"""fegan-demo, the README's main job, end to end at a tiny size."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fegan_anomalib.demo import detections, main, seeded_cli

REPO = Path(__file__).parents[1]


def test_demo_detects_its_defects_with_the_shipped_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The README's main job as shipped (minutes on 2 cores): it must find its defects, not pass at chance."""
    monkeypatch.chdir(tmp_path)
    main(["--config", str(REPO / "configs" / "fegan_cpu.yaml"), "--root", str(tmp_path / "data")])
    output = capsys.readouterr().out
    print(output)  # the figures, beside the positional baseline, in the test log
    image, pixel, prior = (
        float(re.search(pattern, output).group(1))
        for pattern in (r"image AUROC ([\d.]+)", r"pixel AUROC ([\d.]+)", r"positional prior, no model: ([\d.]+)")
    )
    assert image >= 0.95 and pixel >= 0.95, output
    assert prior < 0.7 and pixel - prior > 0.25  # defects anywhere: the centre prior is no shortcut
    found = int(re.search(r"detected (\d+) of 16 defective images at 0 false alarms", output).group(1))
    assert found >= 14, output
    report = Path(output.split("report: ", 1)[1].split()[0])
    assert report.is_file() and report.name == "report.html"
    assert len(list(csv.DictReader((report.parent / "learning_curves.csv").open()))) == 15  # the config's epochs
    predictions = list(csv.DictReader((report.parent / "test_predictions.csv").open()))
    assert len(predictions) == 24  # the synthetic texture test set: 8 good + 8 per defect kind (2)


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
    assert len(curves[0].splitlines()) == 2  # header + one epoch: --trainer.max_epochs 1 wins over the config's


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


def test_detections_count_parts_found_at_zero_false_alarms_and_at_the_threshold(tmp_path: Path) -> None:
    predictions = tmp_path / "test_predictions.csv"
    rows = [("0", 0.2, 0), ("0", 0.6, 1), ("1", 0.9, 1), ("1", 0.5, 0), ("1", 0.7, 1)]
    with predictions.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "gt_label", "pred_score", "pred_label", "figure"])
        writer.writerows([f"{i}.png", label, score, pred, ""] for i, (label, score, pred) in enumerate(rows))
    found = detections(predictions)
    # above the highest good score (0.6): 0.9 and 0.7; flagged at the threshold: 2 defective, 1 good
    assert found == (3, 2, 2, 2, 1)


def test_positional_prior_scores_centred_defects_high_and_spread_ones_near_chance(tmp_path: Path) -> None:
    from PIL import Image

    from fegan_anomalib.demo import positional_prior_pixel_auroc

    def category(masks: list[np.ndarray], name: str) -> Path:
        root = tmp_path / name
        for index, mask in enumerate(masks):
            for folder, array in (
                (root / "test" / "stain", np.zeros((16, 16))),
                (root / "ground_truth" / "stain", mask),
            ):
                folder.mkdir(parents=True, exist_ok=True)
                suffix = "_mask" if "ground_truth" in str(folder) else ""
                Image.fromarray((array * 255).astype(np.uint8)).save(folder / f"{index:03d}{suffix}.png")
        return root

    centre = np.zeros((16, 16))
    centre[6:10, 6:10] = 1
    corners = [np.zeros((16, 16)) for _ in range(4)]
    for mask, (y, x) in zip(corners, [(0, 0), (0, 12), (12, 0), (12, 12)], strict=True):
        mask[y : y + 4, x : x + 4] = 1
    assert positional_prior_pixel_auroc(category([centre], "centred"), 16) > 0.95
    assert positional_prior_pixel_auroc(category(corners, "corners"), 16) < 0.25  # the prior points the wrong way
