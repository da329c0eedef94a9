"""Time FEGAN's training steps resumed from a checkpoint, with and without subnormal floats flushed to zero.

    python benchmarks/subnormals.py --checkpoint epoch_time/magnetic_tile/fegan/.../model.ckpt \
        --root datasets --category magnetic_tile [--steps 6]

Late in 0.3's 15-epoch run an epoch took 3.6× the first (BENCHMARKS.md, "Training speed"). This script resumes
the checkpoint's fit (weights, Adam states, loader position: Lightning's own restore) for ``--steps`` steps in a
fresh process per setting and prints the mean step time of each, on this CPU:

- ``as is``: subnormal operands as the checkpoint holds them (x86 takes a microcode assist on each);
- ``FTZ main thread``: ``torch.set_flush_denormal(True)`` once the intra-op threads exist, which is when a
  training run could call it: it reaches the calling thread only (the check below shows it);
- ``FTZ all threads``: the same before torch starts its thread pool, so every worker inherits it;
- ``flush_denormal=True``: the model's own option (subnormal weights and Adam states set to zero after each
  step on CPU), the fix.

It also prints where the checkpoint's subnormal values sit (per tensor) and the share of an elementwise
product's subnormal results that each thread flushes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

TINY = torch.finfo(torch.float32).tiny
SETTINGS = ("as is", "FTZ main thread", "FTZ all threads", "flush_denormal=True")


def census(checkpoint: Path, top: int = 8) -> None:
    """Print the checkpoint's tensors holding the most subnormal values (weights and Adam states)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    counts: list[tuple[int, str]] = []
    for name, tensor in state["state_dict"].items():
        if tensor.dtype == torch.float32:
            counts.append((int(((tensor != 0) & (tensor.abs() < TINY)).sum()), f"weight {name}"))
    for index, optimizer in enumerate(state.get("optimizer_states", [])):
        for key, values in optimizer["state"].items():
            for slot in ("exp_avg", "exp_avg_sq"):
                tensor = values.get(slot)
                if tensor is not None:
                    counts.append(
                        (int(((tensor != 0) & (tensor.abs() < TINY)).sum()), f"optimizer {index} {slot} {key}")
                    )
    counts.sort(reverse=True)
    total = sum(count for count, _ in counts)
    print(f"subnormal float32 values in the checkpoint: {total}")
    for count, name in counts[:top]:
        if count:
            print(f"  {count:8d}  {name}")


def thread_reach() -> float:
    """Share of subnormal products flushed when FTZ is set after the thread pool exists (1.0: every thread)."""
    x = torch.full((4096, 4096), 1e-39)
    (x * 0.5).sum()  # starts the intra-op threads
    torch.set_flush_denormal(True)
    share = float(((x * 0.5) == 0).float().mean())
    torch.set_flush_denormal(False)
    return share


def run(setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """Resume the fit for ``--steps`` steps under ``setting``; return the mean step time (first step excluded)."""
    if setting == "FTZ all threads":
        torch.set_flush_denormal(True)  # before any parallel op: the workers inherit it
    from anomalib.data import MVTecAD  # noqa: PLC0415
    from lightning.pytorch import Callback, Trainer  # noqa: PLC0415

    from fegan_anomalib import Fegan  # noqa: PLC0415

    torch.mm(torch.rand(256, 256), torch.rand(256, 256))  # the thread pool exists from here on
    if setting == "FTZ main thread":
        torch.set_flush_denormal(True)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    step = int(state["global_step"] // 2)  # Lightning counts both optimisers' steps
    overrides = {"flush_denormal": setting == "flush_denormal=True"}
    model = Fegan.load_from_checkpoint(args.checkpoint, map_location="cpu", **overrides)

    class Timer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, *_: Any) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, *_: Any) -> None:
            self.times.append(time.perf_counter() - self.start)

    timer = Timer()
    datamodule = MVTecAD(root=args.root, category=args.category, train_batch_size=8, eval_batch_size=16, num_workers=0)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=2 * (step + args.steps),
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=tempfile.mkdtemp(),  # the run's curves and images, not in the working directory
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=args.checkpoint)
    times = timer.times[1:]
    return {"setting": setting, "steps": len(times), "seconds_per_step": round(sum(times) / len(times), 2)}


def main() -> None:
    """Census, thread reach, then each setting in its own process."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        print("ROW " + json.dumps(run(args.one, args)), flush=True)
        return
    census(args.checkpoint)
    print(f"torch.set_flush_denormal(True) once the threads exist flushes {thread_reach():.0%} of subnormal products")
    rows = []
    for setting in args.settings:
        command = [sys.executable, __file__, "--one", setting, "--checkpoint", str(args.checkpoint)]
        command += ["--root", args.root, "--category", args.category, "--steps", str(args.steps)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in result.stdout.splitlines() if line.startswith("ROW ")]
        if result.returncode or not lines:
            print(result.stdout[-1500:] + result.stderr[-3000:])
            continue
        rows.append(json.loads(lines[-1][4:]))
        print(f"  {setting}: {rows[-1]['seconds_per_step']} s/step", flush=True)
    print("\n| setting | steps timed | s / step |\n|---|---|---|")
    for row in rows:
        print(f"| {row['setting']} | {row['steps']} | {row['seconds_per_step']} |")


if __name__ == "__main__":
    main()
