"""Helpers the benchmark scripts share (one module: the scripts never import each other).

Python puts a script's folder first on ``sys.path``, so ``python benchmarks/X.py`` imports this as ``common``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from fegan_anomalib.experiments.runs import median_seconds
from fegan_anomalib.models.fegan import measuring


def conv_gflops_per_second(bf16: bool = False) -> float:
    """Measure the CPU's convolution throughput on a VGG-sized 3x3 convolution (torch/oneDNN).

    The better of the plain and the channels-last layout, so the bound is what this CPU's fastest
    convolution path reaches, not a slow path that FEGAN's own layout would beat. ``bf16``: under
    bf16 autocast (emulated, and slow, on CPUs without bfloat16 hardware).
    """
    flops = 2 * 256 * 256 * 9 * 64 * 64 * 8
    rates = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval().to(memory_format=memory_format)
        x = torch.rand(8, 256, 64, 64).contiguous(memory_format=memory_format)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rates.append(flops / median_seconds(lambda conv=conv, x=x: conv(x), seconds=4) / 1e9)
    return max(rates)


def openvino_variants(int8: bool) -> list[tuple[str, object, dict[str, str] | None]]:
    """List the exports both benchmarks compare: (name, anomalib compression type, OpenVINO config).

    FP32 and FP16 IRs run with the f32 hint (OpenVINO defaults to bf16 on CPUs that have it); the
    FP32 IR also runs under that default; INT8 (post-training quantisation) needs a calibration set.
    """
    from anomalib.deploy import CompressionType  # noqa: PLC0415

    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    variants = [
        ("OpenVINO FP32", None, f32),
        ("OpenVINO FP32 IR, default hint (bf16 where the CPU has it)", None, None),
        ("OpenVINO FP16 IR", CompressionType.FP16, f32),
    ]
    if int8:
        variants.append(("OpenVINO INT8 (PTQ)", CompressionType.INT8_PTQ, None))
    return variants


def clock_statistics(add_seconds: Callable[[float], None], **options: Any) -> None:
    """Time every pass of the model's own statistics measurement (``measuring.measure_statistics``).

    ``options`` go to the shipped function (``leave_out=False`` for the in-sample variant); nothing is re-implemented.
    """
    shipped = measuring.measure_statistics

    def timed(*args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        shipped(*args, **kwargs, **options)
        add_seconds(time.perf_counter() - start)

    measuring.measure_statistics = timed
