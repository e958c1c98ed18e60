"""Preference-training throughput and peak memory: bfpo.train against TRL's DPOTrainer, side by side.

    python benchmarks/bench_dpo_vs_trl.py                # defaults: 60 steps, batch 16, tiny Llama
    python benchmarks/bench_dpo_vs_trl.py --steps 100 --batch-size 32

Both trainers get the same tiny Llama, tokenizer, SafeHelp pairs, loss (sigmoid DPO, beta 0.1),
learning rate, batch size, number of steps, one process and the same torch thread count; TRL
precomputes reference log-probs as ours does. Each runs in its own subprocess so that peak
resident memory (ru_maxrss) is its own. End-to-end time covers tokenizing, the reference
log-probs and the steps: our whole ``train()`` call, and TRL's ``DPOTrainer`` constructor (where it
tokenizes and precomputes the reference log-probs) plus its ``train()``. "steps" times only the
optimisation steps. tokens/s counts the non-padding tokens of the steps' chosen and rejected
sequences, the same for both. Needs ``pip install trl==1.16.0`` (a benchmark-only
dependency, not installed by the package).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def prepare(root: Path, n_pairs: int) -> None:
    from bfpo import data, models
    from bfpo import toyworld as tw

    pairs = tw.preference_pairs(n_pairs, tw.WorldConfig(seed=0))
    data.save(pairs, root / "pairs")
    texts = [models.format_prompt(p) + " " + c for p, c in zip(pairs["prompt"], pairs["chosen"], strict=True)]
    tokenizer = models.train_tokenizer(texts + list(pairs["rejected"]), vocab_size=1024)
    models.save(models.tiny_llama(tokenizer), tokenizer, root / "init")


def run_ours(root: Path, args) -> dict:
    from bfpo import train

    cfg = train.TrainConfig(
        model=str(root / "init"),
        output_dir=str(root / "ours"),
        train_data=str(root / "pairs"),
        loss="dpo",
        beta=0.1,
        learning_rate=args.lr,
        per_device_batch_size=args.batch_size,
        max_steps=args.steps,
        max_length=128,
        max_prompt_length=64,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        max_grad_norm=0.0,
        progress=False,
        num_threads=args.threads,
    )
    t0 = time.perf_counter()
    train.train(cfg)
    seconds = time.perf_counter() - t0
    metrics = train.read_metrics(root / "ours")
    return {"seconds": seconds, "step_seconds": sum(m["seconds"] for m in metrics), "final_loss": metrics[-1]["loss"]}


def run_trl(root: Path, args) -> dict:
    import torch
    from trl import DPOConfig, DPOTrainer

    from bfpo import data, models

    torch.set_num_threads(args.threads)
    tokenizer = models.load_tokenizer(root / "init")
    model = models.load_model(root / "init")
    pairs = data.load(root / "pairs")
    eos = tokenizer.eos_token
    trl_data = pairs.map(
        lambda r: {
            "prompt": tokenizer.bos_token + models.format_prompt(r["prompt"]),
            "chosen": " " + r["chosen"] + eos,
            "rejected": " " + r["rejected"] + eos,
        },
        remove_columns=pairs.column_names,
    )
    config = DPOConfig(
        output_dir=str(root / "trl"),
        beta=0.1,
        loss_type=["sigmoid"],
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        max_length=128,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=0.0,
        precompute_ref_log_probs=True,
        report_to="none",
        disable_tqdm=True,
        logging_steps=args.steps,
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
    t0 = time.perf_counter()
    # DPOTrainer tokenizes and precomputes the reference log-probs in its constructor: time both
    trainer = DPOTrainer(model=model, args=config, train_dataset=trl_data, processing_class=tokenizer)
    t1 = time.perf_counter()
    out = trainer.train()
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "step_seconds": t2 - t1, "final_loss": float(out.training_loss)}


def step_tokens(root: Path, args) -> int:
    """Non-padding tokens in the chosen and rejected sequences of the benchmark's steps."""
    from bfpo import models, train

    cfg = train.TrainConfig(
        model=str(root / "init"),
        output_dir="-",
        train_data=str(root / "pairs"),
        per_device_batch_size=args.batch_size,
        max_length=128,
        max_prompt_length=64,
    )
    items, _ = train.tokenize(
        train.load_examples(cfg.train_data, "preference", "pairs"), models.load_tokenizer(cfg.model), cfg, "preference"
    )
    schedule = train.StepSchedule(len(items), 0, args.batch_size, 0.0, cfg.seed)
    return sum(
        len(items[i]["prompt"]) * 2 + sum(map(len, items[i]["responses"]))
        for s in range(args.steps)
        for i in schedule.ids(s)
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/dpo_vs_trl.json", help="where the results JSON goes")
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = (run_ours if args.worker == "ours" else run_trl)(Path(args.root), args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(root, args.pairs)
        tokens = step_tokens(root, args)
        results = {}
        for worker in ("ours", "trl"):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                worker,
                "--root",
                str(root),
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
                "--lr",
                str(args.lr),
                "--threads",
                str(args.threads),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{worker} failed:\n{proc.stderr[-3000:]}")
            results[worker] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[worker]["tokens_per_s"] = tokens / results[worker]["seconds"]
            results[worker]["step_tokens_per_s"] = tokens / results[worker]["step_seconds"]
    import platform

    import torch
    import trl

    report = {
        "setup": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "pairs": args.pairs,
            "threads": args.threads,
            "tokens": tokens,
            "torch": torch.__version__,
            "trl": trl.__version__,
            "machine": platform.machine(),
            "cpus": __import__("os").cpu_count(),
        },
        "bfpo": results["ours"],
        "trl": results["trl"],
        "speedup": results["trl"]["seconds"] / results["ours"]["seconds"],
        "step_speedup": results["trl"]["step_seconds"] / results["ours"]["step_seconds"],
        "memory_ratio": results["ours"]["peak_rss_mb"] / results["trl"]["peak_rss_mb"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':6} {'seconds':>8} {'tokens/s':>9} {'steps s':>8} {'step tok/s':>10} {'peak MB':>8} {'final loss':>10}")
    for name in ("bfpo", "trl"):
        r = report[name]
        print(
            f"{name:6} {r['seconds']:8.1f} {r['tokens_per_s']:9.0f} {r['step_seconds']:8.1f} "
            f"{r['step_tokens_per_s']:10.0f} {r['peak_rss_mb']:8.0f} {r['final_loss']:10.4f}"
        )
    print(
        f"bfpo is {report['speedup']:.2f}x TRL's end-to-end throughput ({report['step_speedup']:.2f}x in the steps "
        f"alone), with {report['memory_ratio']:.2f}x its peak memory"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
