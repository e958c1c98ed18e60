"""The plan of a GPU study profile, offline: its jobs, estimated GPU-minutes and memory.

    python -m bfpo.notebooks --profile gpu --plan

Counts come from the profile (``bfpo.study.PROFILES["gpu"]``) exactly as notebook 04 builds its jobs; the
seconds per unit of work come from :class:`Rates`: assumed values for a ~1M-parameter model on one
H100/H200-class GPU until ``make gpu-check`` has run, then the rates it measured there
(``runs/gpu_check/report.json``, read when present). Tiny models are launch-bound: a step costs kernel
launches and Python, not FLOPs, so the study shares the GPU between ``parallel`` worker processes, each
with its own CUDA context; :attr:`Rates.parallel_efficiency` is what that sharing is assumed to keep.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from bfpo import selection, study
from bfpo import toyworld as tw

BATCH = 64  # rows per sampling batch (bfpo.models.generate)
JUDGE_NEW_TOKENS = 48  # bfpo.models.generate's default answer length, as the gold judge's samples use it


@dataclass(frozen=True)
class Rates:
    """Seconds per unit of work of one worker process on the GPU, and what a worker holds in memory."""

    train_step: float = 0.015  # one preference step (16 pairs + buffer, [~40, 128] tokens): ~200 launches + Python
    sft_step: float = 0.012  # one SFT step (32 examples)
    score_step: float = 0.012  # one reward or cost model step
    ppo_iteration: float = 0.25  # sample 16 x 32 tokens, score with 5 models, 3 optimiser steps
    decode_step: float = 0.004  # one token of a 64-row sampling batch (KV cache)
    job_overhead: float = 3.0  # load, reference pass of a preference run, save
    parallel_efficiency: float = 0.7  # share of `parallel` processes' speed kept when they time-slice one GPU
    worker_memory_gb: float = 1.0  # CUDA context (~0.5 GB) + a 1M-parameter model, its optimiser, activations
    source: str = "assumed (no GPU measurement yet: run make gpu-check on the GPU)"


def measured_rates(report_path: str | Path) -> Rates | None:
    """The rates ``make gpu-check`` measured (its report.json at smoke size), or None when there is none."""
    path = Path(report_path)
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    if report.get("size") != "smoke" or not report.get("device", "").startswith("cuda"):
        return None
    items, sizes = report["items"], report["sizes"]
    batches = math.ceil(sizes["sample_prompts"] / BATCH)
    peak_gb = max((r.get("peak_mb") or 0) for r in items.values()) / 1024
    return dataclasses.replace(
        Rates(),
        train_step=items["dpo"]["seconds"] / sizes["pref_steps"],
        sft_step=items["sft"]["seconds"] / sizes["sft_steps"],
        score_step=items["reward"]["seconds"] / sizes["score_steps"],
        ppo_iteration=items["ppo"]["seconds"] / sizes["ppo_iterations"],
        decode_step=items["sampling"]["seconds"] / (batches * sizes["new_tokens"]),
        worker_memory_gb=0.5 + peak_gb,
        source=f"measured by make gpu-check on {report['device_name']} ({path})",
    )


def _judge_seconds(prompts: int, samples: int, rates: Rates) -> float:
    return math.ceil(prompts * samples / BATCH) * JUDGE_NEW_TOKENS * rates.decode_step + 1.0


def stages(settings: study.StudyProfile, methods: list[str], rates: Rates) -> list[dict]:
    """One row per stage: jobs, what each does, and the seconds of one worker process for all of them."""
    b, seeds, tuning = settings.budget, len(settings.seeds), len(settings.tuning_seeds)
    trained = [m for m in methods if m != "safe_rlhf"]
    points = len(next(iter(selection.grids(methods, settings.grids).values())))
    starts = seeds + tuning - 1 if settings.sft_per_seed else 0  # tuning seed 0 starts from notebook 03's SFT
    start_tags = seeds + tuning if settings.sft_per_seed else 1
    sweep = len(settings.lambda_sweep) * (settings.lambda_sweep_seeds or seeds)
    n_val, n_train = len(tw.eval_prompts("validation")), len(tw.eval_prompts("training", settings.training_wordings))
    n_test = len(tw.eval_prompts("test", settings.test_wordings()))
    train_job = b.steps * rates.train_step + rates.job_overhead
    ppo_job = b.ppo_iterations * rates.ppo_iteration + rates.job_overhead
    rows = [
        ("SFT starts", starts, f"{settings.sft_steps} SFT steps", settings.sft_steps * rates.sft_step + 2),
        ("reward and cost models", 2 * start_tags, f"{b.score_steps} steps", b.score_steps * rates.score_step + 2),
        (
            "red-teaming pairs",
            start_tags if "bfpo_red_team" in methods else 0,
            f"{b.red_team_prompts} prompts x 2 answers",
            _judge_seconds(b.red_team_prompts, 2, rates),
        ),
        ("tuning trainings", len(trained) * points * tuning, f"{b.steps} steps", train_job),
        ("tuning PPO-Lagrangian", points * tuning if "safe_rlhf" in methods else 0, f"{b.ppo_iterations} it", ppo_job),
        ("tuning judgements", len(methods) * points * tuning, f"{n_val} validation prompts", 0.0),
        ("report trainings", len(trained) * seeds, f"{b.steps} steps", train_job),
        ("report PPO-Lagrangian", seeds if "safe_rlhf" in methods else 0, f"{b.ppo_iterations} iterations", ppo_job),
        ("lambda sweep (PPO, fixed lambda)", sweep if "safe_rlhf" in methods else 0, f"{b.ppo_iterations} it", ppo_job),
        ("report judgements", (len(methods) + 1) * seeds, f"{n_train} training + {n_test} test prompts", 0.0),
        (
            "curve judgements",
            len([m for m in b.snapshot_methods if m in methods]) * seeds * max(b.snapshots - 1, 0) + sweep,
            f"{n_test} test prompts",
            _judge_seconds(n_test, settings.eval_samples, rates),
        ),
    ]
    judged = {
        "tuning judgements": _judge_seconds(n_val, settings.eval_samples, rates),
        "report judgements": _judge_seconds(n_train + n_test, settings.eval_samples, rates),
    }
    out = []
    for name, jobs, each, seconds in rows:
        seconds = judged.get(name, seconds)
        out.append({"stage": name, "jobs": jobs, "each": each, "process_seconds": jobs * seconds})
    return out


def build(profile: str = "gpu", report_path: str | Path = "runs/gpu_check/report.json", settings_file=None) -> dict:
    """The plan of ``profile`` (from ``settings_file``, a copy of its settings, when given): its settings, stages,
    and the estimated wall minutes and memory on one GPU."""
    from bfpo.io import project_path

    settings = study.profile_settings(profile, settings_file)
    methods = list(settings.methods or study.default_methods())
    rates = measured_rates(project_path(report_path)) or Rates()
    rows = stages(settings, methods, rates)
    process_seconds = sum(r["process_seconds"] for r in rows)
    wall = process_seconds / (settings.parallel * rates.parallel_efficiency)
    return {
        "profile": profile,
        "settings": settings,
        "methods": methods,
        "rates": rates,
        "stages": rows,
        "jobs": sum(r["jobs"] for r in rows),
        "gpu_minutes": wall / 60,
        "memory_gb": settings.parallel * rates.worker_memory_gb,
    }


def format_plan(plan: dict) -> str:
    s, r = plan["settings"], plan["rates"]
    lines = [
        f"Profile {plan['profile']}: {len(s.seeds)} report seeds (halves {s.halves()['A'][0]}-{s.halves()['A'][-1]} "
        f"and {s.halves()['B'][0]}-{s.halves()['B'][-1]}), tuning seeds {s.tuning_seeds}, "
        f"{len(plan['methods'])} methods, {s.harmful_test_prompts} harmful test prompts, "
        f"{s.parallel} worker processes on one CUDA device",
        f"{'stage':34} {'jobs':>5}  {'each':34} {'process-min':>11}",
    ]
    for row in plan["stages"]:
        lines.append(f"{row['stage']:34} {row['jobs']:5d}  {row['each']:34} {row['process_seconds'] / 60:11.1f}")
    lines += [
        f"{'total':34} {plan['jobs']:5d}  {'':34} {sum(x['process_seconds'] for x in plan['stages']) / 60:11.1f}",
        f"estimated: {plan['gpu_minutes']:.1f} GPU-minutes on one GPU ({s.parallel} processes at "
        f"{r.parallel_efficiency:.0%} efficiency), {plan['memory_gb']:.0f} GB of GPU memory "
        f"({r.worker_memory_gb:.1f} GB a process)",
        f"rates: {r.source}: train step {r.train_step * 1e3:.0f} ms, SFT step {r.sft_step * 1e3:.0f} ms, "
        f"PPO iteration {r.ppo_iteration:.2f} s, decode step {r.decode_step * 1e3:.1f} ms, "
        f"{r.job_overhead:.0f} s a job",
    ]
    return "\n".join(lines) + "\n"
