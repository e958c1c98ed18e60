"""Which precision a run computes in: ``mixed_precision: auto`` measures, it does not guess.

On a GPU that supports bf16, bf16 autocast. On a CPU, a probe times the same matmul in fp32 and in
bf16 (at the run's thread count, on shapes like a small model's) and picks bf16 only when it is at
least :data:`MIN_SPEEDUP` times faster: true where the CPU has native bf16 matmuls (AMX or
AVX512-BF16), false where bf16 is emulated. ``mixed_precision: no`` keeps fp32, bit for bit
reproducible on one machine; the cpu profile of the study uses it, so its committed results do not
depend on what a machine's probe finds (the smoke profile uses ``auto``). Under bf16 on a CPU a
trained model runs eager attention (:func:`fit_attention`).
"""

from __future__ import annotations

import functools
import os
import time

import torch

MIN_SPEEDUP = 1.5
"""bf16 must beat fp32 by this factor on the probe to be chosen on a CPU."""


@functools.cache
def probe(threads: int, n: int = 512, repeats: int = 5) -> dict[str, float]:
    """FLOP/s of an [n, n] x [n, n] matmul in fp32 and in bf16 on ``threads`` threads (the best of
    ``repeats``), and their ratio ``bf16_speedup``. Cached per thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        flops = {}
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.randn(n, n, dtype=dtype, device="cpu"), torch.randn(n, n, dtype=dtype, device="cpu")
            a @ b  # warm up
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                a @ b
                best = min(best, time.perf_counter() - t0)
            flops[str(dtype).removeprefix("torch.")] = 2 * n**3 / best
    finally:
        torch.set_num_threads(before)
    return flops | {"bf16_speedup": flops["bfloat16"] / flops["float32"]}


def fit_attention(model, mixed_precision: str, device) -> str:
    """The attention kernel for a model trained in ``mixed_precision`` on ``device``; returns its name.

    Under bf16 autocast on a CPU, eager attention (bf16 ``bmm`` + softmax): PyTorch's fused CPU
    attention (SDPA) has a slow bf16 backward, measured 8x its fp32 time on the smoke model, which
    ate the whole gain of bf16 matmuls (`benchmarks/bench_training.py` runs both). Elsewhere the
    model keeps what it was loaded with, so fp32 runs stay bit for bit as they were.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a LoRA-wrapped model
    if mixed_precision == "bf16" and torch.device(device).type == "cpu":
        base.set_attn_implementation("eager")
    return base.config._attn_implementation


def check(mixed_precision: str) -> None:
    """A config's ``mixed_precision``: one of ``auto``, ``no``, ``bf16``."""
    if mixed_precision not in ("auto", "no", "bf16"):
        raise ValueError(f"mixed_precision: expected 'auto', 'no' or 'bf16', got {mixed_precision!r}")


def autocast(mixed_precision: str, device="cpu"):
    """The forward passes' context: bf16 autocast for ``"bf16"`` (resolved), none for ``"no"``."""
    return torch.autocast(torch.device(device).type, torch.bfloat16, enabled=mixed_precision == "bf16")


AUTO_ENV = "BFPO_AUTO_PRECISION"
"""Set to ``no`` or ``bf16``, it decides ``auto`` instead of the probe (the tests set ``no``)."""


def resolve(mixed_precision: str, threads: int | None = None, device=None) -> str:
    """``"bf16"`` or ``"no"`` for a config's ``mixed_precision`` (``"auto"``, ``"no"``, ``"bf16"``) on
    ``device`` (None: CUDA where there is one, else the CPU)."""
    if mixed_precision != "auto":
        return mixed_precision
    if os.environ.get(AUTO_ENV) in ("no", "bf16"):
        return os.environ[AUTO_ENV]
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if probe(threads or torch.get_num_threads())["bf16_speedup"] >= MIN_SPEEDUP else "no"
