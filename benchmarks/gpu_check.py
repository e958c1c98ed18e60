"""The GPU check: every path of the package on one CUDA device at smoke size, in a few minutes, offline.

    make gpu-check                                   # or: PYTHONPATH=. python benchmarks/gpu_check.py
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --size toy   # the same logic on the CPU (the test)

It needs the package's source (not an install: run from the checkout with PYTHONPATH=.) and, beside a GPU
image's torch, transformers and accelerate, the few wheels of benchmarks/gpu_wheels.txt (``make gpu-wheels``
fetches them where there is network; ``make gpu-check`` installs them from wheels/gpu without network).

What runs on the device, each as the package runs it (bfpo.train, bfpo.safe_rlhf, bfpo.ppo, bfpo.models,
bfpo.evaluation), on a SafeHelp world built here with a ~1M-parameter Llama:

    sft          SFT                                   fp32
    bfpo_bf16    BFPO, bf16 autocast, SDPA attention    bf16
    dpo          DPO                                   fp32
    reward, cost the two score models of Safe RLHF       fp32
    ppo          20 PPO-Lagrangian iterations           fp32
    sampling     batched greedy sampling                fp32
    mc           one multiple-choice task (ETHICS virtue, log-likelihoods)

What it checks, into ``<out>/report.json`` and a one-screen summary:

- devices: where each run says it ran (its summary) is the device asked for;
- losses: the same steps, same seed and data, run again on the CPU in fp32 (a second process): every
  logged loss within :data:`TOLERANCE` (fp32 runs tightly, the bf16 run loosely). PPO samples its
  rollouts from the device's own random stream, so its run is not step-for-step comparable: its pure
  losses (GAE, shaped rewards, clipped actor and critic losses) are compared on one fixed batch instead,
  and the run itself must stay finite. Sampling compares greedy answers; the task its score;
- throughput: tokens/s, and MFU against the device's bf16 matmul peak measured here (:func:`peak_flops`);
- peak memory per item (CUDA only).

Exit 0 when every check passes, 1 when one fails; without CUDA (and no --device), one line and exit 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = "no CUDA device: nothing to check"

TOLERANCE = {"no": {"rel": 1e-3, "abs": 1e-4}, "bf16": {"rel": 0.05, "abs": 0.05}}
"""Largest difference of a logged loss from the CPU fp32 run of the same steps: |a - b| <= abs + rel |b|.
fp32 on another device differs by reduction order only; bf16 autocast keeps ~3 significant digits."""


@dataclass(frozen=True)
class Sizes:
    sft_steps: int
    pref_steps: int
    score_steps: int
    ppo_iterations: int
    sample_prompts: int
    new_tokens: int
    mc_limit: int
    hidden: int
    layers: int
    world_pairs: int


SIZES = {
    "smoke": Sizes(60, 30, 40, 20, 128, 32, 64, 128, 4, 1200),  # the smoke profile's model; minutes on one GPU
    "toy": Sizes(4, 3, 3, 2, 8, 6, 4, 32, 2, 160),  # the CPU test of this script's logic
}


def peak_flops(device: str, n: int | None = None, repeats: int = 10) -> float:
    """Measured bf16 matmul FLOP/s of ``device``: the best of ``repeats`` [n, n] x [n, n] products."""
    import torch

    n = n or (8192 if device.startswith("cuda") else 512)
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def build_world(root: Path, sizes: Sizes) -> dict[str, str]:
    """The SafeHelp world and a tiny Llama, on disk: paths of init, sft, pairs, buffer, prompts."""
    from bfpo import data, models
    from bfpo import toyworld as tw

    world = tw.WorldConfig(seed=0)
    sft, pairs = tw.sft_data(sizes.world_pairs, world), tw.preference_pairs(sizes.world_pairs, world)
    paths = {name: str(root / name) for name in ("init", "sft", "pairs", "buffer")}
    for name, ds in (("sft", sft), ("pairs", pairs), ("buffer", tw.buffer_pairs(sizes.world_pairs // 4))):
        data.save(ds, paths[name])
    texts = [models.format_prompt(p) + " " + r for p, r in zip(sft["prompt"], sft["response"], strict=True)]
    tokenizer = models.train_tokenizer(texts + list(pairs["chosen"]) + list(pairs["rejected"]), vocab_size=1024)
    intermediate = 2 * sizes.hidden
    model = models.tiny_llama(tokenizer, sizes.hidden, sizes.layers, 4, intermediate, max_position_embeddings=256)
    models.save(model, tokenizer, paths["init"])
    return paths


class Memory:
    """Peak CUDA memory of one item (None elsewhere)."""

    def __init__(self, device: str):
        import torch

        self.cuda = device.startswith("cuda") and torch.cuda.is_available()
        self.peak_mb = None

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20


def _train_item(paths, out: Path, device: str, mixed_precision: str, **keys) -> dict:
    from bfpo import runs, train

    cfg = train.TrainConfig(
        **keys,
        output_dir=str(out),
        max_length=96,
        log_every=1,
        seed=0,
        progress=False,
        device="cuda" if device.startswith("cuda") else device,
        mixed_precision=mixed_precision,
    )
    with Memory(device) as mem:
        summary = train.train(cfg)
    return {
        "losses": [m["loss"] for m in runs.read_metrics(out)],
        "device": summary["device"],
        "precision": summary["mixed_precision"],
        "attention": summary["attention"],
        "seconds": summary["seconds"],
        "tokens": summary["tokens"]["train"],
        "flops": summary["flops"]["train"],
        "peak_mb": mem.peak_mb,
    }


def _score_item(paths, out: Path, device: str, kind: str, sizes: Sizes) -> dict:
    from bfpo import runs, safe_rlhf

    cfg = safe_rlhf.ScoreConfig(
        model=paths["sft_model"],
        output_dir=str(out),
        train_data=paths["pairs"],
        kind=kind,
        learning_rate=1e-3,
        max_steps=sizes.score_steps,
        max_length=96,
        progress=False,
        device=device,
    )
    t0 = time.perf_counter()
    with Memory(device) as mem:
        summary = safe_rlhf.train_score_model(cfg)
    return {
        "losses": [m["loss"] for m in runs.read_metrics(out)],
        "device": summary["device"],
        "precision": summary["mixed_precision"],
        "seconds": time.perf_counter() - t0,
        "flops": summary["flops"]["total"],
        "peak_mb": mem.peak_mb,
        "model": str(out / "model"),
    }


def _ppo_losses_on_a_fixed_batch(device: str) -> list[float]:
    """GAE, shaped rewards and the clipped actor and critic losses of one fixed random batch, on ``device``."""
    import torch

    from bfpo import ppo

    g = torch.Generator(device="cpu").manual_seed(0)
    B, T = 8, 12
    cpu = {k: torch.randn(B, T, generator=g, device="cpu") for k in ("logps", "ref", "old", "values", "new_values")}
    cpu["mask"] = (torch.rand(B, T, generator=g, device="cpu") > 0.2).float()
    cpu["score"] = torch.randn(B, generator=g, device="cpu")
    x = {k: v.to(device) for k, v in cpu.items()}
    rewards = ppo.shaped_rewards(x["score"], x["logps"], x["ref"], x["mask"], 0.01, sign=-1.0)
    adv, ret = ppo.gae(rewards, x["values"], x["mask"], 1.0, 0.95)
    actor = ppo.ppo_actor_loss(x["logps"], x["old"], adv, x["mask"], 0.2)
    critic = ppo.ppo_critic_loss(x["new_values"], x["values"], ret, x["mask"], 5.0)
    return [float(adv.sum()), float(ret.sum()), float(actor), float(critic)]


def _ppo_item(paths, out: Path, device: str, sizes: Sizes) -> dict:
    from bfpo import ppo, runs

    cfg = ppo.PPOConfig(
        actor=paths["sft_model"],
        reward_model=paths["reward_model"],
        cost_model=paths["cost_model"],
        output_dir=str(out),
        prompts=paths["pairs"],
        ptx_data=paths["sft"],
        iterations=sizes.ppo_iterations,
        rollout_batch_size=16,
        max_new_tokens=sizes.new_tokens,
        start_cost_prompts=32,
        cost_threshold_margin=1.0,
        actor_lr=1e-4,
        critic_lr=1e-4,
        mixed_precision="no",
        progress=False,
        device=device,
    )
    with Memory(device) as mem:
        summary = ppo.ppo_lagrangian(cfg)
    metrics = runs.read_metrics(out)
    keys = ("actor_loss", "reward_critic_loss", "cost_critic_loss", "reward", "cost", "kl")
    return {
        "losses": _ppo_losses_on_a_fixed_batch(device),
        "finite": all(math.isfinite(m[k]) for m in metrics for k in keys),
        "iterations": len(metrics),
        "device": summary["device"],
        "precision": summary["mixed_precision"],
        "seconds": sum(m["seconds"] for m in metrics),
        "flops": summary["flops"]["total"],
        "tokens": sum(m["response_length"] * cfg.rollout_batch_size for m in metrics),
        "peak_mb": mem.peak_mb,
    }


def _sampling_item(paths, device: str, sizes: Sizes) -> dict:
    import torch

    from bfpo import devices, models
    from bfpo import toyworld as tw

    model = models.load_model(paths["sft_model"], device=devices.resolve(device))
    tok = models.load_tokenizer(paths["sft_model"])
    prompts = list(tw.eval_prompts("test")["prompt"])[: sizes.sample_prompts]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with Memory(device) as mem:
        sync()
        t0 = time.perf_counter()
        answers = models.generate(model, tok, prompts, 1, max_new_tokens=sizes.new_tokens, temperature=0.0)
        sync()
        seconds = time.perf_counter() - t0
    texts = [a[0] for a in answers]
    tokens = sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)
    n = models.count_parameters(model)[0]
    return {
        "answers": texts,
        "device": str(next(model.parameters()).device),
        "precision": "no",
        "seconds": seconds,
        "tokens": tokens,
        "flops": 2 * n * tokens,
        "peak_mb": mem.peak_mb,
    }


def _mc_item(paths, out: Path, device: str, sizes: Sizes) -> dict:
    from bfpo.evaluation import run as eval_run

    t0 = time.perf_counter()
    with Memory(device) as mem:
        rows = eval_run.evaluate(
            paths["sft_model"],
            ["ethics_virtue"],
            limit=sizes.mc_limit,
            cache_dir=out,
            progress=False,
            device=device,
        )
    scores = {f"{r['task']}/{k}": v for r in rows for k, v in r["metrics"].items() if isinstance(v, int | float)}
    return {
        "scores": scores,
        "device": device,
        "precision": "no",
        "seconds": time.perf_counter() - t0,
        "peak_mb": mem.peak_mb,
    }


def run_items(device: str, size: str, out: Path) -> dict:
    """Every item on ``device`` (BFPO in bf16 there, the rest in fp32; all fp32 when ``reference``)."""
    import torch

    from bfpo import devices

    reference = device == "cpu-reference"
    device = "cpu" if reference else str(devices.resolve(device))
    torch.manual_seed(0)
    sizes = SIZES[size]
    out.mkdir(parents=True, exist_ok=True)
    paths = build_world(out / "world", sizes)
    items = {}
    pair_keys = dict(train_data=paths["pairs"], learning_rate=5e-4, per_device_batch_size=8, beta=0.1)
    items["sft"] = _train_item(
        paths,
        out / "sft",
        device,
        "no",
        model=paths["init"],
        train_data=paths["sft"],
        mode="sft",
        learning_rate=3e-3,
        per_device_batch_size=16,
        max_steps=sizes.sft_steps,
    )
    paths["sft_model"] = str(out / "sft" / "model")
    bfpo_keys = dict(loss="bfpo", buffer_data=paths["buffer"], buffer_ratio=0.25, alpha=0.5, b1=3.0)
    items["bfpo_bf16"] = _train_item(
        paths,
        out / "bfpo",
        device,
        "no" if reference else "bf16",
        model=paths["sft_model"],
        max_steps=sizes.pref_steps,
        **pair_keys,
        **bfpo_keys,
    )
    items["dpo"] = _train_item(
        paths, out / "dpo", device, "no", model=paths["sft_model"], loss="dpo", max_steps=sizes.pref_steps, **pair_keys
    )
    for kind in ("reward", "cost"):
        items[kind] = _score_item(paths, out / kind, device, kind, sizes)
        paths[f"{kind}_model"] = items[kind].pop("model")
    items["ppo"] = _ppo_item(paths, out / "ppo", device, sizes)
    items["sampling"] = _sampling_item(paths, device, sizes)
    items["mc"] = _mc_item(paths, out / "mc_cache", device, sizes)
    peak = peak_flops(device) if not reference else None
    return {"device": device, "size": size, "items": items, "peak_bf16_flops": peak}


def _close(a: float, b: float, tol: dict) -> bool:
    return abs(a - b) <= tol["abs"] + tol["rel"] * abs(b)


def compare(run: dict, ref: dict) -> dict:
    """Per item: the checks (device, losses against the CPU fp32 run) and the throughput numbers."""
    asked = run["device"]
    rows = {}
    for name, item in run["items"].items():
        base = ref["items"][name]
        kind = asked.split(":")[0]
        row = {
            "device": item["device"],
            "device_ok": item["device"].split(":")[0] == kind,
            "precision": item["precision"],
        }
        tol = TOLERANCE["bf16" if item["precision"] == "bf16" else "no"]
        if "losses" in item:
            pairs = list(zip(item["losses"], base["losses"], strict=True))
            row["max_abs_diff"] = max(abs(a - b) for a, b in pairs)
            row["losses_ok"] = all(_close(a, b, tol) for a, b in pairs)
            row["tolerance"] = tol
        if name == "ppo":
            row["losses_ok"] = row["losses_ok"] and item["finite"] and item["iterations"] == base["iterations"]
            row["compared"] = "pure losses on one fixed batch; the run sampled from the device's random stream"
        if name == "sampling":
            same = sum(a == b for a, b in zip(item["answers"], base["answers"], strict=True)) / len(item["answers"])
            row["same_greedy_answers"] = same
            row["losses_ok"] = same >= 0.9  # a near-tie of two tokens may flip under another reduction order
        if name == "mc":
            row["scores"] = item["scores"]
            row["losses_ok"] = all(
                _close(v, base["scores"][k], {"rel": 0.0, "abs": 0.02}) for k, v in item["scores"].items()
            )
        seconds = item.get("seconds") or float("nan")
        if item.get("tokens"):
            row["tokens_per_s"] = item["tokens"] / seconds
        if item.get("flops") and run["peak_bf16_flops"]:
            row["mfu"] = item["flops"] / seconds / run["peak_bf16_flops"]
        row["seconds"], row["peak_mb"] = seconds, item.get("peak_mb")
        row["ok"] = row["device_ok"] and row.get("losses_ok", True)
        rows[name] = row
    return rows


def summary_lines(report: dict) -> list[str]:
    """The one-screen summary."""
    lines = [
        f"GPU check on {report['device']} ({report['device_name']}), size {report['size']}: "
        f"{'PASS' if report['ok'] else 'FAIL'} in {report['seconds']:.0f} s; bf16 matmul peak "
        f"{report['peak_bf16_flops'] / 1e12:.1f} TFLOP/s (measured)",
        f"{'item':10} {'device':8} {'prec':5} {'vs CPU fp32':>14} {'tokens/s':>10} {'MFU':>8} {'peak MB':>8} "
        f"{'s':>6}  ok",
    ]
    for name, r in report["items"].items():
        diff = r.get("max_abs_diff")
        vs = (
            f"{diff:.2e}"
            if diff is not None
            else (f"{r['same_greedy_answers']:.0%} same" if "same_greedy_answers" in r else "score")
        )
        tps = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-"
        mfu = f"{r['mfu']:.2%}" if "mfu" in r else "-"
        mem = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else "-"
        lines.append(
            f"{name:10} {r['device']:8} {r['precision']:5} {vs:>14} {tps:>10} {mfu:>8} {mem:>8} {r['seconds']:6.1f}  "
            f"{'yes' if r['ok'] else 'NO'}"
        )
    lines.append(f"tolerances (|device - CPU fp32| <= abs + rel |CPU|): {TOLERANCE}; report: {report['path']}")
    return lines


def _worker(device: str, size: str, out: Path) -> dict:
    """``run_items`` in a process of its own (accelerate keeps one device per process)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(TQDM_DISABLE="1", BFPO_AUTO_PRECISION="")
    if device == "cpu-reference":
        env["ACCELERATE_USE_CPU"] = "1"
    cmd = [sys.executable, __file__, "--worker", device, "--size", size, "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"gpu check: the {device} run failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "items.json").read_text())


def check(device: str, size: str, out: Path) -> dict:
    """Run the items on ``device`` and on the CPU in fp32, compare, and write ``out/report.json``."""
    import torch

    t0 = time.perf_counter()
    run = _worker(device, size, out / device.replace(":", "_"))
    ref = _worker("cpu-reference", size, out / "cpu_reference")
    items = compare(run, ref)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    report = {
        "device": device,
        "device_name": name,
        "size": size,
        "sizes": asdict(SIZES[size]),
        "ok": all(r["ok"] for r in items.values()),
        "peak_bf16_flops": run["peak_bf16_flops"],
        "seconds": time.perf_counter() - t0,
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "items": items,
        "path": str(out / "report.json"),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/gpu_check.py",
        description="Every path of bfpo on one CUDA device at smoke size, checked against the CPU in fp32 (minutes).",
    )
    parser.add_argument("--device", help="cuda, cuda:N, or cpu (the logic alone); default: cuda where there is one")
    parser.add_argument("--size", choices=list(SIZES), default="smoke", help="smoke (default) or toy (the CPU test)")
    parser.add_argument("--out", help="report folder (default: runs/gpu_check)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from bfpo.errors import run_cli

    if args.worker:  # one device's items, in this process
        out = Path(args.out)
        (out / "items.json").write_text(json.dumps(run_items(args.worker, args.size, out)) + "\n")
        return 0
    if args.device is None and not torch.cuda.is_available():
        print(NO_CUDA)
        return 0

    def work():
        from bfpo import devices

        device = str(devices.resolve(args.device or "cuda", "--device"))
        out = Path(args.out or ROOT / "runs" / "gpu_check")
        report = check(device, args.size, out)
        print("\n".join(summary_lines(report)))
        if not report["ok"]:
            raise SystemExit(1)

    return run_cli("gpu_check", work, False)


if __name__ == "__main__":
    sys.exit(main())
