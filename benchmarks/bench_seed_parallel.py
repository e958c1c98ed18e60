"""Many tiny trainings on one device: several processes, or one process batched across seeds?

    python benchmarks/bench_seed_parallel.py [--seeds 4] [--steps 30] [--processes 2] [--device cpu]

The study trains hundreds of ~1M-parameter models that differ only by seed. Two ways to share one device:

- processes: ``--processes`` workers, one thread each, every worker training its seeds one after another
  (how ``bfpo.jobs`` runs the study, and the gpu profile's 16 workers);
- batched: one process stacks the seeds' weights (``torch.func.stack_module_state``) and trains all of them
  at once with ``vmap`` over ``functional_call``: one kernel launch serves every seed.

Both against the naive way, the seeds one after another in one process, side by side in one run, on the
same steps (a causal-LM loss on fixed random batches, AdamW). On a CPU this is a proxy for a GPU: there a
tiny model is launch-bound and batching removes launches; on a CPU the cores are the limit. Writes
``benchmarks/results/seed_parallel_<device>.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _model(seed: int, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=False,  # vmap over functional_call: no shared tensors between the stacked models
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config).to(device)


def _batches(steps: int, device: str, batch: int = 16, length: int = 64):
    g = torch.Generator(device="cpu").manual_seed(0)
    return [torch.randint(0, 1024, (batch, length), generator=g, device="cpu").to(device) for _ in range(steps)]


def train_one(seed: int, steps: int, device: str, threads: int | None = None) -> float:
    """One seed's training, the naive way; returns its final loss."""
    if threads:
        torch.set_num_threads(threads)
    model = _model(seed, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for ids in _batches(steps, device):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def train_batched(seeds: list[int], steps: int, device: str) -> list[float]:
    """Every seed at once: stacked weights [K, ...], one vmapped forward and backward per step."""
    from torch.func import functional_call, stack_module_state, vmap

    models = [_model(s, device) for s in seeds]
    params, buffers = stack_module_state(models)
    base = _model(seeds[0], device).to("meta")
    opt = torch.optim.AdamW(params.values(), lr=1e-3)

    def loss_of(p, b, ids):
        return functional_call(base, (p, b), kwargs={"input_ids": ids, "labels": ids}).loss

    batched = vmap(loss_of, in_dims=(0, 0, None))
    for ids in _batches(steps, device):
        losses = batched(params, buffers, ids)  # [K]
        losses.sum().backward()  # the seeds' losses are independent: the sum's gradient is each one's own
        opt.step()
        opt.zero_grad(set_to_none=True)
    return [float(x) for x in losses]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/bench_seed_parallel.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds))
    threads = args.processes if args.device == "cpu" else None  # the naive and batched ways get every core
    torch.set_num_threads(threads or torch.get_num_threads())
    results = {"device": args.device, "seeds": args.seeds, "steps": args.steps, "processes": args.processes}

    t0 = time.perf_counter()
    naive = [train_one(s, args.steps, args.device) for s in seeds]
    _sync(args.device)
    results["naive_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    n = len(seeds)
    with concurrent.futures.ProcessPoolExecutor(args.processes, mp_context=ctx) as pool:
        parallel = list(pool.map(train_one, seeds, [args.steps] * n, [args.device] * n, [1] * n))
    results["processes_s"] = time.perf_counter() - t0

    try:
        t0 = time.perf_counter()
        batched = train_batched(seeds, args.steps, args.device)
        _sync(args.device)
        results["batched_s"] = time.perf_counter() - t0
        results["batched_matches_naive"] = max(abs(a - b) for a, b in zip(batched, naive, strict=True))
    except Exception as e:  # noqa: BLE001 - a model vmap cannot trace is a result too
        results["batched_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    results["final_loss_gap_processes"] = max(abs(a - b) for a, b in zip(parallel, naive, strict=True))
    for key in ("processes_s", "batched_s"):
        if key in results:
            results[key.replace("_s", "_speedup")] = results["naive_s"] / results[key]
    out = ROOT / "benchmarks" / "results" / f"seed_parallel_{args.device.replace(':', '_')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
