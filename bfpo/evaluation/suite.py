"""What notebook 05 evaluates in each profile: the models, the tasks and the settings, and the table of
each task's main metrics. The CPU profiles evaluate notebook 04's chosen models (first seed) on the
vendored subsets; the paper profile evaluates the 7B models of the paper's comparison as the official
BFPO evaluation does."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bfpo.evaluation.mc_tasks import MC_TASKS
from bfpo.evaluation.run import MAIN_METRICS, OFFICIAL_TASKS, VENDORED_TASKS, evaluate, tidy
from bfpo.evaluation.win_rate import RewardModelJudge

PAPER_MODELS = {
    "Zephyr-7b-beta": "HuggingFaceH4/zephyr-7b-beta",
    "Mistral-7B-Instruct-v0.2": "mistralai/Mistral-7B-Instruct-v0.2",
    "OpenChat-3.5": "openchat/openchat_3.5",
    "Llama-2-7b-chat": "meta-llama/Llama-2-7b-chat-hf",
    "Beaver-7b (Safe RLHF)": "PKU-Alignment/beaver-7b-v1.0",
    "Juanako-7b-UNA": "fblgit/juanako-7b-UNA",
}
"""The 7B models of the paper's comparison (hub ids); notebook 03's BFPO model joins them."""

STUDY_MODELS = {
    "BFPO": "bfpo",
    "DPO (helpfulness)": "dpo_helpful",
    "DPO (safety)": "dpo_safety",
    "IPO": "ipo",
    "ULMA": "ulma",
    "Safe RLHF": "safe_rlhf",
}
"""Title -> notebook 04's method name, for the CPU profiles."""


@dataclass
class Suite:
    """Models, tasks and settings of one evaluation (see :func:`suite`)."""

    models: dict  # title -> model folder or hub id
    tasks: list[str]
    judge: str
    limits: dict  # "mc" / "generative" -> examples per task (None: all)
    decoding: str = "greedy"
    bos_rule: str = "tokenizer"
    hub_dir: Path | None = None
    win_rate_judge: object = None
    left_out: list[str] = field(default_factory=list)  # models notebook 04 did not train


def suite(profile: str, runs: Path, limit_mc: int | None, limit_generative: int | None, judge: str) -> Suite:
    """The evaluation of ``profile``, with the limits (None: every example) and the judge of its settings
    file's evaluation section (``bfpo.profiles``). CPU profiles: the SFT start and notebook 04's chosen model of each
    method (first seed, ``04_baselines/final_runs.json``), on every vendored task with the refusal judge,
    greedy answers and the tokenizer's BOS rule, plus AlpacaEval judged by Safe RLHF's reward model when
    there is one. Paper profile: :data:`PAPER_MODELS` and notebook 03's BFPO model on the official BFPO
    evaluation (:data:`~bfpo.evaluation.OFFICIAL_TASKS`: the HarmBench classifier's contextual prompt,
    sampled answers, no BOS as lm-eval 0.4.1), then this package's other sets."""
    runs = Path(runs)
    if profile == "paper":
        return Suite(
            models={**PAPER_MODELS, "BFPO": str(runs / "03_training" / "bfpo" / "model")},
            tasks=[*OFFICIAL_TASKS, *(t for t in VENDORED_TASKS if t not in OFFICIAL_TASKS)],
            judge=judge,
            limits={"mc": limit_mc, "generative": limit_generative},
            decoding="official",
            bos_rule="none",
            hub_dir=runs / "hub_data",
        )
    base = runs / "04_baselines"
    final = json.loads((base / "final_runs.json").read_text()) if (base / "final_runs.json").is_file() else {}
    models = {"SFT start": runs / "03_training" / "sft" / "model"}
    for title, method in STUDY_MODELS.items():
        models[title] = Path(next(iter(final[method]["models"].values()))) if method in final else base / "missing"
    if not models["SFT start"].is_dir():
        raise FileNotFoundError(f"{models['SFT start']} is missing: run notebooks 03 and 04 first")
    left_out = [name for name, p in models.items() if not p.is_dir()]
    reward_model = base / "safe_rlhf" / "start0" / "reward_model" / "model"
    win_rate_judge = RewardModelJudge(reward_model) if reward_model.is_dir() else None
    return Suite(
        models={name: p for name, p in models.items() if p.is_dir()},
        tasks=[*VENDORED_TASKS, *(["alpaca_eval"] if win_rate_judge else []), "safehelp"],
        judge=judge,
        limits={"mc": limit_mc, "generative": limit_generative},
        win_rate_judge=win_rate_judge,
        left_out=left_out,
    )


def _evaluate(path, tasks: list[str], options: dict) -> list[dict]:
    return evaluate(path, tasks, **options)


def run_suite(s: Suite, cache_dir, safehelp_samples: int = 4, parallel: int = 1) -> pd.DataFrame:
    """Every model on every task (multiple choice, then the rest), cached: the tidy rows. With
    ``parallel`` > 1 the models are evaluated that many at a time in worker processes
    (:mod:`bfpo.jobs`, one thread each); 1 evaluates here, one after another."""
    from bfpo import jobs

    options = dict(
        judge=s.judge,
        cache_dir=cache_dir,
        win_rate_judge=s.win_rate_judge,
        safehelp_samples=safehelp_samples,
        hub_dir=s.hub_dir,
        decoding=s.decoding,
        bos_rule=s.bos_rule,
    )
    calls, names = [], []
    for name, path in s.models.items():
        for kind, group in (
            ("mc", [t for t in s.tasks if t in MC_TASKS]),
            ("generative", [t for t in s.tasks if t not in MC_TASKS]),
        ):
            calls.append((path, group, options | {"limit": s.limits[kind]}))
            names.append(name)
    results = jobs.starmap(_evaluate, calls, parallel)
    rows = []
    for name, result in zip(names, results, strict=True):
        rows += tidy(result, name)
    return pd.DataFrame(rows)


def main_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each task's main metrics (:data:`~bfpo.evaluation.MAIN_METRICS`), with a ``column``
    name for the tables ("advbench harmless all", "xstest over-refusal", ...)."""
    keep = df[[r.metric in MAIN_METRICS[r.task] for r in df.itertuples()]]
    return keep.assign(
        column=keep["task"]
        + " "
        + keep["metric"].str.replace("harmless_rate/", "harmless ").str.replace("over_refusal/safe", "over-refusal")
    )
