"""FEGAN inference speed on this CPU: torch eager, tuned torch, OpenVINO FP32/FP16/INT8, side by side.

    python benchmarks/inference.py [--image-size 256] [--weights PATH] [--calibration-root DIR]

Times the whole exported pipeline (resize, FEN + encoder + decoder, scoring, post-processing) at
batch 1 and batch 8, reports images/s, ms/image and the ratio to torch eager, and compares with
what the CPU's measured convolution throughput allows for FEGAN's ≈105 GFLOP/image (256², VGG19
FEN + encoder to relu5_4 + decoder). INT8 is anomalib's post-training quantisation, calibrated on
the training images of ``--calibration-root``/``--category`` (an MVTec-layout folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

from fegan_anomalib.runs import median_seconds


def conv_gflops_per_second() -> float:
    """Measure the CPU's fp32 convolution throughput on a VGG-sized 3x3 convolution (torch/oneDNN)."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval()
    x = torch.rand(8, 256, 64, 64)
    flops = 2 * 256 * 256 * 9 * 64 * 64 * 8
    with torch.no_grad():
        seconds = median_seconds(lambda: conv(x), seconds=4)
    return flops / seconds / 1e9


def model_gflops(model: torch.nn.Module, size: int) -> float:
    """Multiply-adds x2 of every convolution in the inference graph (FEN, encoder, decoder)."""
    total = 0
    hooks = []

    def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.ConvTranspose2d):
            total += 2 * inputs[0].numel() * module.out_channels * np.prod(module.kernel_size) // inputs[0].shape[0]
        else:
            total += 2 * output[0].numel() * module.in_channels * np.prod(module.kernel_size)

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):  # D never runs in eval mode
            hooks.append(module.register_forward_hook(count))
    with torch.no_grad():
        model(torch.rand(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return total / 1e9


def _bf16(model: torch.nn.Module, images: torch.Tensor) -> object:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(images)


def torch_rows(model: torch.nn.Module, size: int, seconds: float, compile_model: bool) -> list[tuple[str, int, float]]:
    """Time torch eager, channels_last, bf16 autocast (and torch.compile) at batch 1 and 8."""
    rows = []
    with torch.no_grad():
        for batch in (1, 8):
            images = torch.rand(batch, 3, size, size)
            rows.append(("torch eager fp32", batch, median_seconds(partial(model, images), seconds)))
            rows.append(("torch bf16 autocast", batch, median_seconds(partial(_bf16, model, images), seconds)))
            model.to(memory_format=torch.channels_last)
            x = images.contiguous(memory_format=torch.channels_last)
            rows.append(("torch channels_last", batch, median_seconds(partial(model, x), seconds)))
            model.to(memory_format=torch.contiguous_format)
            if compile_model:
                compiled = torch.compile(model.model)
                rows.append(("torch.compile (model only)", batch, median_seconds(partial(compiled, images), seconds)))
            for name, size_, seconds_ in rows[-4:]:
                if size_ == batch:
                    print(f"  measured {name}, batch {batch}: {1000 * seconds_ / batch:.0f} ms/image", flush=True)
    return rows


def openvino_rows(
    model: torch.nn.Module, size: int, seconds: float, datamodule: object
) -> list[tuple[str, int, float]]:
    """Export to OpenVINO FP32, FP16 and (with a calibration datamodule) INT8, and time each."""
    from anomalib.deploy import CompressionType, OpenVINOInferencer  # noqa: PLC0415

    rows = []
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO defaults to bf16 on CPUs that have it
    variants = [
        ("OpenVINO FP32", None, f32),
        ("OpenVINO FP32 IR, bf16 hint (OV default here)", None, None),
        ("OpenVINO FP16 IR", CompressionType.FP16, f32),
    ]
    if datamodule is not None:
        variants.append(("OpenVINO INT8 (PTQ)", CompressionType.INT8_PTQ, None))
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, compression, config) in enumerate(variants):
            try:
                xml = model.to_openvino(
                    export_root=Path(folder) / str(index), compression_type=compression, datamodule=datamodule
                )
                inferencer = OpenVINOInferencer(xml, device="CPU", config=config)
            except RuntimeError as error:  # reported, not hidden: the table says which variant failed
                print(f"  {name} failed: {str(error).splitlines()[-1][:300]}", flush=True)
                continue
            for batch in (1, 8):
                array = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
                rows.append((name, batch, median_seconds(partial(inferencer.predict, array), seconds)))
                print(f"  measured {name}, batch {batch}: {1000 * rows[-1][2] / batch:.0f} ms/image", flush=True)
    return rows


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--weights", default=None, help="FEN state dict (speed does not depend on it)")
    parser.add_argument("--backbone", default="vgg19")
    parser.add_argument("--tap", default="relu5_4")
    parser.add_argument("--calibration-root", type=Path, default=None)
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained FEGAN checkpoint (else a random model)")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    args = parser.parse_args()

    from fegan_anomalib import Fegan  # noqa: PLC0415

    size = args.image_size
    model = Fegan(image_size=size, backbone=args.backbone, tap=args.tap, pre_trained=False, weights=args.weights).eval()
    threads = torch.get_num_threads()
    conv_rate = conv_gflops_per_second()
    gflops = model_gflops(model.model.eval(), size)
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {threads}")
    print(f"measured fp32 conv throughput: {conv_rate:.1f} GFLOP/s; FEGAN inference: {gflops:.1f} GFLOP/image")
    print(f"=> at most {conv_rate / gflops:.2f} images/s if every FLOP ran at the measured conv rate\n")

    rows = torch_rows(model, size, args.seconds, args.compile)
    datamodule = None
    if args.calibration_root is not None:
        from anomalib.data import MVTecAD  # noqa: PLC0415

        datamodule = MVTecAD(root=args.calibration_root, category=args.category, num_workers=0)
    rows += openvino_rows(model, size, args.seconds, datamodule)

    eager = {batch: seconds for name, batch, seconds in rows if name == "torch eager fp32"}
    print(f"FEGAN inference at {size}x{size}, {args.backbone} to {args.tap}, whole pipeline, CPU")
    print("| variant | batch | images/s | ms/image | x torch eager | % of conv-bound |")
    print("|---|---|---|---|---|---|")
    for name, batch, seconds in rows:
        rate = batch / seconds
        print(
            f"| {name} | {batch} | {rate:.2f} | {1000 / rate:.0f} | {eager[batch] / seconds:.2f} "
            f"| {100 * rate * gflops / conv_rate:.0f} % |"
        )


if __name__ == "__main__":
    main()
