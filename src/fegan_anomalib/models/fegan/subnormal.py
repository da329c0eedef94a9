"""Tiny weights and subnormal Adam moments flushed to zero on CPU, where they make training steps 4x slower.

Why FEGAN needs this: the encoder starts as a copy of the FEN, and some of its input channels never fire on a
product's images (dead ReLUs), so the weights reading them get no gradient from the losses. Adam's weight decay
(L2 added to the gradient, the paper's "weight decay 1e-5") is then their whole gradient, and Adam normalises it:
those weights shrink geometrically towards zero, passing 1e-20 and then the subnormal range (below 1.2e-38), and
their ``exp_avg`` with them. In the backward pass such a weight times a normal gradient is a subnormal product,
and x86 CPUs take a microcode assist on every operation with a subnormal operand or result. Measured on
magnetic_tile (128², batch 8, stand-in VGG16-BN; ``benchmarks/epoch_time.py``, ``benchmarks/subnormals.py``): no
subnormal value after epoch 2; after epoch 7, 1,283 subnormal weights, 58,294 under 1e-20 and 44,146 subnormal
``exp_avg`` values, and an epoch took 3-6x the first. One step resumed from that checkpoint: 6.74 s as is, 6.44 s
with ``torch.set_flush_denormal(True)`` (it sets the calling thread's mode only; the intra-op threads, started
before, keep theirs: half the products of 2 threads stay subnormal), 6.58 s with subnormal weights and moments
zeroed, 1.70 s with flush-to-zero in every thread (set before the thread pool starts: process-wide state a
library must not set), and **1.69 s** with weights under 1e-20 and subnormal moments zeroed after each step.

So after each optimiser step, weights under ``WEIGHT_FLOOR`` (1e-20) and subnormal Adam moments are set to zero:
the decay would take them there anyway, and a weight under 1e-20 beside weights of order 1e-2 changes no
activation by more than float32's resolution. No process-wide floating-point state changes. GPUs compute with
subnormals at full speed, so this runs on CPU only (``Fegan(flush_denormal=...)``).
"""

from __future__ import annotations

import torch

TINY = torch.finfo(torch.float32).tiny
WEIGHT_FLOOR = 1e-20  # a weight's contribution under float32's resolution of activations of order 1e-2 and up


@torch.no_grad()
def flush_subnormal_(optimizer: torch.optim.Optimizer) -> None:
    """Set weights under WEIGHT_FLOOR and subnormal Adam moments to zero, in place."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            for tensor, floor in (
                (parameter, WEIGHT_FLOOR),
                (state.get("exp_avg"), TINY),
                (state.get("exp_avg_sq"), TINY),
            ):
                if tensor is not None and tensor.dtype == torch.float32:
                    tensor.masked_fill_(tensor.abs() < floor, 0.0)
