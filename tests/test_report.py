"""fegan-report on run folders and a benchmark CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fegan_anomalib.experiments.report import collect, main, tables

from .conftest import markdown_rows


def _run(root: Path, model: str, category: str, image_auroc: float, pixel_auroc: float) -> None:
    folder = root / model / "MVTecAD" / category / "v0"
    folder.mkdir(parents=True)
    record = {
        "model": model,
        "data": "MVTecAD",
        "category": category,
        "metrics": {"image_AUROC": image_auroc, "pixel_AUROC": pixel_auroc},
    }
    (folder / "test_metrics.json").write_text(json.dumps(record))


def test_report_tables_means_and_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _run(tmp_path, "Fegan", "tile", 0.9, 0.8)
    _run(tmp_path, "Fegan", "nut", 0.7, 0.6)
    bench = tmp_path / "runs" / "benchmark" / "2026"
    bench.mkdir(parents=True)
    (bench / "results.csv").write_text(
        "accelerator,model.class_path,data.class_path,data.init_args.category,image_AUROC,pixel_AUROC\n"
        "cpu,Padim,MVTecAD,tile,0.5,0.6\ncpu,Padim,MVTecAD,nut,0.6,0.9\n"
    )
    table = tables(collect(tmp_path))
    assert table["image_AUROC"]["mean"]["Fegan"] == pytest.approx(0.8)
    assert table["pixel_AUROC"]["mean"]["Padim"] == pytest.approx(0.75)
    assert table["image_AUROC"]["nut"] == {"Fegan": 0.7, "Padim": 0.6}
    main([str(tmp_path), "--out", str(tmp_path / "out")])
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert ["**mean**", "0.800", "0.550"] in markdown_rows(markdown)
    assert (tmp_path / "out" / "report.png").stat().st_size > 1000
    assert "image_AUROC,tile,0.9,0.5" in (tmp_path / "out" / "report.csv").read_text().splitlines()
    assert "written:" in capsys.readouterr().out


def test_report_without_results_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No test_metrics\.json"):
        collect(tmp_path)
