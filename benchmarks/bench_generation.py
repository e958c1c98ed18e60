"""Sampling throughput: bfpo's KV-cache loop (bfpo.sampling) against transformers' generate(), side by side.

    python benchmarks/bench_generation.py                  # 1.3M and 5.8M parameters
    python benchmarks/bench_generation.py --batch-size 128 --new-tokens 64

The same tiny Llama, SafeHelp prompts (chat-formatted, left-padded), batch size, new tokens and
thread count for all three: ``generate`` with its sampling defaults (``do_sample=True``: top-k 50),
``generate`` as bfpo samples (top-k 0, top-p 1), and ``bfpo.sampling.sample``, which draws the same
tokens as the second from the same seed. tokens/s counts the generated tokens up to each row's end
(EOS included). Every sampler runs ``--repeats`` times in rounds; the median and the range are
reported. Results go to ``benchmarks/results/generation.json`` with the CPU model.

Then ``bfpo.models.generate`` (greedy, ``--new-tokens``) on the first ``--prompts`` AlpacaEval
instructions (``data/``; 14 to 592 tokens, median 43, with this tokenizer), in the order given and
with ``sort_by_length`` (batches longest first, answers returned in order), timed whole, in rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import SIZES, _spread, machine  # noqa: E402


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
    out = {name: {"tokens_per_s": []} for name in ways}
    with torch.inference_mode():
        for fn in ways.values():
            fn(*batches[0])  # warm up (the first generate() call imports and sets up what it needs)
        for _ in range(args.repeats):  # in rounds: every sampler once per round
            for name, fn in ways.items():
                torch.manual_seed(0)
                tokens, t0 = 0, time.perf_counter()
                for ids, m in batches:
                    tokens += _counted(fn(ids, m), eos, pad)
                out[name]["tokens_per_s"].append(tokens / (time.perf_counter() - t0))
    out["sort_by_length"] = _sorted(model, tok, args)
    ours = out["bfpo_sampling"]["tokens_per_s"]
    out["speedups"] = {
        f"bfpo_sampling_vs_{name}": _spread([a / b for a, b in zip(ours, out[name]["tokens_per_s"], strict=True)])
        for name in ("generate_defaults", "generate_as_bfpo")
    }
    return out


def _sorted(model, tok, args) -> dict:
    """Seconds to answer AlpacaEval instructions greedily, as given and sorted by length, per repeat."""
    from bfpo import data, models

    prompts = [r["instruction"] for _, r in data.read_jsonl(data.data_file(ALPACA))][: args.prompts]
    out = {"as_given": [], "sorted": []}
    for _ in range(args.repeats):
        for name, flag in (("as_given", False), ("sorted", True)):
            t0 = time.perf_counter()
            models.generate(
                model, tok, prompts, 1, args.new_tokens, 0.0, batch_size=args.batch_size, sort_by_length=flag
            )
            out[name].append(time.perf_counter() - t0)
    out["speedup"] = _spread([a / b for a, b in zip(out["as_given"], out["sorted"], strict=True)])
    return out


ALPACA = "alpaca_eval_text_davinci_003_500.jsonl"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every sampler, in rounds")
    parser.add_argument("--out", default="benchmarks/results/generation.json", help="where the results JSON goes")
    args = parser.parse_args(argv)
    report = {
        "machine": machine(args.threads),
        "setup": {k: getattr(args, k) for k in ("prompts", "batch_size", "new_tokens", "threads", "repeats")},
        "sizes": {size: bench(size, args) for size in args.sizes},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['machine']['cpu']}, {args.threads} threads, batch {args.batch_size}, {args.new_tokens} new tokens")
    print(f"median [lowest-highest] of {args.repeats} repeats")
    for size, r in report["sizes"].items():
        for name in ("generate_defaults", "generate_as_bfpo", "bfpo_sampling"):
            t = _spread(r[name]["tokens_per_s"])
            print(f"{size:6} {name:20} {t['median']:6.0f} tokens/s [{t['min']:.0f}-{t['max']:.0f}]")
        for pair, sp in r["speedups"].items():
            print(f"{size:6} {pair:36} {sp['median']:.2f}x [{sp['min']:.2f}-{sp['max']:.2f}]")
        srt = r["sort_by_length"]
        given, ordered, sp = _spread(srt["as_given"]), _spread(srt["sorted"]), srt["speedup"]
        print(
            f"{size:6} AlpacaEval greedy: as given {given['median']:.1f} s, "
            f"sorted by length {ordered['median']:.1f} s: {sp['median']:.2f}x [{sp['min']:.2f}-{sp['max']:.2f}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
