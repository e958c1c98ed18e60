"""Sampling throughput: bfpo's KV-cache loop (bfpo.sampling) against transformers' generate(), side by side.

    python benchmarks/bench_generation.py                  # 1.3M and 5.8M parameters
    python benchmarks/bench_generation.py --batch-size 128 --new-tokens 64

The same tiny Llama, SafeHelp prompts (chat-formatted, left-padded), batch size, new tokens and
thread count for all three: ``generate`` with its sampling defaults (``do_sample=True``: top-k 50),
``generate`` as bfpo samples (top-k 0, top-p 1), and ``bfpo.sampling.sample``, which draws the same
tokens as the second from the same seed. tokens/s counts the generated tokens up to each row's end
(EOS included). Results go to ``benchmarks/results/generation.json`` with the CPU model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import SIZES, machine  # noqa: E402


def _setup(size: str, n_prompts: int):
    from bfpo import models
    from bfpo import toyworld as tw

    pairs = tw.preference_pairs(400, tw.WorldConfig(seed=0))
    texts = [models.format_prompt(p) + " " + c for p, c in zip(pairs["prompt"], pairs["chosen"], strict=True)]
    tokenizer = models.train_tokenizer(texts + list(pairs["rejected"]), vocab_size=1024)
    hidden, layers, heads, inter = SIZES[size]
    model = models.tiny_llama(tokenizer, hidden, layers, heads, inter, max_position_embeddings=512).eval()
    prompts = [p for p in pairs["prompt"]][:n_prompts]
    return model, tokenizer, prompts


def _batches(tokenizer, prompts, batch_size):
    from bfpo import models

    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), batch_size):
        chunk = [models.format_prompt(p) for p in prompts[start : start + batch_size]]
        enc = tokenizer(chunk, return_tensors="pt", padding=True)
        yield enc["input_ids"], enc["attention_mask"]


def _counted(new, eos, pad) -> int:
    """Generated tokens up to and including each row's EOS."""
    ended = (new == eos).long().cumsum(-1)
    return int(((ended == 0) & (new != pad) | ((ended == 1) & (new == eos))).sum())


def bench(size: str, args) -> dict:
    import torch

    from bfpo import sampling

    torch.set_num_threads(args.threads)
    model, tok, prompts = _setup(size, args.prompts)
    pad, eos = tok.pad_token_id, tok.eos_token_id
    ways = {
        "generate_defaults": lambda ids, m: model.generate(
            input_ids=ids,
            attention_mask=m,
            do_sample=True,
            max_new_tokens=args.new_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
        )[:, ids.shape[1] :],
        "generate_as_bfpo": lambda ids, m: model.generate(
            input_ids=ids,
            attention_mask=m,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            max_new_tokens=args.new_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
        )[:, ids.shape[1] :],
        "bfpo_sampling": lambda ids, m: sampling.sample(model, ids, m, args.new_tokens, 1.0, pad, eos),
    }
    batches = list(_batches(tok, prompts, args.batch_size))
    out = {}
    with torch.inference_mode():
        for name, fn in ways.items():
            fn(*batches[0])  # warm up (the first generate() call imports and sets up what it needs)
            torch.manual_seed(0)
            tokens, t0 = 0, time.perf_counter()
            for ids, m in batches:
                tokens += _counted(fn(ids, m), eos, pad)
            seconds = time.perf_counter() - t0
            out[name] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}
    for name in ("generate_defaults", "generate_as_bfpo"):
        out["bfpo_sampling"][f"speedup_vs_{name}"] = out["bfpo_sampling"]["tokens_per_s"] / out[name]["tokens_per_s"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/generation.json", help="where the results JSON goes")
    args = parser.parse_args(argv)
    report = {
        "machine": machine(args.threads),
        "setup": {k: getattr(args, k) for k in ("prompts", "batch_size", "new_tokens", "threads")},
        "sizes": {size: bench(size, args) for size in args.sizes},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['machine']['cpu']}, {args.threads} threads, batch {args.batch_size}, {args.new_tokens} new tokens")
    print(f"{'size':6} {'sampler':20} {'tokens/s':>9} {'bfpo is':>9}")
    for size, r in report["sizes"].items():
        for name in ("generate_defaults", "generate_as_bfpo", "bfpo_sampling"):
            ratio = r["bfpo_sampling"].get(f"speedup_vs_{name}")
            print(f"{size:6} {name:20} {r[name]['tokens_per_s']:9.0f} {f'{ratio:.2f}x' if ratio else '':>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
