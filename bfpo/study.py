"""The SafeHelp study: every method from the same SFT start, tuned on validation wordings, trained
with several seeds, judged on test wordings, with compute curves.

    runs = suite_jobs(starts, pairs_dir, buffer_dir, out_dir, methods, seeds, budget, configs)
    run_suite(runs)                                   # two single-thread trainings at a time
    rows, prompt_rows = judge_runs(judgeable(runs), samples, cache, splits=("validation",))

A run is one (method, grid point, seed). ``starts`` maps each seed to its SFT model: one shared
model, or one SFT run per seed (the ``cpu`` profile), so that the spread over seeds also covers
the start. The hyper-parameter choice itself is :mod:`bfpo.selection`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd
import yaml

from bfpo import baselines, cards, devices, labels, models, ppo, profiles, runs, safe_rlhf, train
from bfpo import data as bdata
from bfpo import jobs as bjobs
from bfpo import toyworld as tw
from bfpo.errors import BadInput
from bfpo.io import read_cache, write_json, write_text
from bfpo.runs import note

# ---------------------------------------------------------------------------------------------
# Running many trainings, two at a time on two cores
# ---------------------------------------------------------------------------------------------


def _command(module: str, args: list[str], config: dict, path: Path) -> list[str]:
    write_text(path, yaml.safe_dump(config))
    return [sys.executable, "-m", module, *args, "--config", str(path)]


def run_jobs(jobs: list[tuple[str, list[str]]], parallel: int = 2) -> list[str]:
    """Run ``(name, command)`` jobs ``parallel`` at a time (:mod:`bfpo.jobs`: long-lived worker
    processes, one thread each); a failure raises with the job's log tail."""
    return list(bjobs.run(jobs, parallel))


def train_job(name: str, cfg: train.TrainConfig) -> tuple[str, list[str]] | None:
    """A job for :func:`run_jobs`, or None when the run is already complete."""
    done = train.completed(cfg.output_dir, cfg) is not None
    runs.note("training", cfg.output_dir, done)
    if done:
        return None
    values = cfg.to_dict() | {"num_threads": 1, "progress": False}
    return name, _command("bfpo.train", [], values, Path(cfg.output_dir) / "train_config.yaml")


def safe_rlhf_job(name: str, stage: str, cfg) -> tuple[str, list[str]] | None:
    """A Safe RLHF ``score`` or ``ppo`` job, or None when the run finished with this config."""
    done = runs.finished(cfg, f"{stage}_summary.json") is not None
    runs.note("score model" if stage == "score" else "PPO run", cfg.output_dir, done)
    if done:
        return None
    values = dataclasses.asdict(cfg) | {"num_threads": 1, "progress": False}
    return name, _command("bfpo.safe_rlhf", [stage], values, Path(cfg.output_dir) / f"{stage}_config.yaml")


# ---------------------------------------------------------------------------------------------
# The budget and the runs of a study
# ---------------------------------------------------------------------------------------------


@dataclass
class Budget:
    """What every method gets: the same start, data, steps, batch; learning rate and beta are tuned
    per method over a grid of the same size (:mod:`bfpo.selection`)."""

    steps: int = 200
    batch_size: int = 16
    learning_rate: float = 5e-4
    beta: float = 0.1
    alpha: float = labels.ALPHA  # BFPO's constants: the settings file's training.bfpo, as notebook 03's BFPO run
    b1: float = labels.B1
    buffer_ratio: float = 0.25
    max_length: int = 128
    # Safe RLHF: reward and cost model steps, PPO-Lagrangian iterations (each one rollout batch)
    score_steps: int = 200
    score_learning_rate: float = 1e-3
    ppo_iterations: int = 150
    # the official PPOConfig defaults elsewhere (configs/official_ppo_lag.yaml); the learning rates are scaled
    # to a 0.8M-parameter model, the critic's kept below the actor's as the official pair is (1e-5 / 5e-6)
    ppo_actor_lr: float = 2e-5
    ppo_critic_lr: float = 1e-5
    ppo_max_new_tokens: int = 32
    # d = J_C(start) - m: the SFT start violates the constraint, as Safe RLHF's start does (its official d = 0
    # lies above the SafeHelp start's mean cost, so it never binds); None: the absolute ppo_cost_threshold
    ppo_cost_margin: float | None = 1.0
    ppo_cost_threshold: float = 0.0  # d when ppo_cost_margin is None
    ppo_cost_over: str = "all"  # J_C over every rollout prompt ("all", as the official code) or "harmful" ones
    ppo_lambda: float | None = None  # a fixed multiplier (lambda_lr 0); None: learned from lambda_init 1
    ppo_ptx: bool = True  # the PTX term (coefficient 16) on the SFT demonstrations of benign topics, the SafeHelp
    # analogue of the official PTX set (Alpaca: instruction data without harmful prompts)
    ppo_prompts: str = "safety"  # "safety": the harmful and scary prompts (Safe RLHF's PPO prompts are safety
    # prompts, PKU-SafeRLHF's); "all": every prompt of the pairs
    # the red-teaming setting: prompts the SFT model answers twice, judged into pairs
    red_team_prompts: int = 400
    # model snapshots along the runs of these methods, for the compute curves (0: none)
    snapshots: int = 0
    snapshot_methods: tuple[str, ...] = ("bfpo", "safe_rlhf", "safedpo")
    # precision of the trainings and PPO (notebook 03's SFT and BFPO too; the reward and cost models stay
    # fp32, see ScoreConfig): "auto" (bf16 where this machine's probe finds native bf16 matmuls,
    # bfpo.precision) or "no" (fp32, bit for bit on one machine)
    mixed_precision: str = "no"
    # the trainings' forward passes packed without padding (TrainConfig.padding_free, on by default there):
    # the same log-probs within float tolerance, not bit for bit. Off in both profiles: their committed
    # results were made padded, and on the 0.8M-parameter study model packing gained nothing measurable
    # (200 BFPO steps on one thread in bf16: 11.1-11.9 s packed, 10.5-12.6 s padded; it pays from the
    # 5.8M model of benchmarks/ up, 1.29x there)
    padding_free: bool = False

    def __post_init__(self):
        if self.ppo_cost_margin is not None and not _is_number(self.ppo_cost_margin, positive=True):
            raise BadInput(
                f"budget ppo_cost_margin: must be a number > 0 (d = J_C(start) - m), got {self.ppo_cost_margin!r}"
            )
        if not _is_number(self.ppo_cost_threshold):
            raise BadInput(f"budget ppo_cost_threshold: must be a number, got {self.ppo_cost_threshold!r}")
        if self.ppo_lambda is not None and not (_is_number(self.ppo_lambda) and self.ppo_lambda >= 0):
            raise BadInput(f"budget ppo_lambda: a fixed lambda must be a number >= 0, got {self.ppo_lambda!r}")

    def with_overrides(self, overrides: dict, where: str) -> Budget:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"{where}: unknown budget key(s) {unknown}")
        return dataclasses.replace(self, **overrides)


def _is_number(value, positive: bool = False) -> bool:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    return ok and (value > 0 if positive else True)


@dataclass(frozen=True)
class Run:
    """One training of a study: a method at one grid point (``config``) with one seed."""

    stage: str  # "train", "score" or "ppo" (stages run in this order)
    method: str
    config: str
    seed: int | None  # None for reward and cost models (shared by the seeds of a start)
    run_dir: str
    job: tuple | None  # None when the run is already complete

    @property
    def model(self) -> str:
        return f"{self.run_dir}/model"


def ppo_prompts(pairs: datasets.Dataset, which: str) -> datasets.Dataset:
    """The distinct prompts of ``pairs`` for PPO rollouts: all, or only SafeHelp's harmful and scary ones;
    each marked ``harmful`` (for ``cost_over: harmful``)."""
    if which not in ("safety", "all"):
        raise ValueError(f"ppo_prompts: expected 'safety' or 'all', got {which!r}")
    prompts = sorted(set(pairs["prompt"]))
    if which == "safety":
        prompts = [p for p in prompts if tw.topic_of(p).kind in ("harmful", "scary")]
    return datasets.Dataset.from_dict(
        {"prompt": prompts, "harmful": [tw.topic_of(p).kind == "harmful" for p in prompts]}
    )


def ptx_data(sft: datasets.Dataset) -> datasets.Dataset:
    """The PTX set of the study: the SFT demonstrations of benign topics (no harmful or scary prompt), as the
    official PTX set (Alpaca) is instruction data without harmful prompts."""
    keep = [i for i, p in enumerate(sft["prompt"]) if tw.topic_of(p).kind == "benign"]
    return sft.select(keep).select_columns(["prompt", "response"])


def start_tags(starts: dict[int, str]) -> dict[int, str]:
    """A folder name per seed for its SFT start: ``start0``, ``start1``, ... in order of first use."""
    names: dict[str, str] = {}
    for seed in sorted(starts):
        names.setdefault(str(starts[seed]), f"start{len(names)}")
    return {seed: names[str(starts[seed])] for seed in starts}


def _score_runs(start: str, tag: str, pairs_dir, out: Path, budget: Budget) -> list[Run]:
    runs = []
    for kind in ("reward", "cost"):
        cfg = safe_rlhf.ScoreConfig(
            model=str(start),
            output_dir=str(out / "safe_rlhf" / tag / f"{kind}_model"),
            train_data=str(pairs_dir),
            kind=kind,
            learning_rate=budget.score_learning_rate,
            max_steps=budget.score_steps,
            per_device_batch_size=budget.batch_size,
            max_length=budget.max_length,
        )
        runs.append(
            Run("score", f"{kind}_model", tag, None, cfg.output_dir, safe_rlhf_job(f"{kind} model", "score", cfg))
        )
    return runs


def _ppo_run(
    start: str, tag: str, config: str, seed: int, pairs, sft_dir, out: Path, budget: Budget, method: str = "safe_rlhf"
) -> Run:
    prompts_dir = out / "safe_rlhf" / f"prompts_{budget.ppo_prompts}"
    if not prompts_dir.is_dir():
        bdata.save(ppo_prompts(pairs, budget.ppo_prompts), prompts_dir)
    ptx_dir = out / "safe_rlhf" / "ptx_benign_sft"
    if budget.ppo_ptx and not ptx_dir.is_dir():
        bdata.save(ptx_data(bdata.load(sft_dir)), ptx_dir)
    every = (
        budget.ppo_iterations // budget.snapshots if budget.snapshots and "safe_rlhf" in budget.snapshot_methods else 0
    )
    cfg = ppo.PPOConfig(
        actor=str(start),
        reward_model=str(out / "safe_rlhf" / tag / "reward_model" / "model"),
        cost_model=str(out / "safe_rlhf" / tag / "cost_model" / "model"),
        output_dir=str(out / method / config / f"seed{seed}"),
        prompts=str(prompts_dir),
        ptx_data=str(ptx_dir) if budget.ppo_ptx else None,
        iterations=budget.ppo_iterations,
        rollout_batch_size=budget.batch_size,
        max_new_tokens=budget.ppo_max_new_tokens,
        actor_lr=budget.ppo_actor_lr,
        critic_lr=budget.ppo_critic_lr,
        cost_threshold=budget.ppo_cost_threshold,
        cost_threshold_margin=budget.ppo_cost_margin,
        cost_over=budget.ppo_cost_over,
        # a fixed multiplier: lambda_lr 0 at the given lambda; else PPOConfig's (official) learned one
        **({"lambda_init": budget.ppo_lambda, "lambda_lr": 0.0} if budget.ppo_lambda is not None else {}),
        seed=seed,
        mixed_precision=budget.mixed_precision,
        save_every=25,
        snapshot_every=every,
    )
    return Run("ppo", method, config, seed, cfg.output_dir, safe_rlhf_job(f"{method} {config} seed {seed}", "ppo", cfg))


def _red_team_pairs(start: str, tag: str, out: Path, budget: Budget) -> datasets.Dataset:
    rt_dir = out / "red_team_data" / tag
    if not (rt_dir / "pairs").is_dir():
        rt_pairs, records = baselines.red_team_data(start, budget.red_team_prompts, seed=0)
        bdata.save(rt_pairs, rt_dir / "pairs")
        write_json(rt_dir / "generations.json", records)
    return bdata.load(rt_dir / "pairs")


def suite_jobs(
    starts: dict[int, str],
    pairs_dir,
    buffer_dir,
    out_dir,
    methods: list[str],
    seeds: list[int],
    budget: Budget,
    configs: dict[str, dict[str, dict]] | None = None,
    sft_dir=None,
) -> list[Run]:
    """Every run of the study: each method at each of its grid points (``configs``: method ->
    config name -> budget overrides; default one config ``"default"``) with each seed, from the SFT
    start of that seed. Runs live in ``out_dir/<method>/<config>/seed<k>``; reward and cost models
    (one pair per start) in ``out_dir/safe_rlhf/<start>/``. A finished run has ``job`` None.
    ``safe_rlhf_lambda`` is PPO-Lagrangian with a fixed multiplier (its grid: ``ppo_lambda``), on the
    reward and cost models of its start. ``sft_dir``: the SFT demonstrations (PTX), by default
    ``sft`` beside ``pairs_dir``."""
    sft_dir = Path(sft_dir) if sft_dir is not None else Path(pairs_dir).parent / "sft"
    out = Path(out_dir)
    missing = [s for s in seeds if s not in starts]
    if missing:
        raise ValueError(f"no SFT start for seed(s) {missing}")
    tags = start_tags(starts)
    pairs, buffer = bdata.load(pairs_dir), bdata.load(buffer_dir)
    runs: list[Run] = []
    for tag in sorted({tags[s] for s in seeds}):
        if {"safe_rlhf", LAMBDA_SWEEP} & set(methods):
            start = next(starts[s] for s in seeds if tags[s] == tag)
            runs += _score_runs(start, tag, pairs_dir, out, budget)
    for name in methods:
        for config, overrides in (configs or {}).get(name, {"default": {}}).items():
            b = budget.with_overrides(overrides, f"{name} {config}")
            for seed in seeds:
                start, tag = str(starts[seed]), tags[seed]
                if name in ("safe_rlhf", LAMBDA_SWEEP):
                    runs.append(_ppo_run(start, tag, config, seed, pairs, sft_dir, out, b, method=name))
                    continue
                method = baselines.METHODS["bfpo"] if name == "bfpo_red_team" else baselines.get_method(name)
                method_pairs = _red_team_pairs(start, tag, out, b) if name == "bfpo_red_team" else pairs
                base = dict(
                    model=start,
                    beta=b.beta,
                    alpha=b.alpha,
                    b1=b.b1,
                    learning_rate=b.learning_rate,
                    per_device_batch_size=b.batch_size,
                    max_steps=b.steps,
                    max_length=b.max_length,
                    buffer_ratio=b.buffer_ratio,
                    log_every=5,
                    mixed_precision=b.mixed_precision,
                    padding_free=b.padding_free,
                    ref_cache_dir=str(out / "ref_cache"),
                    seed=seed,
                    snapshot_every=b.steps // b.snapshots if b.snapshots and name in b.snapshot_methods else 0,
                )
                work = out / name / config / f"seed{seed}"
                cfg = baselines.method_config(method, base, method_pairs, buffer, work)
                job = train_job(f"{name} {config} seed {seed}", cfg)
                runs.append(Run("train", name, config, seed, cfg.output_dir, job))
    return runs


LAMBDA_SWEEP = "safe_rlhf_lambda"
"""Safe RLHF with a fixed multiplier: its trade-off curve, one point per lambda (not a tuned method)."""


def lambda_sweep(lambdas, safe_rlhf_overrides: dict) -> dict[str, dict]:
    """The fixed-lambda runs of the trade-off curve: config name -> budget overrides, each the chosen Safe
    RLHF configuration with ``ppo_lambda`` fixed. A negative lambda is refused."""
    bad = [lam for lam in lambdas if not (_is_number(lam) and lam >= 0)]
    if bad or not lambdas:
        raise BadInput(f"fixed-lambda sweep: every lambda must be a number >= 0, got {list(lambdas)}")
    from bfpo import selection

    return {
        selection.point_id({"ppo_lambda": float(lam)}): {**safe_rlhf_overrides, "ppo_lambda": float(lam)}
        for lam in lambdas
    }


def sweep_curve(sweep: pd.DataFrame, wording: str) -> pd.DataFrame:
    """Safe RLHF's trade-off curve on one wording set: per fixed lambda, the mean over seeds of each
    gold-judge rate, with the number of seeds; empty when there was no sweep."""
    metrics = ["helpfulness", "harmlessness", "over_refusal"]
    if not len(sweep):
        return pd.DataFrame(columns=["lambda", *metrics, "seeds"])
    part = sweep[sweep["wording"] == wording]
    curve = part.groupby("lambda")[metrics].mean()
    return curve.assign(seeds=part.groupby("lambda")["seed"].nunique()).reset_index()


def run_suite(runs: list[Run], parallel: int = 2, progress: bool = True) -> None:
    """Run the unfinished runs, ``parallel`` at a time: the trainings and the reward and cost models,
    then PPO-Lagrangian. A run listed twice (the report seeds' and the lambda sweep's runs share each
    start's reward and cost models) is run once: two workers on one folder would collide on its lock."""
    from tqdm.auto import tqdm

    for stages in (("train", "score"), ("ppo",)):  # PPO needs the reward and cost models
        unique = {tuple(r.job[1]): r.job for r in runs if r.stage in stages and r.job is not None}
        jobs = list(unique.values())
        if not jobs:
            continue
        bar = tqdm(total=len(jobs), desc=f"{' + '.join(stages)} runs", disable=not progress)
        for _ in bjobs.run(jobs, parallel):
            bar.update(1)
        bar.close()


def load(model_dir, device: str = "auto") -> tuple:
    """``(model, tokenizer)`` saved in ``model_dir``, the model on ``device`` (auto: accelerate's choice)."""
    return models.load_model(model_dir, device=devices.resolve(device)), models.load_tokenizer(model_dir)


def policies(runs: list[Run]) -> list[Run]:
    """The runs that end in a policy to judge (not the reward and cost models)."""
    return [r for r in runs if r.stage != "score"]


# ---------------------------------------------------------------------------------------------
# Judging, compute and curves
# ---------------------------------------------------------------------------------------------

JUDGE_VERSION = 3
"""Bumped when what :func:`judge_run` keeps changes (2: per-prompt rows; 3: wording splits)."""


def judge_run(
    model_dir,
    samples_per_prompt: int,
    seed: int,
    splits: tuple[str, ...],
    training_wordings: int | None = None,
    test_wordings: int | None = None,
) -> dict[str, list[dict]]:
    """Gold-judge scores of a model on the wordings of each of ``splits`` (of the training wordings,
    the first ``training_wordings`` per topic): ``summary`` (a tidy row per wording set) and
    ``prompts`` (a row per wording set and prompt, see ``toyworld.per_prompt``)."""
    model, tok = load(model_dir)  # on the run's device: accelerate's choice
    summaries, prompts = [], []
    for split in splits:
        per_topic = {"training": training_wordings, "test": test_wordings}.get(split)
        summary, judged = tw.evaluate_model(
            model, tok, samples_per_prompt=samples_per_prompt, split=split, seed=seed, per_topic=per_topic
        )
        summaries.append({"wording": split, **summary})
        prompts += [{"wording": split, **r} for r in tw.per_prompt(judged)]
    return {"summary": summaries, "prompts": prompts}


def judge_runs(
    runs: list[tuple[str, str, int, str]],
    samples_per_prompt: int,
    cache_dir,
    splits: tuple[str, ...],
    training_wordings: int | None = None,
    parallel: int = 2,
    test_wordings: int | None = None,
) -> tuple[list[dict], list[dict]]:
    """Tidy rows (method, config, seed, wording, gold-judge numbers) for ``(method, config, seed,
    model_dir)`` runs on the wording sets ``splits``, and the per-prompt rows behind them.

    Models are judged ``parallel`` at a time in the study's worker processes (:mod:`bfpo.jobs`, one
    thread each) and cached in the folder ``cache_dir``, one small file per (method, config, seed,
    weights, samples, splits) written as soon as that model is judged, so a re-run (or a run killed
    half-way) judges only what is missing, and the cost of caching does not grow with the study.
    """
    from tqdm.auto import tqdm

    for split in splits:
        tw.check_split(split)
    cache_dir = Path(cache_dir)
    what = f"{samples_per_prompt}|{'+'.join(splits)}|{training_wordings}"
    if test_wordings and test_wordings < len(tw.TEST_TEMPLATES):  # all of them: the key as it always was
        what += f"|test{test_wordings}"
    keys = [
        f"v{JUDGE_VERSION}|{method}|{config}|{seed}|{what}|{train.model_fingerprint(str(model_dir), None)[:16]}"
        for method, config, seed, model_dir in runs
    ]
    cache = {key: found for key in keys if (found := _cached_judgement(cache_dir, key)) is not None}
    todo = [(key, run) for key, run in zip(keys, runs, strict=True) if key not in cache]
    for key, (_, _, _, model_dir) in zip(keys, runs, strict=True):
        note("judgement", model_dir, key in cache)
    calls = [
        (model_dir, samples_per_prompt, seed, splits, training_wordings, test_wordings)
        for _, (_, _, seed, model_dir) in todo
    ]
    judged = bjobs.starmap(judge_run, calls, parallel)
    for (key, _), result in tqdm(
        zip(todo, judged, strict=False), total=len(todo), desc=f"judging ({', '.join(splits)})"
    ):
        cache[key] = result
        write_text(_judgement_path(cache_dir, key), json.dumps({"key": key, "result": result}) + "\n")
    rows, prompt_rows = [], []
    for key, (method, config, seed, _) in zip(keys, runs, strict=True):
        ids = {"method": method, "config": config, "seed": seed}
        rows += [{**ids, **r} for r in cache[key]["summary"]]
        prompt_rows += [{**ids, **r} for r in cache[key]["prompts"]]
    return rows, prompt_rows


def _judgement_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.json"


def _cached_judgement(cache_dir: Path, key: str) -> dict | None:
    """The cached judgement of ``key``, or None (missing; a torn file is named, removed and judged again)."""
    found = read_cache(_judgement_path(cache_dir, key), "judgement")
    return found["result"] if isinstance(found, dict) and found.get("key") == key else None


# ---------------------------------------------------------------------------------------------
# The profiles of the study
# ---------------------------------------------------------------------------------------------


@dataclass
class StudyProfile:
    """How big a study is. ``grids``: method -> knob -> values (``"*"`` for every other method);
    every method gets the same number of grid points (:func:`bfpo.selection.grids`).

    ``seeds`` are the report seeds, judged on test wordings; ``tuning_seeds`` choose the grid point
    on validation wordings and are never reported, so the two must not overlap. The report seeds are
    split into two fixed halves (:meth:`halves`, in order: first half A, second half B) whose verdicts
    must agree before a claim counts as replicated (:func:`bfpo.report.replicate`)."""

    seeds: list[int]
    tuning_seeds: list[int]  # trained at every grid point; judged on validation wordings only
    sft_per_seed: bool  # one SFT run per seed (the spread then covers the start), or one shared start
    budget: Budget
    grids: dict[str, dict[str, tuple]]
    eval_samples: int = 2  # sampled answers per prompt
    training_wordings: int = 2  # training wordings judged per topic (of 18), for the training-wording rows
    sft_steps: int = 900  # every SFT start (the settings file's training.sft.steps, notebook 03's too)
    methods: tuple[str, ...] | None = None  # notebook 04's methods (None: all but the continuous-label one)
    parallel: int = 2  # trainings and judged models at once, in worker processes of one thread each
    # Safe RLHF's trade-off curve: PPO-Lagrangian with lambda fixed at each value (lambda_lr 0), from the start
    # of each of the first ``lambda_sweep_seeds`` report seeds (None: every one)
    lambda_sweep: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0)
    lambda_sweep_seeds: int | None = None
    # declared: the least number of harmful test prompts harmlessness rests on; the study judges as many test
    # wordings per topic as it takes (test_wordings), all 12 for 200
    harmful_test_prompts: int = 200

    def __post_init__(self):
        check_seeds(self.seeds, self.tuning_seeds)
        topics = sum(t.kind == "harmful" for t in tw.TOPICS)
        available = topics * len(tw.TEST_TEMPLATES)
        if available < self.harmful_test_prompts:
            raise BadInput(
                f"study harmful_test_prompts: the SafeHelp world has {available} harmful test prompts ({topics} "
                f"harmful topics x {len(tw.TEST_TEMPLATES)} test wordings), fewer than the {self.harmful_test_prompts} "
                "declared"
            )

    @classmethod
    def from_settings(cls, values: dict, sft_steps: int, where: str, bfpo: dict | None = None) -> StudyProfile:
        """The study section of a profile's settings file (``bfpo.profiles``), checked: unknown keys, and
        the budget's, are one line naming the file. BFPO's ``alpha`` and ``b1`` come from ``bfpo`` (the file's
        ``training.bfpo``, notebook 03's) unless the study's budget sets them."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"sft_steps"}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise BadInput(f"{where}: study: unknown key(s) {unknown} (known: {', '.join(sorted(fields))})")
        values = dict(values)
        budget = {k: v for k, v in (bfpo or {}).items() if k in ("alpha", "b1")} | values.pop("budget", {})
        budget_fields = {f.name for f in dataclasses.fields(Budget)}
        if sorted(set(budget) - budget_fields):
            raise BadInput(f"{where}: study.budget: unknown key(s) {sorted(set(budget) - budget_fields)}")
        for key in ("lambda_sweep", "methods", "snapshot_methods"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        grids = {m: {k: tuple(v) for k, v in knobs.items()} for m, knobs in values.pop("grids", {}).items()}
        try:
            return cls(**values, grids=grids, budget=Budget(**budget), sft_steps=sft_steps)
        except TypeError as e:
            raise BadInput(f"{where}: study: {e}") from e

    def test_wordings(self) -> int:
        """Test wordings judged per topic: the fewest that give ``harmful_test_prompts`` harmful prompts."""
        return -(-self.harmful_test_prompts // sum(t.kind == "harmful" for t in tw.TOPICS))

    def halves(self) -> dict[str, list[int]]:
        """The two fixed, disjoint halves of the report seeds: A the first half, B the rest."""
        return split_halves(self.seeds)


def split_halves(seeds: list[int]) -> dict[str, list[int]]:
    """``{"A": first half, "B": second half}`` of ``seeds`` in order (B gets the extra one when odd)."""
    seeds = list(seeds)
    return {"A": seeds[: len(seeds) // 2], "B": seeds[len(seeds) // 2 :]}


def check_seeds(seeds, tuning_seeds) -> None:
    """Refuse a study whose report and tuning seeds overlap, or whose halves have fewer than 2 seeds each."""
    seeds, tuning_seeds = list(seeds), list(tuning_seeds)
    for name, values in (("seeds", seeds), ("tuning_seeds", tuning_seeds)):
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise BadInput(f"study {name}: expected a non-empty list of integers >= 0, got {values!r}")
        if len(set(values)) != len(values):
            raise BadInput(f"study {name}: a seed appears twice in {values}")
    shared = sorted(set(seeds) & set(tuning_seeds))
    if shared:
        raise BadInput(
            f"study seeds: report seeds {seeds} and tuning seeds {tuning_seeds} share {shared}; a seed that "
            "chose the grid point cannot also report on it"
        )
    halves = split_halves(seeds)
    if min(len(h) for h in halves.values()) < 2:
        raise BadInput(
            f"study seeds: {len(seeds)} report seeds split into halves {halves['A']} and {halves['B']}; "
            "each half needs at least 2 seeds (at least 4 report seeds)"
        )


def _load_profiles(settings_file=None, only: str | None = None) -> dict[str, StudyProfile]:
    """The study profiles of the settings files (bfpo/settings/*.yaml; those whose study is not null)."""
    out = {}
    for name in [only] if only else profiles.NAMES:
        settings = profiles.load(name, settings_file if only else None)
        if settings["study"] is not None:
            where = str(settings_file or profiles.path(name))
            training = settings["training"]
            out[name] = StudyProfile.from_settings(
                settings["study"], training["sft"]["steps"], where, training.get("bfpo")
            )
    return out


PROFILES = _load_profiles()
"""``smoke``: CI, every figure in minutes; ``cpu``: the definitive CPU-scale study; ``gpu``: the same study
with the seeds and grid one GPU affords in 10 minutes (docs/gpu.md). Read from bfpo/settings/."""

GPU_PROFILES = ("gpu",)
"""Study profiles that run on a CUDA device only."""


ALL_METHODS = (*baselines.METHODS, "bfpo_red_team", "safe_rlhf")
"""Every method the study can run: the trainer's, BFPO on red-teaming pairs, and Safe RLHF."""


def default_methods() -> list[str]:
    """The study's methods unless a profile or the notebook names others: all but the continuous-label
    point-wise DPO (an ablation, added by name)."""
    return [m for m in ALL_METHODS if m != "pointwise_dpo_continuous"]


def profile_settings(profile: str, settings_file=None, **overrides) -> StudyProfile:
    """The study settings of ``profile`` (from ``settings_file``, a copy of its settings file, when given)
    with the given fields replaced (None leaves a field as it is); ``steps`` and ``ppo_iterations`` go to
    the budget."""
    if profile not in PROFILES:
        raise ValueError(f"profile: the SafeHelp study runs in {', '.join(PROFILES)}, not {profile!r}")
    settings = _load_profiles(settings_file, only=profile)[profile] if settings_file else PROFILES[profile]
    budget_keys = {k: overrides.pop(k) for k in ("steps", "ppo_iterations") if overrides.get(k) is not None}
    chosen = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(settings, budget=dataclasses.replace(settings.budget, **budget_keys), **chosen)


def sft_starts(sft_run, out_dir, seeds: list[int], per_seed: bool, steps: int, parallel: int = 2) -> dict[int, str]:
    """The SFT start of each seed. Shared: ``sft_run``'s model for every seed. Per seed: seed 0 is
    ``sft_run`` (notebook 03), every other seed trains the same SFT config from its own random
    initialisation and data order (same global batch, one process), in ``out_dir/sft_seed<k>``."""
    sft_run = Path(sft_run)
    if not per_seed:
        return {seed: str(sft_run / "model") for seed in seeds}
    saved = json.loads((sft_run / "config.json").read_text())
    saved.pop("trainer_version", None)
    base = train.TrainConfig.from_dict(saved, where=str(sft_run / "config.json"))
    global_batch = runs.summary_of(sft_run)["global_batch"]
    starts, jobs = {}, []
    for seed in seeds:
        if seed == base.seed:
            starts[seed] = str(sft_run / "model")
            continue
        work = Path(out_dir) / f"sft_seed{seed}"
        init = work / "init"
        if not (init / "config.json").is_file():
            tok = models.load_tokenizer(base.model)
            model = models.tiny_llama(tok, seed=seed)
            models.save(model, tok, init, cards.init_card(model.config.to_dict()))
        cfg = dataclasses.replace(
            base,
            model=str(init),
            output_dir=str(work / "run"),
            seed=seed,
            max_steps=steps,
            per_device_batch_size=global_batch,
            gradient_accumulation_steps=1,
        )
        job = train_job(f"sft seed {seed}", cfg)
        if job is not None:
            jobs.append(job)
        starts[seed] = str(work / "run" / "model")
    run_jobs(jobs, parallel)
    return starts


def tune(
    starts: dict[int, str],
    pairs_dir,
    buffer_dir,
    out_dir,
    grid: dict[str, dict[str, dict]],
    tuning_seeds: list[int],
    budget: Budget,
    samples_per_prompt: int,
    parallel: int = 2,
) -> tuple[dict[str, str], pd.DataFrame]:
    """Steps 2 and 3 of the protocol: train every grid point of every method with the tuning seeds,
    judge them on the **validation** wordings only, and select each method's configuration by the
    declared rule (:func:`bfpo.selection.select_all`). Returns (chosen config per method, table)."""
    from bfpo import selection

    runs = suite_jobs(starts, pairs_dir, buffer_dir, out_dir, list(grid), tuning_seeds, budget, grid)
    run_suite(runs, parallel=parallel)
    _, prompt_rows = judge_runs(
        [(r.method, r.config, r.seed, r.model) for r in policies(runs)],
        samples_per_prompt,
        Path(out_dir) / "judged",
        splits=(selection.SPLIT,),
        parallel=parallel,
    )
    return selection.select_all(pd.DataFrame(prompt_rows), grid)
