"""One measured train-and-test run of an anomalib model, in a process of its own.

``fegan-compare`` and ``fegan-ablate`` need, per model and category, what anomalib's benchmark job
does not record: training seconds per image (training steps only, without validation or data
loading), inference milliseconds per image in torch and in OpenVINO, peak memory and model size.
Peak memory is only meaningful per process, so every run is a child process
(``python -m fegan_anomalib.experiments.runs SPEC.json RESULT.json``) that reports its own ``ru_maxrss``.

A spec is plain JSON: ``model`` (``class_path``/``init_args`` as for ``get_model``), ``data``
(``root``, ``category``, ``train_batch_size``, ``eval_batch_size``), ``seed``, ``out`` (the run's
folder) and ``measure_speed`` (time inference and export to OpenVINO).
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SPEED_SECONDS = 3.0


def median_seconds(run: Any, seconds: float = SPEED_SECONDS, warmup: int = 2) -> float:
    """Median wall time of one call of ``run``, after ``warmup`` calls, over about ``seconds`` (at least 3 calls)."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        tick = time.perf_counter()
        run()
        times.append(time.perf_counter() - tick)
    return float(np.median(times))


def _train_timer() -> Any:
    from lightning.pytorch import Callback  # noqa: PLC0415

    class TrainTimer(Callback):
        """Sum the wall time of training steps only (no validation, no data loading)."""

        def __init__(self) -> None:
            self.seconds = 0.0
            self.images = 0
            self._tick = 0.0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            del trainer, pl_module, batch_idx
            self._tick = time.perf_counter()
            self.images += len(batch.image)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            del trainer, pl_module, args
            self.seconds += time.perf_counter() - self._tick

    return TrainTimer()


def _state_dict_megabytes(module: Any) -> float:
    import torch  # noqa: PLC0415

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell() / 2**20


def ir_megabytes(xml: str | Path) -> float:
    """Return the size of an exported OpenVINO IR (``model.xml`` and the ``model.*`` beside it) in MiB."""
    return sum(path.stat().st_size for path in Path(xml).parent.glob("model.*")) / 2**20


def _speed(model: Any, datamodule: Any, out: Path) -> dict[str, Any]:
    """Time batch-1 inference of the whole pipeline in torch and in OpenVINO (FP32); an OpenVINO failure is a field."""
    import openvino as ov  # noqa: PLC0415
    import torch  # noqa: PLC0415

    size = tuple(model.input_size)
    image = torch.nn.functional.interpolate(datamodule.test_data[0].image[None], size=size, mode="bilinear")
    model.eval()
    with torch.no_grad():
        torch_seconds = median_seconds(lambda: model(image))
    xml = model.to_openvino(export_root=out / "openvino")
    # f32: OpenVINO computes in bfloat16 by default on CPUs that have it, which moves scores.
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    array = image.numpy()
    timings = {"torch_ms_per_image": 1000 * torch_seconds, "openvino_ir_mb": ir_megabytes(xml)}
    try:
        timings["openvino_ms_per_image"] = 1000 * median_seconds(lambda: compiled(array))
    except RuntimeError as error:  # the graph anomalib exported does not run a batch of one: said, the quality kept
        lines = [line for line in str(error).splitlines() if line.strip()]
        timings["openvino_error"] = lines[-1][:300] if lines else type(error).__name__
        print(f"OpenVINO timing failed: {timings['openvino_error']}", flush=True)
    return timings


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Train and test one model on one category as the spec says; return metrics and measurements."""
    from anomalib.data import MVTecAD  # noqa: PLC0415
    from anomalib.engine import Engine  # noqa: PLC0415
    from anomalib.models import get_model  # noqa: PLC0415
    from lightning.pytorch import seed_everything  # noqa: PLC0415

    import fegan_anomalib.registration  # noqa: F401, PLC0415 - registers FEGAN and the peers with anomalib

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(spec.get("seed", 42), workers=True)
    model = get_model(spec["model"])
    data = spec["data"]
    datamodule = MVTecAD(
        root=data["root"],
        category=data["category"],
        train_batch_size=data.get("train_batch_size", 8),
        eval_batch_size=data.get("eval_batch_size", 8),
        num_workers=0,
    )
    timer = _train_timer()
    engine = Engine(
        default_root_dir=out,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        callbacks=[timer],
        precision=spec.get("precision", "32-true"),
    )
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    test_seconds = time.perf_counter() - start
    import torch  # noqa: PLC0415 - already loaded by anomalib

    result: dict[str, Any] = {
        "model": spec["model"]["class_path"],
        "category": data["category"],
        "epochs": engine.trainer.current_epoch,
        "train_images": len(datamodule.train_data),
        "fit_seconds": fit_seconds,
        "train_seconds_per_image": timer.seconds / max(timer.images, 1),
        "test_seconds": test_seconds,
        "test_images": len(datamodule.test_data),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_weights_mb": _state_dict_megabytes(model.model),
        "threads": torch.get_num_threads(),
        **{key: float(value) for key, value in metrics.items()},
    }
    if spec.get("measure_speed", True):
        result.update(_speed(model, datamodule, out))
    return result


def run_in_subprocess(spec: dict[str, Any], folder: Path, reuse: bool = False) -> dict[str, Any]:
    """Run ``spec`` in a child process; its log goes to ``folder/run.log``. Raise with the log tail on failure.

    With ``reuse``, a folder that already holds the result of the same spec (an earlier, finished run
    of a sweep that was stopped) is read back instead of trained again.
    """
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = folder / "spec.json", folder / "result.json", folder / "run.log"
    full_spec = {**spec, "out": str(folder)}
    if reuse and result_path.is_file() and spec_path.is_file() and json.loads(spec_path.read_text()) == full_spec:
        return json.loads(result_path.read_text())
    spec_path.write_text(json.dumps(full_spec, indent=2))
    result_path.unlink(missing_ok=True)
    with log_path.open("w") as log:
        process = subprocess.run(
            [sys.executable, "-m", "fegan_anomalib.experiments.runs", str(spec_path), str(result_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if process.returncode != 0 or not result_path.is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        msg = f"run {folder} failed (exit {process.returncode}); last lines of {log_path}:\n{tail}"
        raise RuntimeError(msg)
    return json.loads(result_path.read_text())


def main() -> None:
    """Child-process entry: ``python -m fegan_anomalib.experiments.runs SPEC.json RESULT.json``."""
    spec_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    result = run(json.loads(spec_path.read_text()))
    result_path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
