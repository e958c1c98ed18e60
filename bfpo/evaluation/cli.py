"""``python -m bfpo.evaluation``: evaluate a model from the command line."""

from __future__ import annotations

import argparse
import contextlib

from bfpo import configs, locks
from bfpo.errors import run_cli
from bfpo.evaluation.generative import DECODINGS, GEN_TASKS
from bfpo.evaluation.judges import JUDGES
from bfpo.evaluation.loglik import BOS_RULES
from bfpo.evaluation.mc_tasks import MC_TASKS
from bfpo.evaluation.run import OFFICIAL_TASKS, TASKS, check_request, evaluate, hub_only, tidy
from bfpo.evaluation.win_rate import RewardModelJudge
from bfpo.io import write_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bfpo.evaluation",
        description="Evaluate a causal LM: multiple-choice benchmarks scored as lm-evaluation-harness 0.4 scores "
        "them, generative harmlessness with a judge, win rate against reference outputs.",
        epilog=f"Tasks: {', '.join(TASKS)}. Judges: {', '.join(JUDGES)}.",
    )
    parser.add_argument("--model", required=True, help="a local model folder or a hub id")
    parser.add_argument(
        "--tasks",
        required=True,
        help="comma-separated task names, or the groups 'mc', 'generative', 'all' (with --hub-dir these include "
        "the tasks read from the hub only) or 'official' (the official BFPO evaluation; needs --hub-dir)",
    )
    parser.add_argument("--judge", default="refusal", help="judge of generative harmlessness (default: refusal)")
    parser.add_argument("--win-rate-judge", help="a scalar-head model folder (e.g. a reward model) for alpaca_eval")
    parser.add_argument("--limit", type=_positive_int, help="only the first N examples of each task")
    parser.add_argument("--cache-dir", default="runs/eval_cache", help="where results are cached")
    parser.add_argument(
        "--data-dir", help="folder of the data files (default: $BFPO_DATA_DIR, else the repository's data/)"
    )
    parser.add_argument(
        "--hub-dir",
        help="score the tasks on their full test sets: fetch them from the hub (lm-eval 0.4's sources, and the "
        "official BFPO sets) into this folder once, then read them from there; needed by the tasks with no subset "
        "in data/ (winogrande, toxigen_mc, bigbench_*, alert, alert_adversarial, rtp_challenge, beaver, hhh_harmless)",
    )
    parser.add_argument(
        "--bos-rule",
        choices=BOS_RULES,
        default="tokenizer",
        help="multiple-choice contexts start as lm-eval starts them: 'tokenizer' (lm-eval >= 0.4.2: the "
        "tokenizer's default, a BOS for Llama/Mistral, none for GPT-2/Qwen2) or 'none' (lm-eval 0.4.1, the paper's)",
    )
    parser.add_argument(
        "--decoding",
        choices=list(DECODINGS),
        default="greedy",
        help="answers to the generative tasks: 'greedy' (default) or 'official' (the BFPO evaluation: sampled at "
        "temperature 0.7, top-p 0.95, 256 new tokens, AdvBench prompts ending in '. ')",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (default: accelerate's choice, a GPU where there is one), cpu, cuda, cuda:N",
    )
    parser.add_argument("--output", help="write the tidy rows (JSON) here")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or BFPO_DEBUG=1)")
    args = parser.parse_args(argv)
    local = lambda names: [t for t in names if args.hub_dir or not hub_only(t)]  # noqa: E731
    groups = {"mc": local(MC_TASKS), "generative": local(GEN_TASKS), "all": local(TASKS), "official": OFFICIAL_TASKS}
    tasks = [t for name in args.tasks.split(",") if name.strip() for t in groups.get(name.strip(), [name.strip()])]
    return run_cli("bfpo.evaluation", lambda: _cli(args, tasks), args.debug)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cli(args, tasks) -> None:
    where = "python -m bfpo.evaluation"
    check_request(
        args.model, tasks, args.judge, args.limit, args.data_dir, args.win_rate_judge or None, where, args.hub_dir
    )
    if args.win_rate_judge:
        configs.require_model(args.win_rate_judge, where, "--win-rate-judge")
    wr = RewardModelJudge(args.win_rate_judge) if args.win_rate_judge else None
    # one writer per output file: a second evaluation writing the same --output stops here
    with locks.hold_file(args.output, "python -m bfpo.evaluation") if args.output else contextlib.nullcontext():
        _evaluate(args, tasks, wr)


def _evaluate(args, tasks, wr) -> None:
    results = evaluate(
        args.model,
        tasks,
        judge=args.judge,
        limit=args.limit,
        cache_dir=args.cache_dir,
        data_dir=args.data_dir,
        win_rate_judge=wr,
        hub_dir=args.hub_dir,
        bos_rule=args.bos_rule,
        decoding=args.decoding,
        device=args.device,
    )
    rows = tidy(results, str(args.model))
    for r in rows:
        ci = f"  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_low"] is not None else ""
        print(f"{r['task']:28} {r['metric']:24} {r['value']:.4f}{ci}  (n={r['n']})")
    if args.output:
        write_json(args.output, rows)
