"""Preference-training throughput, side by side in one run: bfpo.train, TRL's DPOTrainer (default and
with precomputed reference log-probs) and a plain PyTorch loop, with each one's MFU.

    python benchmarks/bench_training.py                      # 1.3M and 5.8M parameters, 30 steps
    python benchmarks/bench_training.py --sizes 5.8M --steps 40 --bf16
    python benchmarks/bench_training.py --sizes smollm2-135m --workers trl_bf16 bfpo_bf16 trl_precompute bfpo \
        --steps 16 --warmup 3 --repeats 1 --out benchmarks/results/training_smollm2.json   # the real chat model

Every trainer gets the same tiny Llama, tokenizer, SafeHelp pairs, sigmoid-DPO loss (beta 0.1),
learning rate, clipping (1.0), batches (the same pairs in the same order: TRL reads them
sequentially), max length, one process and thread count. Each runs in its own subprocess,
``--repeats`` times in rounds (median and range reported). The first ``--warmup`` steps are not
timed. tokens/s counts the real (non-padding) tokens of the chosen and rejected sequences of the
timed steps, the same for all. Needs ``pip install trl==1.16.0`` (the ``bench`` extra).

MFU = model FLOPs per second / the machine's matmul peak, measured here at the same thread count
and dtype (the best of several large square matmuls). Model FLOPs of a training step, per
sequence of n tokens: (4 N + 2 N_t) n (N the parameters, the LM head counted once; N_t those trained:
N, or the down_proj weights on SmolLM2, whose frozen weights need no weight gradient) + 6 L d n^2 (causal
attention: the scores and the weighted sum, forward and backward). The reference pass is not
counted, so the trainers that recompute it each step (TRL's default) do work that MFU leaves out.
Results go to ``benchmarks/results/training.json`` with the CPU model: absolute numbers differ
across machines, the ratios much less.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # tiny Llamas: hidden, layers, heads, intermediate (vocabulary 1024, tied embeddings)
    "1.3M": (128, 6, 4, 352),
    "5.8M": (256, 8, 8, 560),
    "smollm2-135m": None,  # the real chat model (make real-model): PKU-SafeRLHF pairs, down_proj only
}
REAL = "smollm2-135m"
"""SmolLM2-135M-Instruct on the real-model experiment's PKU preference pairs, every trainer training only the
MLP down_proj weights (26.5M of 134.5M parameters, the paper's selective tuning), bfpo.train with the BFPO loss
(beta 0.01; its cost is DPO's), TRL with sigmoid DPO; prompts through the model's chat template."""


def _real(root: Path) -> bool:
    return (root / "real").exists()


def machine(threads: int) -> dict:
    """The CPU, as /proc/cpuinfo names it, and what matters for the peak."""
    import torch

    info = {"cpu": platform.processor() or platform.machine(), "threads": threads, "torch": torch.__version__}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
        info["bf16_matmul"] = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    except (OSError, StopIteration):
        pass
    return info


def matmul_peaks(threads: int) -> dict[str, float]:
    """FLOP/s of the best of several 2048 x 2048 matmuls, in fp32 and in bf16 (bfpo.precision's probe)."""
    from bfpo import precision

    found = precision.probe(threads, n=2048)
    return {"float32": found["float32"], "bfloat16": found["bfloat16"]}


def prepare(root: Path, n_pairs: int, size: str) -> None:
    from bfpo import data, models
    from bfpo import toyworld as tw

    if size == REAL:
        from bfpo import real_data, real_model

        pairs = real_data.part(real_data.pku_pairs(), "preference").remove_columns("split")
        data.save(pairs.select(range(min(n_pairs, len(pairs)))), root / "pairs")
        (root / "init").symlink_to(real_model.resolve(real_model.NAME))
        (root / "real").write_text(REAL)
        return
    pairs = tw.preference_pairs(n_pairs, tw.WorldConfig(seed=0))
    data.save(pairs, root / "pairs")
    texts = [models.format_prompt(p) + " " + c for p, c in zip(pairs["prompt"], pairs["chosen"], strict=True)]
    tokenizer = models.train_tokenizer(texts + list(pairs["rejected"]), vocab_size=1024)
    hidden, layers, heads, inter = SIZES[size]
    model = models.tiny_llama(tokenizer, hidden, layers, heads, inter, max_position_embeddings=512)
    models.save(model, tokenizer, root / "init")


def _config(root: Path, args, **overrides):
    from bfpo import train

    values = dict(
        model=str(root / "init"),
        output_dir=str(root / "bfpo"),
        train_data=str(root / "pairs"),
        loss="dpo",
        beta=0.1,
        learning_rate=args.lr,
        per_device_batch_size=args.batch_size,
        max_steps=args.steps,
        max_length=args.max_length,
        max_prompt_length=args.max_length // 2,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        max_grad_norm=1.0,
        mixed_precision="no",
        progress=False,
        num_threads=args.threads,
    )
    if _real(root):
        values |= {"trainable": ["down_proj"], "loss": "bfpo", "beta": 0.01}
    return train.TrainConfig(**(values | overrides))


def _items(root: Path, args):
    """The tokenized pairs and, per step, the ids of its batch (bfpo's schedule: every trainer's)."""
    from bfpo import models, train

    cfg = _config(root, args)
    items, _ = train.tokenize(
        train.load_examples(cfg.train_data, "preference", "pairs"), models.load_tokenizer(cfg.model), cfg, "preference"
    )
    schedule = train.StepSchedule(len(items), 0, args.batch_size, 0.0, cfg.seed)
    return items, [schedule.ids(s) for s in range(args.steps)]


def run_bfpo(root: Path, args, name: str = "bfpo", **keys) -> list[float]:
    """bfpo.train with the TrainConfig ``keys`` of a variant (bf16, padded, fused AdamW)."""
    import shutil

    from bfpo import train

    shutil.rmtree(root / name, ignore_errors=True)  # a repeat trains again (a finished run would be reused)
    train.train(_config(root, args, output_dir=str(root / name), **keys))  # its reference cache goes with it
    return [m["seconds"] for m in train.read_metrics(root / name)]


def run_plain(root: Path, args, bf16: bool = False) -> list[float]:
    """The naive way, written out: precomputed reference log-probs, then per step one padded forward
    of chosen and rejected, log-softmax, the DPO loss, backward, AdamW (``bf16``: the forward passes
    under bf16 autocast, as a user would add it)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    from bfpo import models

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    items, steps = _items(root, args)
    pad = models.load_tokenizer(root / "init").pad_token_id
    model = models.load_model(root / "init")
    if _real(root):
        models.select_trainable(model, ["down_proj"])

    def logps(batch):
        seqs = [(it["prompt"], it["responses"][k]) for k in (0, 1) for it in batch]
        width = max(len(p) + len(r) for p, r in seqs)
        ids = torch.full((len(seqs), width), pad)
        attn, resp = torch.zeros_like(ids), torch.zeros_like(ids, dtype=torch.bool)
        for i, (p, r) in enumerate(seqs):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            attn[i, : len(p) + len(r)] = 1
            resp[i, len(p) : len(p) + len(r)] = True
        with torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext():
            logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
        lp = torch.gather(F.log_softmax(logits, -1), 2, ids[:, 1:, None]).squeeze(-1)
        return (lp * resp[:, 1:]).sum(-1)

    with torch.no_grad():
        ref = {}
        for ids in steps:
            out = logps([items[i] for i in ids])
            ref[tuple(ids)] = out
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    times = []
    for ids in steps:
        t0 = time.perf_counter()
        out, r = logps([items[i] for i in ids]), ref[tuple(ids)]
        b = len(ids)
        loss = -F.logsigmoid(0.1 * ((out[:b] - r[:b]) - (out[b:] - r[b:]))).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def run_trl(root: Path, args, precompute: bool, bf16: bool = False) -> list[float]:
    import torch
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from bfpo import data, models

    torch.set_num_threads(args.threads)
    tokenizer = models.load_tokenizer(root / "init")
    model = models.load_model(root / "init")
    pairs = data.load(root / "pairs")
    _, steps = _items(root, args)
    order = [i for ids in steps for i in ids]
    eos = tokenizer.eos_token
    if _real(root):  # the chat model: its template, down_proj only, as bfpo.train runs it
        models.select_trainable(model, ["down_proj"])
        row = lambda r: {"prompt": models.format_prompt(r["prompt"], tokenizer), "chosen": r["chosen"] + eos,
                         "rejected": r["rejected"] + eos}  # fmt: skip
    else:
        row = lambda r: {"prompt": tokenizer.bos_token + models.format_prompt(r["prompt"]),
                         "chosen": " " + r["chosen"] + eos, "rejected": " " + r["rejected"] + eos}  # fmt: skip
    trl_data = pairs.select(order).map(row, remove_columns=pairs.column_names)
    config = DPOConfig(
        output_dir=str(root / "trl"),
        beta=0.01 if _real(root) else 0.1,
        loss_type=["sigmoid"],
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        max_length=args.max_length,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        precompute_ref_log_probs=precompute,
        report_to="none",
        disable_tqdm=True,
        logging_steps=args.steps,
        save_strategy="no",
        use_cpu=True,
        bf16=bf16,
        dataloader_num_workers=0,
        seed=0,
    )

    class Sequential(DPOTrainer):  # our schedule's batches, in order
        def _get_train_sampler(self, *a, **k):
            return SequentialSampler(self.train_dataset)

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    trainer = Sequential(
        model=model, args=config, train_dataset=trl_data, processing_class=tokenizer, callbacks=[timer]
    )
    trainer.train()
    return timer.times


def run_bfpo_sdpa(root: Path, args) -> list[float]:
    """bfpo.train in bf16 with PyTorch's fused attention (SDPA) kept, in the model and in the packed
    rows (bfpo.precision and bfpo.packing use eager attention under bf16 on a CPU): what that
    choice is worth."""
    from bfpo import packing, precision

    precision.fit_attention = lambda model, mixed_precision, device: "sdpa"
    packing.inner_kernel = lambda own, device: "sdpa"
    return run_bfpo(root, args, "bfpo_bf16_sdpa", mixed_precision="bf16")


VARIANTS = {  # bfpo.train's options, each a worker of its own ("bfpo": its defaults in fp32, padding-free)
    "bfpo_bf16": {"mixed_precision": "bf16"},
    "bfpo_padded": {"padding_free": False},
    "bfpo_fused": {"fused_optimizer": True},
}
WORKERS = {
    "bfpo": run_bfpo,
    "trl": lambda root, args: run_trl(root, args, precompute=False),
    "trl_precompute": lambda root, args: run_trl(root, args, precompute=True),
    "plain": run_plain,
    "trl_bf16": lambda root, args: run_trl(root, args, precompute=True, bf16=True),
    "plain_bf16": lambda root, args: run_plain(root, args, bf16=True),
    "bfpo_bf16_sdpa": run_bfpo_sdpa,
} | {name: (lambda root, args, n=name: run_bfpo(root, args, n, **VARIANTS[n])) for name in VARIANTS}
LABELS = {
    "trl": "TRL 1.16 default",
    "trl_precompute": "TRL precompute",
    "plain": "plain loop + precompute",
    "bfpo": "bfpo.train (padding-free)",
    "bfpo_bf16": "bfpo.train bf16",
    "trl_bf16": "TRL precompute bf16",
    "plain_bf16": "plain loop bf16",
    "bfpo_bf16_sdpa": "bfpo.train bf16, fused attn",
    "bfpo_padded": "bfpo.train padded",
    "bfpo_fused": "bfpo.train + fused AdamW",
}


def step_flops_and_tokens(root: Path, args) -> tuple[list[float], list[int]]:
    """Model FLOPs (see module doc) and real tokens of each step's chosen and rejected sequences."""
    from bfpo import models

    items, steps = _items(root, args)
    model = models.load_model(root / "init")
    n_params = sum(p.numel() for p in model.parameters())
    trainable = models.select_trainable(model, ["down_proj"])[0] if _real(root) else n_params
    layers, d = model.config.num_hidden_layers, model.config.hidden_size
    flops, tokens = [], []
    for ids in steps:
        lengths = [len(items[i]["prompt"]) + len(r) for i in ids for r in items[i]["responses"]]
        # forward 2N, backward through the activations 2N, weight gradients 2N of the trained weights only
        flops.append(sum((4 * n_params + 2 * trainable) * n + 6 * layers * d * n * n for n in lengths))
        tokens.append(sum(lengths))
    return flops, tokens


def bench_size(size: str, args, peaks: dict) -> dict:
    """Each worker ``args.repeats`` times, in rounds (every worker once per round, so drifts of the
    machine touch all alike); each measure is kept per repeat."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(root, args.pairs, size)
        flops, tokens = step_flops_and_tokens(root, args)
        timed = slice(args.warmup, args.steps)
        out = {"tokens": sum(tokens[timed])} | {w: {} for w in args.workers}
        for _ in range(args.repeats):
            for worker in args.workers:
                cmd = [sys.executable, __file__, "--worker", worker, "--root", str(root)] + _passthrough(args)
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{worker} ({size}) failed:\n{proc.stderr[-3000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                seconds = sum(result["steps"][timed])
                peak = peaks["bfloat16" if "bf16" in worker else "float32"]
                measured = {
                    "seconds": seconds,
                    "tokens_per_s": sum(tokens[timed]) / seconds,
                    "mfu": sum(flops[timed]) / seconds / peak,
                    "end_to_end_seconds": result["total_seconds"],  # loading, tokenizing, reference pass, steps
                    "peak_rss_mb": result["peak_rss_mb"],
                }
                for key, value in measured.items():
                    out[worker].setdefault(key, []).append(value)
    return out


def _spread(values: list[float]) -> dict:
    """Median, lowest and highest of the repeats."""
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1]}


def _passthrough(args) -> list[str]:
    keys = ("steps", "batch_size", "pairs", "lr", "threads", "max_length", "warmup")  # not repeats
    return [x for k in keys for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every trainer, in rounds")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also every trainer with bf16 autocast (TRL with precompute, the plain loop, bfpo.train with its "
        "eager attention and with fused attention), MFU against the bf16 peak",
    )
    parser.add_argument("--out", default="benchmarks/results/training.json", help="where the results JSON goes")
    parser.add_argument("--workers", nargs="+", choices=list(WORKERS), help="only these trainers (default: all)")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # in its own process: its step times, its whole time and its peak memory
        t0 = time.perf_counter()
        steps = WORKERS[args.worker](Path(args.root), args)
        total = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"steps": steps, "total_seconds": total, "peak_rss_mb": peak}))
        return 0
    chosen = args.workers
    args.workers = ["trl", "trl_precompute", "plain", "bfpo", "bfpo_padded", "bfpo_fused"]
    args.workers += ["trl_bf16", "plain_bf16", "bfpo_bf16_sdpa", "bfpo_bf16"] if args.bf16 or chosen else []
    args.workers = [w for w in args.workers if not chosen or w in chosen]
    peaks = matmul_peaks(args.threads)
    report = {
        "machine": machine(args.threads) | {"matmul_peak_flops": peaks},
        "setup": {
            k: getattr(args, k) for k in ("steps", "warmup", "batch_size", "max_length", "pairs", "threads", "repeats")
        },
        "sizes": {},
    }
    for size in args.sizes:
        report["sizes"][size] = r = bench_size(size, args, peaks)
        # each bfpo variant's speed-up over each other trainer, per repeat (same round)
        r["speedups"] = {
            f"{a}_vs_{b}": _spread([x / y for x, y in zip(r[a]["tokens_per_s"], r[b]["tokens_per_s"], strict=True)])
            for a in args.workers
            if a.startswith("bfpo")
            for b in args.workers
            if b != a
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    print(
        f"{m['cpu']}, {args.threads} threads, fp32 matmul peak {peaks['float32'] / 1e9:.0f} GFLOP/s"
        + (f", bf16 {peaks['bfloat16'] / 1e9:.0f}" if args.bf16 else "")
    )
    print(f"median [lowest-highest] of {args.repeats} repeats")
    print(f"{'size':6} {'trainer':30} {'tokens/s':>20} {'MFU':>18} {'end-to-end s':>12} {'peak MB':>8}")
    for size, r in report["sizes"].items():
        for w in args.workers:
            t, m = _spread(r[w]["tokens_per_s"]), _spread(r[w]["mfu"])
            line = f"{size:6} {LABELS[w]:30} {t['median']:6.0f} [{t['min']:.0f}-{t['max']:.0f}]"
            line += f"  {m['median']:5.1%} [{m['min']:.1%}-{m['max']:.1%}]"
            print(line + f" {_spread(r[w]['end_to_end_seconds'])['median']:12.1f} {max(r[w]['peak_rss_mb']):8.0f}")
        pairs = ["bfpo_vs_trl", "bfpo_vs_trl_precompute", "bfpo_vs_plain", "bfpo_vs_bfpo_padded"]
        pairs += ["bfpo_padded_vs_plain"]
        if args.bf16:
            pairs += ["bfpo_bf16_vs_trl", "bfpo_bf16_vs_plain", "bfpo_bf16_vs_trl_bf16", "bfpo_bf16_vs_plain_bf16"]
            pairs += ["bfpo_bf16_vs_bfpo_bf16_sdpa"]
        for pair in [p for p in pairs if p in r["speedups"]]:
            sp = r["speedups"][pair]
            print(f"{size:6} {pair:30} {sp['median']:.2f}x [{sp['min']:.2f}-{sp['max']:.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
