"""The built wheel stands alone: installed outside the clone, fegan-ablate finds its packaged configs and runs a row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel (hatchling from the dev extra, no network) and install it into a folder of its own."""
    folder = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(folder), str(REPOSITORY)], cwd=folder)
    wheel = next(folder.glob("fegan_anomalib-*.whl"))
    _run([*pip, "install", "--no-deps", "-q", "--target", str(folder / "site"), str(wheel)], cwd=folder)
    return folder / "site"


def test_wheel_carries_the_ablation_configs_and_paper_tables(installed_wheel: Path) -> None:
    package = installed_wheel / "fegan_anomalib" / "experiments"
    assert (package / "ablation" / "base.yaml").is_file()
    assert len(list((package / "ablation").glob("table*/*.yaml"))) == 30  # Tables 5-7 (18) and Fig. 9 (12)
    assert (package / "paper_tables.csv").is_file()


def test_fegan_ablate_from_the_wheel_outside_the_clone(
    installed_wheel: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed_wheel), "HF_HUB_OFFLINE": "1"}
    probe = "import fegan_anomalib.experiments.ablate as a; print(a.__file__); print(a.default_configs())"
    where = _run([sys.executable, "-c", probe], cwd=tmp_path, env=env).stdout.split()
    assert all(Path(path).is_relative_to(installed_wheel) for path in where), where  # not the clone's files
    ablate = [sys.executable, "-m", "fegan_anomalib.experiments.ablate"]
    assert "--rows" in _run([*ablate, "--help"], cwd=tmp_path, env=env).stdout
    out = tmp_path / "ablation"
    args = ["--tables", "7", "--rows", "full", "--root", str(synthetic_root), "--categories", "texture"]
    _run([*ablate, *args, "--image-size", "32", "--max-epochs", "1", "--out", str(out)], cwd=tmp_path, env=env)
    table = (out / "table7.md").read_text()
    assert "FEGAN (G + FEN + D + M-SE)" in table and "| G |" not in table  # the one row asked for
    result = json.loads(next((out / "runs").rglob("result.json")).read_text())
    assert {"image_AUROC", "pixel_AUROC", "pixel_AUPRO"} <= result.keys()
