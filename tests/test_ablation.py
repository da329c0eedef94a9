"""Ablation configs (paper Tables 5-7): every row builds, trains one step and scores; the runner's tables."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from anomalib.data import ImageBatch
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader

from fegan_anomalib import Fegan
from fegan_anomalib.experiments import ablate
from fegan_anomalib.experiments.ablate import (
    FIGURE9,
    LOSS_WEIGHT_DEFAULTS,
    TABLES,
    area_points,
    default_configs,
    load_config,
    read_paper,
    row_init_args,
    run_identity,
    table_markdown,
    write_area_chart,
    write_weight_chart,
)
from fegan_anomalib.models.fegan.augmentation import AUGMENTATIONS

from .conftest import markdown_rows, quiet_trainer

ROWS = [(table, key) for table, (_, rows) in TABLES.items() for key, _ in rows]
# the rows' own scoring (base.yaml's): a fit without validation measures its statistics when it ends
TINY = {"image_size": 32, "max_epochs": 1, "evaluator": False}


def test_every_table_row_has_a_config_and_nothing_else_is_there() -> None:
    on_disk = {(int(p.parent.name.removeprefix("table")), p.stem) for p in default_configs().glob("table*/*.yaml")}
    assert on_disk == set(ROWS)


@pytest.mark.parametrize(("table", "key"), ROWS)
def test_row_trains_one_step_and_scores(table: int, key: str) -> None:
    base = load_config(default_configs() / "base.yaml")
    row = load_config(default_configs() / f"table{table}" / f"{key}.yaml")
    init_args = row_init_args(base, row, TINY)
    for name, value in row["model"]["init_args"].items():  # the row's own setting wins over the base
        assert init_args[name] == value
    seed_everything(0)
    model = Fegan(**init_args)
    assert type(model.augmenter) is AUGMENTATIONS[init_args["augmenter"]]
    assert (model.model.discriminator is not None) == init_args["use_discriminator"]
    before = {name: p.detach().clone() for name, p in model.model.decoder.named_parameters()}
    trainer = quiet_trainer(max_steps=1, max_epochs=-1)
    trainer.fit(model, train_dataloaders=DataLoader([ImageBatch(image=torch.rand(2, 3, 32, 32))], batch_size=None))
    assert trainer.global_step >= 1
    assert any(not torch.equal(p, before[name]) for name, p in model.model.decoder.named_parameters())
    # the row's effect on what the generator is trained with: its loss terms ...
    logged = set(trainer.callback_metrics)
    assert ("feature_loss" in logged) == init_args["use_fen"], logged
    assert ("adversarial_loss" in logged) == ("discriminator_loss" in logged) == init_args["use_discriminator"]
    weights = (model.generator_loss.lambda_fea, model.generator_loss.lambda_con, model.generator_loss.lambda_adv)
    expected = {**LOSS_WEIGHT_DEFAULTS, **{k: v for k, v in init_args.items() if k in LOSS_WEIGHT_DEFAULTS}}
    expected["lambda_adv"] *= init_args["use_discriminator"]  # no D, no adversarial term
    assert weights == tuple(expected.values())
    # ... and the share of each training image its augmenter alters (at the ablations' 128², eight images)
    images = torch.rand(8, 3, 128, 128)
    altered = 0.0
    if init_args["use_augmenter"]:
        augmented = model.augmenter(images, generator=torch.Generator().manual_seed(0))[0]
        altered = (augmented != images).any(1).float().mean().item()
    ratio = init_args["augmenter_area_ratio"] if init_args["use_augmenter"] else 0.0
    # M-SE's patches may overlap (A9): their union covers 1 - exp(-ratio) of the image on average
    expected = 1 - math.exp(-ratio) if init_args["augmenter"] == "MultiScaleSelfEnhancement" else ratio
    assert altered == pytest.approx(expected, rel=0.15, abs=0.005), (key, altered, expected)
    generator = model.model.anomaly_map_generator
    assert not generator.needs_train_stats  # measured for the final weights, with the row's scoring
    model.eval()
    with torch.no_grad():
        output = model.model(torch.rand(2, 3, 32, 32))
    assert output.anomaly_map.shape == (2, 32, 32) and torch.isfinite(output.anomaly_map).all()


def test_table5_rows_sweep_the_area() -> None:
    areas = [
        load_config(default_configs() / "table5" / f"{k}.yaml")["model"]["init_args"]["augmenter_area_ratio"]
        for k, _ in TABLES[5][1]
    ]
    assert areas == [0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]


def test_row_init_args_precedence_and_model_check() -> None:
    base = {"model": {"class_path": "Fegan", "init_args": {"image_size": 128, "use_fen": True}}}
    row = {"model": {"class_path": "Fegan", "init_args": {"use_fen": False}}}
    assert row_init_args(base, row, {"image_size": 64}) == {"image_size": 64, "use_fen": False}
    with pytest.raises(ValueError, match="must configure the Fegan model"):
        row_init_args(base, {"model": {"class_path": "Padim"}}, {})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(Path("no/such/base.yaml"))


def test_table_markdown_shape_with_paper_column() -> None:
    results = {("g", "tile"): [{"image_AUROC": 0.5, "pixel_AUROC": 0.6, "pixel_AUPRO": 0.1}]}
    text = table_markdown(7, results, ["tile"], {(7, "g", "image_AUROC"): 0.9})
    lines = text.splitlines()
    assert lines[0].startswith("### Table 7")
    assert lines[2].count("|") == lines[3].count("|")  # header and separator agree
    rows = markdown_rows(text)
    assert rows[0][:2] == ["variant", "image AUROC (tile)"]
    assert rows[0][-2:] == ["paper image AUROC", "paper pixel AUROC"]
    assert ["G", "0.500", "0.600", "0.100", "0.900", "–"] in rows
    assert ["G + M-SE", "failed", "failed", "failed", "–", "–"] in rows  # a missing result is shown, not dropped
    selected = markdown_rows(table_markdown(7, results, ["tile"], {}, keys={"g"}))
    assert [row[0] for row in selected] == ["variant", "G"]  # --rows: only the rows asked for


def test_table_markdown_mean_and_sample_sd_over_seeds() -> None:
    runs = [{"image_AUROC": v, "pixel_AUROC": 0.5, "pixel_AUPRO": 0.2} for v in (0.6, 0.7, 0.8)]
    text = table_markdown(7, {("full", "tile"): runs}, ["tile"], {})
    assert ["FEGAN (G + FEN + D + M-SE)", "0.700 ± 0.100", "0.500 ± 0.000", "0.200 ± 0.000"] in markdown_rows(text)
    partial = table_markdown(7, {("full", "tile"): [*runs[:2], {}]}, ["tile"], {})
    assert "0.650 ± 0.071 (failed runs)" in partial  # a failed seed is said, not averaged away


def test_area_chart_points_are_seed_means_with_their_sd_in_area_order(tmp_path: Path) -> None:
    results = {
        ("area_050", "tile"): [{"image_AUROC": 0.6}, {"image_AUROC": 0.8}],
        ("area_005", "tile"): [{"image_AUROC": 0.5}, {}],  # a failed seed is left out, not counted as 0
        ("area_020", "other"): [{"image_AUROC": 0.9}],
    }
    points = area_points(results, "tile", "image_AUROC")
    assert [area for area, _, _ in points] == [5, 50]  # the table's order, rows without results skipped
    assert points[0] == (5, 0.5, 0.0)
    assert points[1][1] == pytest.approx(0.7) and points[1][2] == pytest.approx(0.1414, abs=1e-4)
    write_area_chart(results, ["tile", "other"], tmp_path)
    assert (tmp_path / "table5.png").stat().st_size > 1000


def test_project_copy_of_the_paper_tables_maps_every_ablation_row() -> None:
    paper = read_paper()
    assert paper[(7, "full", "image_AUROC")] == 0.978 and paper[(7, "g", "pixel_AUROC")] == 0.637
    assert paper[(5, "area_001", "image_AUROC")] == 0.921 and paper[(6, "cutout_colour", "pixel_AUROC")] == 0.747
    tables = {table: rows for table, (_, rows) in TABLES.items() if table != FIGURE9}  # Fig. 9 prints no numbers
    assert all((table, key, "image_AUROC") in paper for table, rows in tables.items() for key, _ in rows)
    assert read_paper(None) == {}
    with pytest.raises(FileNotFoundError, match=r"paper_tables\.csv"):
        read_paper(Path("no/such.csv"))


def test_fig9_sweeps_one_weight_at_a_time_and_its_default_rows_run_once(tmp_path: Path) -> None:
    base = load_config(default_configs() / "base.yaml")
    identities, weights = set(), {}
    for key, _ in TABLES[FIGURE9][1]:
        init_args = row_init_args(base, load_config(default_configs() / f"table{FIGURE9}" / f"{key}.yaml"), {})
        weights[key] = tuple(init_args.get(name, LOSS_WEIGHT_DEFAULTS[name]) for name in LOSS_WEIGHT_DEFAULTS)
        identities.add(run_identity(init_args, "tile", 42))
    assert weights["lambda_fea_01"] == (1.0, 30.0, 1.0) and weights["lambda_adv_90"] == (30.0, 30.0, 90.0)
    assert sum(weight != (30.0, 30.0, 1.0) for weight in weights.values()) == 9  # one varied at a time
    # lambda_fea 30, lambda_con 30 and lambda_adv 1 are the full model of Table 7: one run for the three
    full = row_init_args(base, load_config(default_configs() / "table7" / "full.yaml"), {})
    assert len(identities) == 10 and run_identity(full, "tile", 42) in identities
    results = {(key, "tile"): [{"image_AUROC": 0.5 + 0.001 * i, "pixel_AUROC": 0.6}] for i, (key, _) in
               enumerate(TABLES[FIGURE9][1])}  # fmt: skip
    write_weight_chart(results, ["tile"], tmp_path)
    assert (tmp_path / "fig9.png").stat().st_size > 1000


def test_one_seed_per_sitting_resumes_the_seed_it_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--seeds 42``, then ``--seeds 42 43 --resume``: seed 42's run has one folder both times, so it is read back."""
    calls: list[tuple[Path, bool]] = []

    def fake_run(job: dict, folder: Path, reuse: bool = False) -> dict:
        calls.append((folder, reuse))
        del job
        return {"image_AUROC": 0.5, "pixel_AUROC": 0.6}

    monkeypatch.setattr(ablate, "run_in_subprocess", fake_run)
    args = ["--tables", "9", "--rows", "lambda_adv_10", "--root", str(tmp_path), "--out", str(tmp_path / "out")]
    ablate.main([*args, "--seeds", "42"])
    ablate.main([*args, "--seeds", "42", "43", "--resume"])
    (first, _), (again, reuse), (other, _) = calls
    assert first == again == tmp_path / "out" / "runs" / "table9" / "lambda_adv_10" / "magnetic_tile" / "seed42"
    assert reuse and other.name == "seed43"
    with (tmp_path / "out" / "table9.csv").open() as table:
        assert [row["seed"] for row in csv.DictReader(table)] == ["42", "43"]
