"""The methods BFPO is measured against, as data + a loss for the one trainer.

Every pairwise or point-wise method is a :class:`Method`: how to relabel the labelled pairs
(helpfulness order, safety order, a naive mix, BFPO's global ranking, or point-wise labels) and
which loss of :mod:`bfpo.train` to run on them. Safe RLHF (reward and cost models, then
PPO-Lagrangian) lives in :mod:`bfpo.safe_rlhf`.

The label views of a pair (chosen is always the more helpful response; each has a safety label):

=====================  ==========================================================================
``helpfulness``        as given: the more helpful response wins (DPO on helpfulness, IPO, BFPO)
``safety``             the safe response wins; pairs whose responses are equally safe are left out
                       (they carry no safety preference)
``mix``                the union of the helpfulness and safety views (a naive mix of both data sets)
``ranked``             BFPO's global ranking decides: helpful-safe > unhelpful-safe >
                       unhelpful-unsafe > helpful-unsafe (the sign of the BFPO target)
=====================  ==========================================================================

Point-wise data (ULMA, point-wise DPO) gives each response of a pair its own label z: binary,
the winner of the ``ranked`` view is 1 and the loser 0; continuous, the response's place in the
global ranking (helpful-safe 1, unhelpful-safe 2/3, unhelpful-unsafe 1/3, helpful-unsafe 0).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import yaml

from bfpo import data as bdata
from bfpo import models, safe_rlhf, train
from bfpo import toyworld as tw
from bfpo.io import write_json

# ---------------------------------------------------------------------------------------------
# Label views
# ---------------------------------------------------------------------------------------------

POINT_FEATURES = datasets.Features(
    {
        "prompt": datasets.Value("string"),
        "response": datasets.Value("string"),
        "label": datasets.Value("float32"),
        "source": datasets.Value("string"),
    }
)
QUADRANT_SCORE = {"HS": 1.0, "US": 2 / 3, "UU": 1 / 3, "HU": 0.0}
"""A response's place in BFPO's global ranking, scaled to [0, 1] (continuous point-wise labels)."""


def _swap(row: dict) -> dict:
    return {
        **row,
        "chosen": row["rejected"],
        "rejected": row["chosen"],
        "chosen_safe": row["rejected_safe"],
        "rejected_safe": row["chosen_safe"],
    }


def safety_view(pairs: datasets.Dataset) -> datasets.Dataset:
    """Chosen = the safe response; pairs with equally safe responses are dropped."""
    rows = [r if r["chosen_safe"] else _swap(r) for r in pairs if r["chosen_safe"] != r["rejected_safe"]]
    if not rows:
        raise ValueError("safety view: no pair has one safe and one unsafe response")
    return datasets.Dataset.from_list(rows, features=pairs.features)


def ranked_view(pairs: datasets.Dataset) -> datasets.Dataset:
    """Chosen = the higher response in the global ranking (the sign of BFPO's target)."""
    rows = [r if r["chosen_safe"] else _swap(r) for r in pairs]  # a safe response outranks the helpful unsafe one
    return datasets.Dataset.from_list(rows, features=pairs.features)


def mix_view(pairs: datasets.Dataset) -> datasets.Dataset:
    """The naive mix: every pair with its helpfulness label, plus the safety view of the pairs."""
    return datasets.concatenate_datasets([pairs, safety_view(pairs)])


def pointwise_view(pairs: datasets.Dataset, label_type: str = "binary") -> datasets.Dataset:
    """Each response of each pair as its own example with a label z (see the module docstring)."""
    rows = []
    for r in pairs:
        if label_type == "binary":
            w = r if r["chosen_safe"] else _swap(r)
            rows += [(r["prompt"], w["chosen"], 1.0), (r["prompt"], w["rejected"], 0.0)]
        elif label_type == "continuous":
            chosen_q = "HS" if r["chosen_safe"] else "HU"  # chosen is the more helpful response
            rejected_q = "US" if r["rejected_safe"] else "UU"
            rows += [(r["prompt"], r["chosen"], QUADRANT_SCORE[chosen_q])]
            rows += [(r["prompt"], r["rejected"], QUADRANT_SCORE[rejected_q])]
        else:
            raise ValueError(f"label_type: expected 'binary' or 'continuous', got {label_type!r}")
    return datasets.Dataset.from_list(
        [{"prompt": p, "response": y, "label": z, "source": "pointwise"} for p, y, z in rows], features=POINT_FEATURES
    )


VIEWS = {
    "helpfulness": lambda pairs: pairs,
    "safety": safety_view,
    "mix": mix_view,
    "ranked": ranked_view,
    "pointwise_binary": lambda pairs: pointwise_view(pairs, "binary"),
    "pointwise_continuous": lambda pairs: pointwise_view(pairs, "continuous"),
}


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A pairwise or point-wise method: a label view of the pairs and a loss of the trainer."""

    name: str
    title: str  # for plots and tables
    view: str  # a key of VIEWS
    loss: str
    buffer: bool = True  # mix the helpful-only buffer in (in the view's form)
    overrides: dict = field(default_factory=dict)  # TrainConfig keys that differ from the shared budget

    @property
    def mode(self) -> str:
        return "pointwise" if self.view.startswith("pointwise") else "preference"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dpo_helpful", "DPO (helpfulness)", "helpfulness", "dpo"),
        Method("dpo_safety", "DPO (safety)", "safety", "dpo", buffer=False),
        Method("dpo_mix", "DPO (naive mix)", "mix", "dpo"),
        Method("ipo", "IPO", "helpfulness", "ipo"),
        Method("pointwise_dpo", "Point-wise DPO", "pointwise_binary", "pointwise_dpo"),
        Method(
            "pointwise_dpo_continuous",
            "Point-wise DPO (continuous)",
            "pointwise_continuous",
            "pointwise_dpo",
            overrides={"label_type": "continuous"},
        ),
        Method("ulma", "ULMA", "pointwise_binary", "ulma", overrides={"length_normalize": True}),
        Method("bfpo", "BFPO", "helpfulness", "bfpo"),
    )
}
"""Every method the trainer runs; Safe RLHF (``"safe_rlhf"``) runs through :mod:`bfpo.safe_rlhf`."""


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


def prepare_data(method: Method, pairs: datasets.Dataset, buffer: datasets.Dataset | None, out_dir) -> dict:
    """Write the method's training data (and buffer) under ``out_dir``; returns TrainConfig keys."""
    out = Path(out_dir)
    view = VIEWS[method.view]
    keys = {"mode": method.mode, "loss": method.loss, **method.overrides}
    train_data = view(pairs)
    if method.buffer and buffer is not None:
        # the buffer is helpful-only (safe/safe): every pairwise view of it is the helpfulness one
        if method.mode == "pointwise":  # point-wise losses have no buffer stream: the points join the data
            train_data = datasets.concatenate_datasets([train_data, view(buffer)])
        else:
            bdata.save(buffer, out / "buffer")
            keys["buffer_data"] = str(out / "buffer")
    if not method.buffer or buffer is None:
        keys["buffer_data"] = None
    bdata.save(train_data, out / "train")
    keys["train_data"] = str(out / "train")
    return keys


def method_config(method: Method, base: dict, pairs, buffer, work_dir) -> train.TrainConfig:
    """The TrainConfig of ``method`` on the shared budget ``base`` (model, steps, batch, beta, ...)."""
    work = Path(work_dir)
    keys = prepare_data(method, pairs, buffer, work / "data")
    return train.TrainConfig.from_dict({**base, **keys, "output_dir": str(work / "run")}, where=method.name)


# ---------------------------------------------------------------------------------------------
# What a trained model prefers: implicit-reward margins on the original pairs
# ---------------------------------------------------------------------------------------------

COMBINATIONS = ("safe>safe", "safe>unsafe", "unsafe>safe", "unsafe>unsafe")


@torch.no_grad()
def implicit_margins(model_dir, ref_dir, pairs: datasets.Dataset, beta: float, max_length: int = 128) -> dict:
    """Mean beta * h per label combination of ``pairs`` (helpfulness order), h the log-ratio difference
    (log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) - log pi_ref(y_r)). The sign says which response
    of each combination the trained model has come to prefer over the reference."""
    from accelerate import Accelerator

    tok = models.load_tokenizer(model_dir)
    cfg = train.TrainConfig(model=str(model_dir), output_dir="-", train_data="-", max_length=max_length)
    items, _ = train.tokenize(pairs.to_list(), tok, cfg, "preference")
    acc = Accelerator(cpu=True)
    logps = {
        name: train.reference_logps(models.load_model(path), items, 64, acc, tok.pad_token_id, desc=name)
        for name, path in (("policy", model_dir), ("reference", ref_dir))
    }
    h = (logps["policy"][:, 0] - logps["reference"][:, 0]) - (logps["policy"][:, 1] - logps["reference"][:, 1])
    combo = [f"{'safe' if s[0] else 'unsafe'}>{'safe' if s[1] else 'unsafe'}" for s in (it["safe"] for it in items)]
    out = {}
    for name in COMBINATIONS:
        sel = torch.tensor([c == name for c in combo])
        if sel.any():
            out[name] = float(beta * h[sel].mean())
    return out


# ---------------------------------------------------------------------------------------------
# The red-teaming setting: the model's own generations on harmful prompts, judged
# ---------------------------------------------------------------------------------------------


def red_team_data(model_dir, n_prompts: int, samples: int = 2, seed: int = 0, temperature: float = 1.0):
    """BFPO pairs from the model's own answers to harmful (and scary-but-benign) SafeHelp prompts,
    labelled by the gold judge: the scaled-down version of the paper's ~1.5K red-teaming pairs.

    Returns (pairs, records); records keep every generation for inspection.
    """
    import random

    rng = random.Random(f"red-team-{seed}")
    topics = [t for t in tw.TOPICS if t.kind in ("harmful", "scary")]
    prompts = [tw.prompt(rng.choice(topics), rng) for _ in range(n_prompts)]
    model, tok = models.load_model(model_dir), models.load_tokenizer(model_dir)
    gens = models.generate(model, tok, prompts, samples, temperature=temperature, seed=seed)
    records = [{"prompt": p, "responses": g} for p, g in zip(prompts, gens, strict=True) if all(x.strip() for x in g)]
    pairs = bdata.red_team_pairs(records, tw.judge_scores, where=f"generations of {model_dir}")
    return pairs, records


# ---------------------------------------------------------------------------------------------
# Running many trainings, two at a time on two cores
# ---------------------------------------------------------------------------------------------


def _command(module: str, args: list[str], config: dict, path: Path) -> list[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return [sys.executable, "-m", module, *args, "--config", str(path)]


def run_jobs(jobs: list[tuple[str, list[str]]], parallel: int = 2) -> list[str]:
    """Run ``(name, command)`` jobs ``parallel`` at a time; a failure raises with the job's log tail."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}

    def one(job):
        name, cmd = job
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise RuntimeError(f"{name} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        return name

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, jobs))


def train_job(name: str, cfg: train.TrainConfig) -> tuple[str, list[str]] | None:
    """A job for :func:`run_jobs`, or None when the run is already complete."""
    if train.completed(cfg.output_dir, cfg) is not None:
        return None
    values = cfg.to_dict() | {"num_threads": 1, "progress": False}
    return name, _command("bfpo.train", [], values, Path(cfg.output_dir) / "train_config.yaml")


def safe_rlhf_job(name: str, stage: str, cfg) -> tuple[str, list[str]]:
    values = dataclasses.asdict(cfg) | {"num_threads": 1, "progress": False}
    return name, _command("bfpo.safe_rlhf", [stage], values, Path(cfg.output_dir) / f"{stage}_config.yaml")


def _safe_rlhf_entry(name: str, label: str, stage: str, cfg) -> tuple:
    """A stage entry (name, run dir, job); the job is None when the run finished with this config."""
    done = safe_rlhf.finished(cfg, f"{stage}_summary.json") is not None
    return name, cfg.output_dir, None if done else safe_rlhf_job(label, stage, cfg)


def summary_of(run_dir) -> dict:
    """The summary a finished run left: train_summary.json, ppo_summary.json or score_summary.json."""
    for name in ("train_summary.json", "ppo_summary.json", "score_summary.json"):
        p = Path(run_dir) / name
        if p.is_file():
            return json.loads(p.read_text())
    raise FileNotFoundError(f"{run_dir}: no finished run (no *_summary.json)")


# ---------------------------------------------------------------------------------------------
# The whole comparison: every method on one budget, several seeds, judged
# ---------------------------------------------------------------------------------------------


@dataclass
class Budget:
    """What every method gets: the same start, data, steps, batch and learning rate."""

    steps: int = 200
    batch_size: int = 16
    learning_rate: float = 5e-4
    beta: float = 0.1
    buffer_ratio: float = 0.25
    max_length: int = 128
    # Safe RLHF: reward and cost model steps, PPO-Lagrangian iterations (each one rollout batch)
    score_steps: int = 200
    score_learning_rate: float = 1e-3
    ppo_iterations: int = 150
    ppo_actor_lr: float = 2e-5
    ppo_critic_lr: float = 1e-4
    ppo_max_new_tokens: int = 32
    ppo_prompts: str = "safety"  # "safety": the harmful and scary prompts (Safe RLHF's PPO prompts are safety
    # prompts, PKU-SafeRLHF's); "all": every prompt of the pairs
    # the red-teaming setting: prompts the SFT model answers twice, judged into pairs
    red_team_prompts: int = 400


def ppo_prompts(pairs: datasets.Dataset, which: str) -> datasets.Dataset:
    """The distinct prompts of ``pairs`` for PPO rollouts: all, or only SafeHelp's harmful and scary ones."""
    if which not in ("safety", "all"):
        raise ValueError(f"ppo_prompts: expected 'safety' or 'all', got {which!r}")
    prompts = sorted(set(pairs["prompt"]))
    if which == "safety":
        prompts = [p for p in prompts if tw.topic_of(p).kind in ("harmful", "scary")]
    return datasets.Dataset.from_dict({"prompt": prompts})


def suite_jobs(
    sft_model, pairs_dir, buffer_dir, out_dir, methods: list[str], seeds: list[int], budget: Budget
) -> dict[str, list]:
    """The runs of the comparison, grouped into stages that must run one after another:
    ``{"stage": [(name, run_dir, job or None), ...]}``; a job is None when its run is complete."""
    out = Path(out_dir)
    pairs, buffer = bdata.load(pairs_dir), bdata.load(buffer_dir)
    stages: dict[str, list] = {"train": [], "score": [], "ppo": []}
    base = dict(
        model=str(sft_model),
        beta=budget.beta,
        learning_rate=budget.learning_rate,
        per_device_batch_size=budget.batch_size,
        max_steps=budget.steps,
        max_length=budget.max_length,
        buffer_ratio=budget.buffer_ratio,
        log_every=5,
        ref_cache_dir=str(out / "ref_cache"),
    )
    for name in methods:
        if name == "safe_rlhf":
            for kind in ("reward", "cost"):
                cfg = safe_rlhf.ScoreConfig(
                    model=str(sft_model),
                    output_dir=str(out / "safe_rlhf" / f"{kind}_model"),
                    train_data=str(pairs_dir),
                    kind=kind,
                    learning_rate=budget.score_learning_rate,
                    max_steps=budget.score_steps,
                    per_device_batch_size=budget.batch_size,
                    max_length=budget.max_length,
                )
                stages["score"].append(_safe_rlhf_entry(f"{kind}_model", f"{kind} model", "score", cfg))
            prompts_dir = out / "safe_rlhf" / f"prompts_{budget.ppo_prompts}"
            if not prompts_dir.is_dir():
                bdata.save(ppo_prompts(pairs, budget.ppo_prompts), prompts_dir)
            for seed in seeds:
                cfg = safe_rlhf.PPOConfig(
                    actor=str(sft_model),
                    reward_model=str(out / "safe_rlhf" / "reward_model" / "model"),
                    cost_model=str(out / "safe_rlhf" / "cost_model" / "model"),
                    output_dir=str(out / f"safe_rlhf/seed{seed}"),
                    prompts=str(prompts_dir),
                    iterations=budget.ppo_iterations,
                    rollout_batch_size=budget.batch_size,
                    max_new_tokens=budget.ppo_max_new_tokens,
                    actor_lr=budget.ppo_actor_lr,
                    critic_lr=budget.ppo_critic_lr,
                    seed=seed,
                    save_every=25,
                )
                stages["ppo"].append(_safe_rlhf_entry(f"safe_rlhf/seed{seed}", f"safe_rlhf seed {seed}", "ppo", cfg))
            continue
        if name == "bfpo_red_team":
            rt_dir = out / "red_team_data"
            if not (rt_dir / "pairs").is_dir():
                rt_pairs, records = red_team_data(sft_model, budget.red_team_prompts, seed=0)
                bdata.save(rt_pairs, rt_dir / "pairs")
                write_json(rt_dir / "generations.json", records)
            method, method_pairs = METHODS["bfpo"], bdata.load(rt_dir / "pairs")
        else:
            method, method_pairs = get_method(name), pairs
        for seed in seeds:
            work = out / name / f"seed{seed}"
            cfg = method_config(method, {**base, "seed": seed}, method_pairs, buffer, work)
            stages["train"].append((f"{name}/seed{seed}", cfg.output_dir, train_job(f"{name} seed {seed}", cfg)))
    return stages


def run_suite(stages: dict[str, list], parallel: int = 2, progress: bool = True) -> None:
    """Run the stages in order (reward/cost models before PPO), ``parallel`` jobs at a time."""
    from tqdm.auto import tqdm

    for stage in ("train", "score", "ppo"):
        jobs = [job for _, _, job in stages.get(stage, []) if job is not None]
        if not jobs:
            continue
        bar = tqdm(total=len(jobs), desc=f"{stage} runs", disable=not progress)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            for _ in pool.map(lambda j: run_jobs([j], parallel=1), jobs):
                bar.update(1)
        bar.close()


JUDGE_VERSION = 2
"""Bumped when what :func:`judge_run` keeps changes (2: per-prompt rows for the bootstrap)."""


def judge_run(model_dir, samples_per_prompt: int, seed: int = 0) -> dict[str, list[dict]]:
    """Gold-judge scores of a model on training and held-out wordings: ``summary`` (one tidy row
    per wording) and ``prompts`` (one row per wording and prompt, see ``toyworld.per_prompt``)."""
    model, tok = models.load_model(model_dir), models.load_tokenizer(model_dir)
    summaries, prompts = [], []
    for held_out in (False, True):
        wording = "held-out" if held_out else "training"
        summary, judged = tw.evaluate_model(
            model, tok, samples_per_prompt=samples_per_prompt, held_out=held_out, seed=seed
        )
        summaries.append({"wording": wording, **summary})
        prompts += [{"wording": wording, **r} for r in tw.per_prompt(judged)]
    return {"summary": summaries, "prompts": prompts}


def run_flops(run_dir) -> float:
    """Training FLOPs of a finished run beyond the shared SFT; a Safe RLHF PPO run also counts the
    reward and cost models it needed (found beside it)."""
    total = summary_of(run_dir)["flops"]["total"]
    if (Path(run_dir) / "ppo_summary.json").is_file():
        cfg = json.loads((Path(run_dir) / "ppo_summary.json").read_text())["config"]
        for path in (cfg["reward_model"], cfg["cost_model"]):
            total += summary_of(Path(path).parent)["flops"]["total"]
    return total


def judge_runs(
    runs: list[tuple[str, int, str]], samples_per_prompt: int, cache_path
) -> tuple[list[dict], list[dict]]:
    """Tidy rows (method, seed, wording, gold-judge numbers) for ``(method, seed, model_dir)`` runs,
    and the per-prompt rows behind them (method, seed, wording, prompt_id, kind, judged means).

    Judged models are cached in ``cache_path`` by (method, seed, model weights, samples), so a re-run
    judges only what changed.
    """
    from tqdm.auto import tqdm

    cache_path = Path(cache_path)
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    rows, prompt_rows = [], []
    for method, seed, model_dir in tqdm(runs, desc="judging"):
        fingerprint = train.model_fingerprint(str(model_dir), None)[:16]
        key = f"v{JUDGE_VERSION}|{method}|{seed}|{samples_per_prompt}|{fingerprint}"
        if key not in cache:
            cache[key] = judge_run(model_dir, samples_per_prompt, seed=seed)
            write_json(cache_path, cache)
        rows += [{"method": method, "seed": seed, **r} for r in cache[key]["summary"]]
        prompt_rows += [{"method": method, "seed": seed, **r} for r in cache[key]["prompts"]]
    return rows, prompt_rows
