"""FEGAN training throughput on this machine's CPU or CUDA GPU, per variant, against the device's convolution rate.

    python benchmarks/training.py [--sizes 128 256] [--batches 8 16] [--steps 10] [--out training_speed.csv]
    python benchmarks/training.py --accelerator cuda --sizes 256 --batches 16 --steps 30 --tap relu4_4
    python benchmarks/training.py --one "fp32 + FEN cache" 128 8 --profile     # where a step's time goes

Runs the real loop (anomalib's MVTecAD datamodule on generated PNGs, Lightning's Trainer,
``Fegan.training_step``: M-SE, G step, D step) for three epochs per variant and times the third, when the
FEN cache (if on) serves every image (the first epoch computes, the second verifies, as for 198 of the paper's
200 epochs). The time is the third epoch's wall time over its steps but the first two (the loader's start), the
device synchronised at the clock's start and end only, so the GPU is timed as it runs when nothing waits on it. Each
variant runs in its own process, so its peak memory is its own.

Per variant, beside images/s: the operators one step dispatches to torch (a ``TorchDispatchMode`` count; on a
GPU each is at least one kernel launch), the step's convolution FLOPs (forward **and** backward, FEN, encoder,
decoder, discriminator; ``torch.utils.flop_counter``) over the device's measured rate of a VGG-sized 3×3
convolution (fp32 for fp32 rows, bf16 for bf16 rows; on a GPU fp32 is cuDNN's default TF32 and fp16 rows use the
bf16 rate), peak memory (RSS on CPU, allocated GPU memory on CUDA) and, on CUDA, the share of a step's wall time
the GPU is busy (the profiler's kernel time over five steps' wall time) and the host-device synchronisations one
step makes (``torch.cuda.set_sync_debug_mode``).

Gradient-share logging (``gradient_share_every``) is off in every row but the one named for it, which shows its
cost. On CUDA cuDNN's autotuner is on (``Trainer(benchmark=True)``, what a user should set for fixed-size input).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from common import conv_gflops_per_second
from torch.utils._python_dispatch import TorchDispatchMode  # the same CPU bound as inference's (script folder)

from fegan_anomalib.experiments.compare import cpu_name

VARIANTS: dict[str, dict[str, Any]] = {
    "fp32, plain layout": {"precision": "32-true", "model": {"channels_last": False, "fen_cache_mb": 0}},
    "fp32, no FEN cache": {"precision": "32-true", "model": {"fen_cache_mb": 0}},
    "fp32 + grad-share logging every 10 steps": {"precision": "32-true", "model": {"gradient_share_every": 10}},
    "fp32 + FEN cache": {"precision": "32-true", "model": {}},
    "bf16-mixed": {"precision": "bf16-mixed", "model": {"fen_cache_mb": 0}},
    "bf16-mixed + FEN cache": {"precision": "bf16-mixed", "model": {}},
    "16-mixed + FEN cache": {"precision": "16-mixed", "model": {}, "cuda_only": True},
}
# the rows run by default at the larger sizes and batches (each costs 4x / 2x a step)
SHORT = ("fp32, no FEN cache", "fp32 + FEN cache")
CUDA_DEFAULT = ("fp32 + FEN cache", "fp32, no FEN cache", "bf16-mixed + FEN cache", "16-mixed + FEN cache")
EPOCHS = 3  # fill, verify, serve: the third epoch is timed
WARM_STEPS = 2  # of the timed epoch, not timed


def cuda_conv_gflops_per_second(dtype: torch.dtype) -> float:
    """Measure the GPU's rate on a VGG-sized 3×3 convolution, forward and backward, channels-last (cuDNN)."""
    torch.backends.cudnn.benchmark = True
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, device="cuda").to(memory_format=torch.channels_last)
    x = torch.rand(32, 256, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_()
    flops = 3 * 2 * 256 * 256 * 9 * 64 * 64 * 32  # forward, input gradient, weight gradient

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            conv(x).sum().backward()

    for _ in range(5):
        step()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        step()
    end.record()
    end.synchronize()
    return flops * 20 / (start.elapsed_time(end) / 1000) / 1e9


class _Operators(TorchDispatchMode):
    """Count the operators dispatched to torch's kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.count += 1
        return func(*args, **(kwargs or {}))


def measure(
    variant: str, size: int, batch: int, steps: int, backbone: str, tap: str, accelerator: str, profile: bool = False
) -> dict[str, Any]:
    """Train three epochs of ``steps`` batches in this process; time the third; count and profile extra steps."""
    from anomalib.data import MVTecAD  # noqa: PLC0415
    from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: PLC0415
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    from fegan_anomalib import Fegan  # noqa: PLC0415
    from fegan_anomalib.data import make_synthetic_dataset  # noqa: PLC0415

    setting = VARIANTS[variant]
    cuda = accelerator == "cuda"
    seed_everything(0)
    root = Path(tempfile.gettempdir()) / f"fegan_training_speed_{size}_{batch * steps}"  # shared by the variants
    if not (root / "texture").is_dir():
        make_synthetic_dataset(
            root, categories=("texture",), image_size=size, num_train=batch * steps, num_test_good=1, num_test_defect=1
        )
    model_args = {"gradient_share_every": 0, **setting["model"]}
    model = Fegan(image_size=size, backbone=backbone, tap=tap, pre_trained=False, max_epochs=EPOCHS, **model_args)

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.seconds = 0.0
            self.steps = 0
            self.extra: dict[str, Any] = {}

        def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
            if trainer.current_epoch == EPOCHS - 1 and cuda:
                torch.cuda.reset_peak_memory_stats()

        def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
            if trainer.current_epoch != EPOCHS - 1:
                return
            if idx == WARM_STEPS - 1:  # the clock starts after the epoch's first steps (loader start-up)
                synchronize()
                self.start = time.perf_counter()
            elif idx >= WARM_STEPS:
                self.steps += 1

        def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
            if trainer.current_epoch != EPOCHS - 1:
                return
            synchronize()
            self.seconds = time.perf_counter() - self.start
            self.extra["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None
            batch = next(iter(trainer.datamodule.train_dataloader()))
            batch.image = pl_module.pre_processor.transform(batch.image.to(pl_module.device))
            context = trainer.precision_plugin.train_step_context
            operators = _Operators()
            with operators, context():
                pl_module.training_step(batch, 1)
            self.extra["operators_per_step"] = operators.count
            counter = FlopCounterMode(display=False)
            with counter, context():
                pl_module.training_step(batch, 1)
            counts = counter.get_flop_counts().get("Global", {})
            self.extra["gflop"] = sum(v for op, v in counts.items() if "convolution" in str(op)) / 1e9
            if cuda:
                self.extra |= _cuda_profile(pl_module, batch, context)
            if profile:  # where one step's time goes, by operator
                with torch.profiler.profile() as profiler, context():
                    pl_module.training_step(batch, 1)
                print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    timer = StepTimer()
    datamodule = MVTecAD(
        root=root,
        category="texture",
        train_batch_size=batch,
        eval_batch_size=batch,
        num_workers=8 if cuda else 0,  # 2 cores here: loading stays in the main process
    )
    trainer = Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        max_epochs=EPOCHS,
        precision=setting["precision"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        benchmark=cuda,
        callbacks=[timer],
        default_root_dir=tempfile.mkdtemp(),
    )
    trainer.fit(model, datamodule=datamodule)
    step = timer.seconds / timer.steps
    return {
        "variant": variant,
        "device": torch.cuda.get_device_name() if cuda else cpu_name(),
        "precision": setting["precision"],
        "image_size": size,
        "batch": batch,
        "timed_steps": timer.steps,
        "ms_per_step": round(1000 * step, 1),
        "images_per_s": round(batch / step, 2),
        "operators_per_step": timer.extra["operators_per_step"],
        "gflop_per_step": round(timer.extra["gflop"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_gpu_mb": timer.extra.get("peak_gpu_mb"),
        "gpu_busy_pct": timer.extra.get("gpu_busy_pct"),
        "syncs_per_step": timer.extra.get("syncs_per_step"),
        "sync_sites": timer.extra.get("sync_sites"),
    }


def _cuda_profile(pl_module: Any, batch: Any, context: Any) -> dict[str, Any]:
    """GPU-busy share over five steps (profiler kernel time / wall) and the synchronisations of one step."""
    for _ in range(2):  # warm: the profiler's own start-up stays out
        with context():
            pl_module.training_step(batch, 1)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
        start = time.perf_counter()
        for _ in range(5):
            with context():
                pl_module.training_step(batch, 1)
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    busy_us = sum(getattr(e, "self_device_time_total", 0.0) for e in profiler.key_averages())
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with context():
                pl_module.training_step(batch, 1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message).lower()]
    return {"gpu_busy_pct": round(100 * busy_us / wall_us), "syncs_per_step": len(syncs), "sync_sites": syncs[:5]}


def cpu_flags() -> set[str]:
    """Return the CPU's feature flags (Linux), to say whether bf16 runs in hardware here."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def device_rates(cuda: bool) -> tuple[dict[str, float], bool]:
    """Print the device and measure its convolution rate per precision; say whether bf16 runs in hardware."""
    bf16_hardware = True
    if cuda:
        rates = {"32-true": cuda_conv_gflops_per_second(torch.float32)}
        rates["bf16-mixed"] = rates["16-mixed"] = cuda_conv_gflops_per_second(torch.bfloat16)
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
        print(f"measured 3x3-conv rate (fwd+bwd): TF32 {rates['32-true']:.0f} GFLOP/s, bf16 {rates['bf16-mixed']:.0f}")
    else:
        flags = cpu_flags()
        bf16_hardware = bool(flags & {"avx512_bf16", "amx_bf16"})
        rates = {"32-true": conv_gflops_per_second(bf16=False), "bf16-mixed": conv_gflops_per_second(bf16=True)}
        print(
            f"bf16 in hardware (avx512_bf16 / amx_bf16): {'yes' if bf16_hardware else 'NO: bf16 is emulated here'}; "
            f"AVX-512: {'yes' if 'avx512f' in flags else 'no'}"
        )
        print(
            f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; measured 3x3-conv "
            f"rate: fp32 {rates['32-true']:.0f} GFLOP/s, bf16 {rates['bf16-mixed']:.0f} GFLOP/s",
        )
    return rates, bf16_hardware


def report(rows: list[dict[str, Any]], args: argparse.Namespace, cuda: bool) -> None:
    """Print the table (and where a CUDA step synchronised) and write the CSV."""
    device = rows[0]["device"]
    print(f"\nFEGAN training, {args.backbone} to {args.tap}, random weights, {device}, mean step of epoch 3")
    memory = "peak GPU MB | GPU busy | syncs/step" if cuda else "peak RSS MB"
    print(f"| variant | size | batch | images/s | ms/step | operators/step | GFLOP/step | % of bound | {memory} |")
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if cuda else ""))
    for r in rows:
        tail = f"{r['peak_gpu_mb']} | {r['gpu_busy_pct']} % | {r['syncs_per_step']}" if cuda else f"{r['peak_rss_mb']}"
        print(
            f"| {r['variant']} | {r['image_size']}² | {r['batch']} | {r['images_per_s']:.2f} | {r['ms_per_step']} "
            f"| {r['operators_per_step']} | {r['gflop_per_step']} | {r['pct_of_bound']} % | {tail} |"
        )
    for r in rows:
        if r.get("sync_sites"):
            print(f"synchronisations in '{r['variant']}' ({r['image_size']}², batch {r['batch']}): {r['sync_sites']}")
    with args.out.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    """Run every (size, batch, variant) in its own process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--steps", type=int, default=10, help="batches per epoch at the smallest size (>= 5 at others)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: all at the smallest setting")
    parser.add_argument("--backbone", default="vgg19")
    parser.add_argument("--tap", default="relu4_4")
    parser.add_argument("--out", type=Path, default=Path("training_speed.csv"))
    parser.add_argument(
        "--one", nargs=3, metavar=("VARIANT", "SIZE", "BATCH"), help="measure one variant in this process and stop"
    )
    parser.add_argument("--profile", action="store_true", help="with --one: print the operators of one step")
    args = parser.parse_args()
    cuda = args.accelerator == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--accelerator cuda: no CUDA device is visible to torch")
    if args.one:
        variant, size, batch = args.one[0], int(args.one[1]), int(args.one[2])
        row = measure(variant, size, batch, args.steps, args.backbone, args.tap, args.accelerator, args.profile)
        print("ROW " + json.dumps(row))
        return

    rates, bf16_hardware = device_rates(cuda)
    sys.stdout.flush()
    available = [name for name, v in VARIANTS.items() if cuda or not v.get("cuda_only")]
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            full = size == min(args.sizes) and batch == min(args.batches)
            default = CUDA_DEFAULT if cuda else (available if full else SHORT)
            names = [n for n in (args.variants or default) if n in available]
            steps = max(WARM_STEPS + 3, round(args.steps * (min(args.sizes) / size) ** 2))  # ~equal images per row
            for name in names:
                emulated = not cuda and VARIANTS[name]["precision"] != "32-true" and not bf16_hardware
                command = [sys.executable, __file__, "--one", name, str(size), str(batch)]
                command += ["--steps", str(WARM_STEPS + 3 if emulated else steps), "--backbone", args.backbone]
                command += ["--tap", args.tap]
                command += ["--accelerator", args.accelerator]
                result = subprocess.run(command, capture_output=True, text=True, check=False)
                lines = [line for line in result.stdout.splitlines() if line.startswith("ROW ")]
                if result.returncode or not lines:
                    print(result.stdout[-2000:] + result.stderr[-4000:])
                    print(f"variant '{name}' at {size}², batch {batch} failed", flush=True)
                    continue
                row = json.loads(lines[-1][4:])
                rate = rates[row["precision"]]
                row["pct_of_bound"] = round(100 * row["gflop_per_step"] / (row["ms_per_step"] / 1000) / rate)
                rows.append(row)
                print(f"  {name}, {size}², batch {batch}: {row['images_per_s']} img/s", flush=True)
    if not rows:
        raise SystemExit("no variant ran")
    report(rows, args, cuda)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
