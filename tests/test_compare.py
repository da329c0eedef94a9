"""FEGAN beside PaDiM and DRAEM: the peers, anomalib's benchmark grid and ``fegan-compare`` end to end."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from anomalib.models import get_model
from anomalib.pipelines.components.utils import get_iterator_from_grid_dict
from anomalib.utils.config import flatten_dict

from fegan_anomalib import Fegan
from fegan_anomalib.experiments.compare import epochs_for, main, model_specs
from fegan_anomalib.experiments.peers import BenchDraem, BenchPadim, BenchPatchcore
from fegan_anomalib.experiments.runs import run_in_subprocess

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vgg16_bn_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision-keyed VGG16-BN state dict cut after relu5_2, like the stand-in file."""
    torch.manual_seed(0)
    features = torchvision.models.vgg16_bn(weights=None).features[:40]
    path = tmp_path_factory.mktemp("weights") / "vgg16_bn.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def test_benchmark_config_grid_is_uniform_and_finite() -> None:
    """anomalib's results table needs one key set per grid; its Engine gets no epoch count."""
    config = yaml.safe_load((REPO / "configs" / "benchmark.yaml").read_text())["benchmark"]
    jobs = list(get_iterator_from_grid_dict(config))
    assert [job["model"]["class_path"] for job in jobs] == ["Fegan", "BenchPadim", "BenchPatchcore", "BenchDraem"]
    assert len({tuple(sorted(flatten_dict(job))) for job in jobs}) == 1
    for job in jobs:
        model = get_model(job["model"])  # resolvable by the short name the pipeline uses
        epochs = model.trainer_arguments.get("max_epochs")
        assert epochs is not None and 1 <= epochs <= 20, (job["model"]["class_path"], epochs)
        assert tuple(model.pre_processor.transform.transforms[0].size) == (128, 128)
        metrics = {metric.name for metric in model.evaluator.test_metrics}
        assert {"image_AUROC", "pixel_AUROC", "pixel_AUPRO", "pixel_BestIoU"} <= metrics


def test_padim_takes_the_vgg16_bn_weights_file(vgg16_bn_weights: Path) -> None:
    model = BenchPadim(image_size=32, pre_trained=False, weights=str(vgg16_bn_weights))
    extractor = model.model.feature_extractor
    assert list(extractor.out_dims) == [256, 512, 512]
    assert len(model.model.idx) == 100 and int(model.model.idx.max()) < 1280
    first_conv = next(p for n, p in extractor.named_parameters() if n.endswith("weight"))
    assert torch.equal(first_conv, torch.load(vgg16_bn_weights)["features.0.weight"])
    features = extractor(torch.rand(1, 3, 32, 32))
    assert [f.shape[-1] for f in features.values()] == [8, 4, 2]  # strides 4, 8, 16
    with pytest.raises(ValueError, match="max_epochs must be 1"):
        BenchPadim(max_epochs=3, pre_trained=False)


def test_patchcore_takes_the_vgg16_bn_weights_file_at_its_middle_or_late_stages(vgg16_bn_weights: Path) -> None:
    model = BenchPatchcore(image_size=32, pre_trained=False, weights=str(vgg16_bn_weights))
    extractor = model.model.feature_extractor
    assert list(extractor.out_dims) == [256, 512]  # relu3_3, relu4_3: PatchCore's middle stages, the default
    first_conv = next(p for n, p in extractor.named_parameters() if n.endswith("weight"))
    assert torch.equal(first_conv, torch.load(vgg16_bn_weights)["features.0.weight"])
    features = extractor(torch.rand(1, 3, 32, 32))
    assert [f.shape[-1] for f in features.values()] == [8, 4]  # strides 4, 8
    model.model.train()
    embedding = model.model(torch.rand(2, 3, 32, 32))
    assert embedding.shape == (2 * 8 * 8, 768)  # one 768-d patch vector per stride-4 cell
    late = BenchPatchcore(image_size=32, pre_trained=False, weights=str(vgg16_bn_weights), vgg16_bn_stages="late")
    assert list(late.model.feature_extractor.out_dims) == [512, 512]
    assert [f.shape[-1] for f in late.model.feature_extractor(torch.rand(1, 3, 32, 32)).values()] == [4, 2]
    with pytest.raises(ValueError, match="max_epochs must be 1"):
        BenchPatchcore(max_epochs=3, pre_trained=False)
    with pytest.raises(ValueError, match="vgg16_bn_stages must be one of"):
        BenchPatchcore(pre_trained=False, vgg16_bn_stages="early")


def test_draem_budget_and_offline_errors(tmp_path: Path) -> None:
    model = BenchDraem(image_size=64, max_epochs=4)
    assert model.trainer_arguments["max_epochs"] == 4
    assert model.trainer_arguments["gradient_clip_val"] == 0  # DRAEM's own arguments kept
    assert model.augmenter.anomaly_source_paths == []  # noise sources, nothing downloaded
    with pytest.raises(ValueError, match="set pre_trained to false"):
        BenchDraem(pre_trained=True)
    with pytest.raises(FileNotFoundError, match=r"dtd_dir .* does not exist"):
        BenchDraem(dtd_dir=str(tmp_path / "dtd"))


def test_fegan_args_reach_fegan_only_and_name_the_condition() -> None:
    args = argparse.Namespace(
        image_size=64, weights=None, fegan_images=100, draem_images=10, dtd_dir=None,
        fegan_args={"feature_distance": "mahalanobis", "sigma": 4.0}, patchcore_args={},
    )  # fmt: skip
    specs = model_specs(args, train_images=50)
    assert specs["Fegan"]["init_args"]["feature_distance"] == "mahalanobis"
    assert specs["Fegan"]["init_args"]["max_epochs"] == 2
    assert specs["Fegan"]["condition"] == "random VGG19, feature_distance=mahalanobis, sigma=4.0"
    assert "feature_distance" not in specs["BenchPadim"]["init_args"]
    model = Fegan(**specs["Fegan"]["init_args"])  # the arguments are the model's own
    assert model.model.anomaly_map_generator.feature_distance == "mahalanobis"


def test_patchcore_args_reach_patchcore_only_and_name_the_condition() -> None:
    args = argparse.Namespace(
        image_size=64, weights=None, fegan_images=100, draem_images=10, dtd_dir=None, fegan_args={},
        patchcore_args={"coreset_sampling_ratio": 0.01, "vgg16_bn_stages": "late"},
    )  # fmt: skip
    specs = model_specs(args, train_images=50)
    assert specs["BenchPatchcore"]["init_args"]["coreset_sampling_ratio"] == 0.01
    assert specs["BenchPatchcore"]["condition"] == "random WRN-50-2, coreset_sampling_ratio=0.01, vgg16_bn_stages=late"
    assert "coreset_sampling_ratio" not in specs["BenchPadim"]["init_args"]
    assert "coreset_sampling_ratio" not in specs["Fegan"]["init_args"]


def test_epochs_for_budget() -> None:
    assert epochs_for(1000, 28) == 36
    assert epochs_for(1000, 400) == 3
    assert epochs_for(10, 400) == 1


def test_failed_run_raises_with_the_log(tmp_path: Path, synthetic_root: Path) -> None:
    spec = {
        "model": {"class_path": "Fegan", "init_args": {"image_size": 32, "pre_trained": False}},
        "data": {"root": str(synthetic_root), "category": "no_such_category"},
    }
    with pytest.raises(RuntimeError, match="failed") as error:
        run_in_subprocess(spec, tmp_path / "run")
    assert "run.log" in str(error.value) and (tmp_path / "run" / "run.log").stat().st_size > 0


def test_reuse_reads_back_only_a_finished_run_of_the_same_spec(tmp_path: Path, synthetic_root: Path) -> None:
    folder = tmp_path / "run"
    spec = {
        "model": {"class_path": "Fegan", "init_args": {"image_size": 32, "pre_trained": False}},
        "data": {"root": str(synthetic_root), "category": "no_such_category"},
    }
    folder.mkdir()
    (folder / "spec.json").write_text(json.dumps({**spec, "out": str(folder)}))
    (folder / "result.json").write_text(json.dumps({"image_AUROC": 0.25}))
    assert run_in_subprocess(spec, folder, reuse=True) == {"image_AUROC": 0.25}
    changed = {**spec, "seed": 7}  # other arguments: the stored result is not theirs, so the run happens (and fails)
    with pytest.raises(RuntimeError, match="failed"):
        run_in_subprocess(changed, folder, reuse=True)
    assert not (folder / "result.json").exists()
    assert json.loads((folder / "spec.json").read_text())["seed"] == 7


def test_compare_end_to_end(tmp_path: Path, synthetic_root: Path, vgg16_bn_weights: Path) -> None:
    out = tmp_path / "compare"
    main([
        "--root", str(synthetic_root), "--categories", "texture", "--weights", str(vgg16_bn_weights),
        "--image-size", "32", "--batch-size", "4", "--fegan-images", "8", "--draem-images", "8", "--out", str(out),
    ])  # fmt: skip
    with (out / "results.csv").open() as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"Fegan", "BenchPadim", "BenchPatchcore", "BenchDraem"}
    for name, row in rows.items():
        assert "error" not in row or not row["error"], name
        assert float(row["train_seconds_per_image"]) > 0 and float(row["openvino_ms_per_image"]) > 0
        assert float(row["peak_rss_mb"]) > 100 and float(row["openvino_ir_mb"]) > 0
        assert int(row["epochs"]) == 1
    assert len({row["pixel_AUROC"] for row in rows.values()}) == 4  # each model's own figure, not one copied
    assert rows["Fegan"]["condition"] == rows["BenchPadim"]["condition"] == rows["BenchPatchcore"]["condition"]
    assert rows["Fegan"]["condition"] == "stand-in VGG16-BN"
    report = (out / "results.md").read_text()
    assert "FEGAN vs DRAEM: training" in report and "32x32" in report
    assert (out / "results.png").stat().st_size > 1000
