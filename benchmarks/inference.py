"""FEGAN inference speed on this CPU: torch eager, tuned torch, OpenVINO FP32/FP16/INT8, side by side.

    python benchmarks/inference.py [--image-size 256] [--weights PATH] [--calibration-root DIR] \
        [--checkpoint CKPT --model-args JSON] [--compile]

Times the whole exported pipeline (resize, FEN + encoder + decoder, scoring, post-processing) at
batch 1 and batch 8, reports images/s, ms/image and the ratio to torch eager, and compares with
what the CPU's measured convolution throughput allows for FEGAN's ≈105 GFLOP/image (256², VGG19
FEN + encoder to relu5_4 + decoder, the 0.2 default; ``--tap`` picks the cut, relu4_4 by default). INT8 is
anomalib's post-training quantisation, calibrated on the training images of
``--calibration-root``/``--category`` (an MVTec-layout folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from common import conv_gflops_per_second, openvino_variants  # the benchmarks' shared helpers

from fegan_anomalib.experiments.runs import ir_megabytes, median_seconds


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


def fit_post_processor_for_timing(model: torch.nn.Module, size: int) -> None:
    """Give a random model thresholds and min/max from its own scores on random images.

    Export refuses a model whose post-processor (or scoring statistics) was never fitted (its scores would be
    NaN); speed does not depend on these values, so this is for timing only — never for accuracy figures. The
    statistics are filled with neutral values (mean 0, std 1), and the nearest-neighbour memory with ``memory_size``
    random rows (its full size), so the default's scoring cost stays in the timing.
    """
    generator = model.model.anomaly_map_generator
    for name in ("feature_stats", "residual_stats"):
        getattr(generator, name).copy_(torch.tensor([0.0, 1.0]))
    if generator.per_cell:
        generator.feature_residual_mean.zero_()
        generator.feature_residual_inv_std.fill_(1.0)
    if generator.position_free:
        generator.memory_bank = torch.randn(generator.memory_size, generator.feature_shape[0])
    if generator.per_cell and generator.position_free:
        generator.distance_stats.copy_(torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    with torch.no_grad():
        scores = model.model(torch.rand(4, 3, size, size))
    post = model.post_processor
    for prefix, values in (("image", scores.pred_score), ("pixel", scores.anomaly_map)):
        getattr(post, f"{prefix}_min").fill_(values.min())
        getattr(post, f"{prefix}_max").fill_(values.max())
        getattr(post, f"_{prefix}_threshold").fill_(values.median())


def _bf16(model: torch.nn.Module, images: torch.Tensor) -> object:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(images)


def torch_rows(model: torch.nn.Module, size: int, seconds: float, compile_model: bool) -> list[tuple[str, int, float]]:
    """Time torch eager (contiguous weights, the plain baseline), channels_last (FEGAN's default), bf16 autocast.

    With ``compile_model``, also ``torch.compile`` of the torch model alone (pre/post-processing stay eager).
    """
    variants = [
        ("torch eager fp32", torch.contiguous_format, False),
        ("torch bf16 autocast", torch.contiguous_format, True),
        ("torch channels_last (FEGAN default)", torch.channels_last, False),
        ("torch channels_last + bf16 autocast", torch.channels_last, True),
    ]
    rows = []
    with torch.no_grad():
        for batch in (1, 8):
            images = torch.rand(batch, 3, size, size)
            for name, memory_format, bf16 in variants:
                model.to(memory_format=memory_format)
                run = partial(_bf16, model, images) if bf16 else partial(model, images)
                rows.append((name, batch, median_seconds(run, seconds)))
                print(f"  measured {name}, batch {batch}: {1000 * rows[-1][2] / batch:.0f} ms/image", flush=True)
            if compile_model:
                compiled = torch.compile(model.model)
                rows.append(("torch.compile (model only)", batch, median_seconds(partial(compiled, images), seconds)))
                print(f"  measured torch.compile, batch {batch}: {1000 * rows[-1][2] / batch:.0f} ms/image", flush=True)
    model.to(memory_format=torch.channels_last)  # back to FEGAN's default for the exports
    return rows


def openvino_rows(
    model: torch.nn.Module, size: int, seconds: float, datamodule: object
) -> list[tuple[str, int, float]]:
    """Export to OpenVINO FP32, FP16 and (with a calibration datamodule) INT8, and time each."""
    from anomalib.deploy import OpenVINOInferencer  # noqa: PLC0415

    rows = []
    variants = openvino_variants(int8=datamodule is not None)
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
            print(f"  exported {name}: IR (xml + bin) {ir_megabytes(xml):.1f} MiB", flush=True)
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
    parser.add_argument("--tap", default="relu4_4", help="the package default; the paper's is relu5_4")
    parser.add_argument("--calibration-root", type=Path, default=None)
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained FEGAN checkpoint (else a random model)")
    parser.add_argument(
        "--model-args", default="{}", help="JSON of Fegan arguments (of the checkpoint, or of the random model)"
    )
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    args = parser.parse_args()

    from fegan_anomalib import Fegan  # noqa: PLC0415

    if args.checkpoint is not None:
        model = Fegan.load_from_checkpoint(args.checkpoint, **json.loads(args.model_args)).eval()
        model.rescored = []  # timing only: thresholds of another scoring are stale, not slower (export would refuse)
        size = int(model.input_size[0])
        args.backbone, args.tap = model.hparams.backbone, model.hparams.tap
    else:
        size = args.image_size
        extra = json.loads(args.model_args)  # e.g. '{"feature_distance": "mahalanobis"}': 0.3's scoring, for its cost
        model = Fegan(
            image_size=size, backbone=args.backbone, tap=args.tap, pre_trained=False, weights=args.weights, **extra
        )
        model.eval()
        fit_post_processor_for_timing(model, size)
    threads = torch.get_num_threads()
    conv_rate = conv_gflops_per_second()
    gflops = model_gflops(model.model.eval(), size)
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {threads}")
    print(f"measured fp32 conv throughput: {conv_rate:.1f} GFLOP/s; FEGAN inference: {gflops:.1f} GFLOP/image")
    print(f"=> at most {conv_rate / gflops:.2f} images/s if every FLOP ran at the measured conv rate")
    # the score's statistics and memory: in every checkpoint and exported graph, beside the networks' weights
    buffers = sum(b.numel() * b.element_size() for b in model.model.anomaly_map_generator.state_dict().values())
    print(f"scoring statistics and memory (checkpoint and graph): {buffers / 2**20:.1f} MiB\n")

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
