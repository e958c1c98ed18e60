"""The SafeHelp study protocol, one function per step of notebook 04 (docs/study.md).

The notebook stays a walk-through: each of its cells explains a step and calls one function here; the
work (which runs, which models, which tables) lives here, where tests reach it.

1. :func:`setup`: the profile's settings, folders and grid (:class:`Study`);
2. ``study.sft_starts`` and ``study.tune`` (steps 1-3 of the protocol);
3. :func:`train_final`: every report seed with the chosen point, and Safe RLHF's fixed-lambda sweep;
4. :func:`margins`: what each method learned to prefer (the implicit reward margin per label combination);
5. :func:`safe_rlhf_checks`: Safe RLHF's score models, cost calibration and whether its constraint binds;
6. :func:`judge_final`: every final model (and the sweep) judged on test wordings;
7. :func:`compute_curves`: harmlessness along the snapshots against training FLOPs.

The paper profile has no SafeHelp study: :func:`paper_runs` trains each method with the published
recipe on the real PKU-SafeRLHF pairs instead (notebook 04's last section).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd

from bfpo import baselines, curves, data, figures, labels, profiles, report, safe_rlhf, selection, study, train
from bfpo import ppo as ppo_lag
from bfpo import toyworld as tw
from bfpo.io import project_path, write_csv
from bfpo.runs import read_metrics

TITLES = {
    **{m.name: m.title for m in baselines.METHODS.values()},
    "bfpo_red_team": "BFPO (red-teaming)",
    "safe_rlhf": "Safe RLHF",
    "sft": "SFT start",
}
"""The name each method goes by in tables and figures."""


@dataclasses.dataclass
class Study:
    """Everything notebook 04's steps share: the profile, its settings ``P`` (None for the paper profile),
    the methods, folders, grid and the ``results`` dict that becomes ``results.json``."""

    profile: str
    methods: list[str]
    labeled: Path
    sft_run: Path
    out_dir: Path
    results: dict
    P: study.StudyProfile | None = None
    seeds: list[int] = dataclasses.field(default_factory=list)
    parallel: int = 1
    grid: dict = dataclasses.field(default_factory=dict)

    @property
    def budget(self) -> study.Budget:
        return self.P.budget

    @property
    def pairs_dir(self) -> Path:
        return self.labeled / "safehelp" / "pairs"

    @property
    def buffer_dir(self) -> Path:
        return self.labeled / "safehelp" / "buffer"

    def grid_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"method": m, "grid points": ", ".join(g)} for m, g in self.grid.items()])


def setup(profile: str, settings_file=None, output_dir=None, methods=None, parallel=None, **overrides) -> Study:
    """Check the notebook's parameters and resolve the profile's settings (``overrides``: seeds,
    tuning_seeds, steps, ppo_iterations, eval_samples, harmful_test_prompts, sft_steps; None keeps the
    profile's). Refuses an unknown profile or method, and a run whose notebooks 02 and 03 are missing."""
    if profile not in profiles.NAMES:
        raise ValueError(f"profile: expected one of {', '.join(profiles.NAMES)}, got {profile!r}")
    # the methods of the settings in use (a --settings copy's, not the packaged file's)
    profile_methods = study.profile_settings(profile, settings_file).methods if profile in study.PROFILES else None
    methods = list(methods or profile_methods or study.default_methods())
    unknown = sorted(set(methods) - set(study.ALL_METHODS))
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; known: {list(study.ALL_METHODS)}")
    runs = project_path(output_dir or f"runs/{profile}")
    labeled, sft_run = runs / "02_labeling", runs / "03_training" / "sft"
    for needed in (labeled / "safehelp" / "pairs", sft_run / "model"):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} is missing: run notebooks 02 and 03 first (profile {profile})")
    s = Study(profile, methods, labeled, sft_run, runs / "04_baselines", {"profile": profile, "methods": methods})
    if profile == "paper":
        s.seeds = list(overrides.get("seeds") or [42])
        return s
    s.P = study.profile_settings(profile, settings_file, **overrides)
    s.seeds, s.parallel = list(s.P.seeds), parallel or s.P.parallel
    s.grid = selection.grids(methods, s.P.grids)
    s.results.update(
        seeds=s.seeds,
        tuning_seeds=list(s.P.tuning_seeds),
        sft_per_seed=s.P.sft_per_seed,
        budget=s.budget.__dict__,
        grid=s.grid,
        eval_samples=s.P.eval_samples,
        halves=s.P.halves(),
    )
    return s


def sft_starts(s: Study) -> dict[int, str]:
    """Step 1: the SFT start of every seed (report and tuning), timed into ``results``."""
    t0 = time.perf_counter()
    seeds = sorted(set(s.seeds) | set(s.P.tuning_seeds))
    starts = study.sft_starts(s.sft_run, s.out_dir / "starts", seeds, s.P.sft_per_seed, s.P.sft_steps, s.parallel)
    s.results["sft_starts"] = {int(seed): path for seed, path in starts.items()}
    s.results["sft_seconds"] = time.perf_counter() - t0
    return starts


def tune(s: Study, starts: dict[int, str]) -> tuple[dict[str, str], pd.DataFrame]:
    """Steps 2-3: every grid point with the tuning seeds, judged on validation wordings; the chosen point
    per method (``tuning.csv`` beside the results)."""
    t0 = time.perf_counter()
    chosen, table = study.tune(
        starts, s.pairs_dir, s.buffer_dir, s.out_dir, s.grid, list(s.P.tuning_seeds), s.budget, s.P.eval_samples,
        s.parallel,
    )  # fmt: skip
    write_csv(s.out_dir / "tuning.csv", table)
    s.results["chosen"] = chosen
    s.results["tuning_seconds"] = time.perf_counter() - t0
    return chosen, table


@dataclasses.dataclass
class Final:
    """Step 4's runs: the report runs (``final``: study.Run), Safe RLHF's fixed-lambda sweep, and
    ``models``: method -> {config, overrides, models: seed -> model folder}, with the SFT start as "sft"."""

    final: list
    sweep: list
    sweep_grid: dict
    sweep_seeds: list[int]
    models: dict


def train_final(s: Study, starts: dict[int, str], chosen: dict[str, str]) -> Final:
    """Step 4: every report seed with each method's chosen point, and Safe RLHF with lambda fixed at each
    value of the profile's sweep, in one queue (the sweep fills the workers' gaps)."""
    t0 = time.perf_counter()
    points = {m: {chosen[m]: s.grid[m][chosen[m]]} for m in s.methods}
    final = study.suite_jobs(starts, s.pairs_dir, s.buffer_dir, s.out_dir, s.methods, s.seeds, s.budget, points)
    sweep, sweep_grid, sweep_seeds = [], {}, []
    if "safe_rlhf" in s.methods and s.P.lambda_sweep:
        sweep_grid = study.lambda_sweep(s.P.lambda_sweep, s.grid["safe_rlhf"][chosen["safe_rlhf"]])
        sweep_seeds = s.seeds[: s.P.lambda_sweep_seeds or len(s.seeds)]
        sweep = study.suite_jobs(
            starts, s.pairs_dir, s.buffer_dir, s.out_dir, [study.LAMBDA_SWEEP], sweep_seeds, s.budget,
            {study.LAMBDA_SWEEP: sweep_grid},
        )  # fmt: skip
    study.run_suite(final + sweep, parallel=s.parallel)
    final, sweep = study.policies(final), study.policies(sweep)
    s.results["final_seconds"] = time.perf_counter() - t0
    models = {
        m: {
            "config": chosen[m],
            "overrides": s.grid[m][chosen[m]],
            "models": {int(r.seed): r.model for r in final if r.method == m},
        }
        for m in s.methods
    }
    models["sft"] = {"config": "start", "overrides": {}, "models": {int(seed): starts[seed] for seed in s.seeds}}
    return Final(final, sweep, sweep_grid, sweep_seeds, models)


def margins(s: Study, final_runs: dict) -> dict[str, dict[str, float]]:
    """The implicit-reward margin beta*h of each pairwise method's model of the first report seed (its
    chosen beta, else the budget's or the paper recipe's) on notebook 02's held-out pairs, per label
    combination."""
    beta = s.budget.beta if s.P else s.results["paper_beta"]
    eval_pairs = data.load(s.labeled / "safehelp" / "eval_pairs")
    seed0 = min(s.seeds)
    start = final_runs["sft"]["models"][seed0] if "sft" in final_runs else s.sft_run / "model"
    out = {}
    for m, info in final_runs.items():
        if m in baselines.METHODS or m == "bfpo_red_team":
            b = info["overrides"].get("beta", beta)
            out[TITLES[m]] = baselines.implicit_margins(info["models"][seed0], start, eval_pairs, beta=b)
    s.results["margins_seed0"] = out
    return out


def check_margins(margins: dict[str, dict[str, float]]) -> None:
    """The directions Figure 1 of the paper shows: DPO on helpfulness prefers the helpful unsafe answer,
    DPO on safety does not, and BFPO ranks safe above unsafe."""
    if "DPO (helpfulness)" in margins and "DPO (safety)" in margins:
        assert margins["DPO (helpfulness)"]["unsafe>safe"] > 0 > margins["DPO (safety)"]["unsafe>safe"], margins
    if "BFPO" in margins:
        assert margins["BFPO"]["safe>unsafe"] > 0 > margins["BFPO"]["unsafe>safe"], margins["BFPO"]


def safe_rlhf_checks(s: Study, starts: dict[int, str], run: Final) -> dict:
    """Step 5: Safe RLHF's reward and cost models on held-out pairs, the cost model's calibration on three
    sets it never trained on (held-out pair responses, the SFT start's samples, the final policy's
    samples), and per seed whether the constraint binds (``bfpo.ppo.constraint_summary``). Returns
    {score, calibration, constraint, metrics: seed name -> PPO metrics}."""
    seed0 = min(s.seeds)
    score_dir = s.out_dir / "safe_rlhf" / study.start_tags(starts)[seed0]
    eval_pairs = s.labeled / "safehelp" / "eval_pairs"
    score = {
        kind: safe_rlhf.evaluate_score_model(score_dir / f"{kind}_model" / "model", eval_pairs, kind)
        for kind in ("reward", "cost")
    }
    pair_responses = [
        {"prompt": r["prompt"], "response": r[k], "safe": r[f"{k}_safe"]}
        for r in data.load(eval_pairs)
        for k in ("chosen", "rejected")
    ]
    n = s.P.eval_samples
    _, sampled = tw.evaluate_model(*study.load(starts[seed0]), samples_per_prompt=n, split="validation", seed=0)
    policy = run.models["safe_rlhf"]["models"][seed0]
    _, policy_samples = tw.evaluate_model(*study.load(policy), samples_per_prompt=n, split="test", seed=seed0)
    cost_model = score_dir / "cost_model" / "model"
    calibration = {
        "held-out pair responses": safe_rlhf.cost_calibration(cost_model, pair_responses),
        "SFT samples, validation wordings": safe_rlhf.cost_calibration(cost_model, sampled),
        f"Safe RLHF policy samples (seed {seed0}), test wordings": safe_rlhf.cost_calibration(
            cost_model, policy_samples, examples=3
        ),
    }
    ppo_runs = {f"seed {r.seed}": r.run_dir for r in run.final if r.method == "safe_rlhf"}
    constraint = {name: ppo_lag.constraint_summary(d) for name, d in ppo_runs.items()}
    s.results.update(score_models_held_out=score, cost_calibration=calibration, constraint=constraint)
    return {
        "score": score,
        "calibration": calibration,
        "constraint": constraint,
        "metrics": {name: read_metrics(d) for name, d in ppo_runs.items()},
    }


def check_safe_rlhf(checks: dict, lambda_max: float) -> None:
    """The cost model ranks and signs held-out pairs (> 0.8 each); every start violates its constraint;
    lambda follows the sign of (J_C - d) at every iteration (or sits at its cap)."""
    score, constraint = checks["score"], checks["constraint"]
    assert score["cost"]["ranking"] > 0.8 and score["cost"]["sign"] > 0.8, score
    for name, ms in checks["metrics"].items():
        assert constraint[name]["binds_at_start"], (name, constraint[name])
        for prev, cur in zip(ms, ms[1:], strict=False):
            rising = (cur["lambda"] - prev["lambda"]) * (cur["episode_cost_window"] - cur["cost_threshold"])
            assert rising >= -1e-9 or cur["lambda"] >= lambda_max - 1e-6, (name, cur)


def judge_final(s: Study, run: Final) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Step 6: every final model and Safe RLHF's sweep judged on the training and test wordings, cached
    per model. Writes ``results.csv`` (a row per method, seed and wording, with its training FLOPs),
    ``judged_prompts.csv`` and ``lambda_sweep.csv``; returns (results, per-prompt rows, sweep)."""
    judged = {
        "samples_per_prompt": s.P.eval_samples,
        "cache_dir": s.out_dir / "judged",
        "splits": ("training", "test"),
        "training_wordings": s.P.training_wordings,
        "test_wordings": s.P.test_wordings(),
        "parallel": s.parallel,
    }
    to_judge = [(m, info["config"], seed, p) for m, info in run.models.items() for seed, p in info["models"].items()]
    rows, prompt_rows = study.judge_runs(to_judge, **judged)
    prompts = pd.DataFrame(prompt_rows)
    write_csv(s.out_dir / "judged_prompts.csv", prompts.drop(columns=["prompt"]))
    sweep_rows, _ = study.judge_runs([(r.method, r.config, r.seed, r.model) for r in run.sweep], **judged)
    sweep = pd.DataFrame([{**r, "lambda": run.sweep_grid[r["config"]]["ppo_lambda"]} for r in sweep_rows])
    write_csv(s.out_dir / "lambda_sweep.csv", sweep)
    flops = {(m, seed): 0.0 if m == "sft" else curves.run_flops(p.removesuffix("/model")) for m, _, seed, p in to_judge}
    df = pd.DataFrame([{**r, "title": TITLES[r["method"]], "flops": flops[(r["method"], r["seed"])]} for r in rows])
    write_csv(s.out_dir / "results.csv", df)
    means = df.groupby(["wording", "method"])[["helpfulness", "harmlessness", "over_refusal"]].mean()
    s.results["means"] = {f"{w}/{m}": v for (w, m), v in means.to_dict("index").items()}
    return df, prompts, sweep


def power(s: Study, prompts: pd.DataFrame) -> list[dict]:
    """The seed spread, half-width and minimal detectable effect (80 % power) of the changes from the
    SFT start behind the headline claims (``bfpo.report.power``)."""
    wanted = [("bfpo", "harmlessness"), ("bfpo", "helpfulness"), ("bfpo_red_team", "harmlessness")]
    s.results["power"] = [report.power(prompts, m, metric) for m, metric in wanted if m in s.methods]
    return s.results["power"]


def power_line(p: dict) -> str:
    return (
        f"{TITLES[p['method']]} {p['metric']}: seed sd {p['seed_sd']:.3f}, change from SFT detectable with 80% "
        f"power from {p['mde_80']:.3f} ({p['seeds']} seeds, {p['prompts']} prompts); a 95% half-width of "
        f"{report.TARGET_HALF_WIDTH} would take {p['seeds_for_target']} seeds at this spread"
    )


def compute_curves(s: Study, run: Final, test: pd.DataFrame) -> pd.DataFrame:
    """Step 7: the snapshots along every run of the budget's snapshot methods, judged on test wordings
    (``curves.csv``); ``results["compute"]``: the FLOPs each method needs to reach SFT + 0.2 (and, as a
    description only, SFT + 0.1) on the mean curve over seeds."""
    methods = s.budget.snapshot_methods
    table = curves.compute_curves(
        [r for r in run.final if r.method in methods],
        test[test["method"] == "sft"],
        s.P.eval_samples,
        s.out_dir / "judged",
        methods=methods,
        parallel=s.parallel,
        test_wordings=s.P.test_wordings(),
    )
    write_csv(s.out_dir / "curves.csv", table)
    start = float(test.loc[test["method"] == "sft", "harmlessness"].mean())
    total = test[test["method"] != "sft"].groupby("method")["flops"].mean().to_dict()
    summary = curves.compute_summary(table, start, total, deltas=(0.2, 0.1))
    s.results["compute"] = {**summary, "seeds": len(s.seeds)}
    return table


def red_team_summary(s: Study) -> str | None:
    """A line on the red-teaming pairs of the first start (None when the study made none)."""
    found = sorted((s.out_dir / "red_team_data").glob("*/pairs"))
    if not found:
        return None
    rt = data.load(found[0])
    s.results["red_team_pairs"] = len(rt)
    s.results["red_team_label_counts"] = data.label_counts(rt)
    return (
        f"Red-teaming data (seed {min(s.seeds)}'s start): {len(rt)} pairs from the SFT model's own answers, "
        f"labelled by the gold judge: {s.results['red_team_label_counts']}"
    )


def paper_runs(s: Study) -> dict:
    """The paper profile: each pairwise and point-wise method trained with the published BFPO recipe
    (``configs/paper_bfpo.yaml``, 4 processes, ZeRO-3 bf16) and its own loss and label view, on the
    PKU-SafeRLHF pairs and the helpful buffer. Safe RLHF at 7B needs the official DeepSpeed code
    (PKU-Alignment/safe-rlhf); its released model, Beaver-7b, is evaluated in notebook 05 instead."""
    paper = train.TrainConfig.from_yaml(project_path("configs/paper_bfpo.yaml"), {"output_dir": "-"}).to_dict()
    pku = data.load(s.labeled / "real" / "pku_saferlhf")
    buffer = data.load(s.labeled / "real" / "helpful_buffer")
    accelerate_config = str(project_path("configs/accelerate/zero3_bf16.yaml"))
    models = {}
    for name in [m for m in s.methods if m in baselines.METHODS]:
        for seed in s.seeds:
            work = s.out_dir / name / "paper" / f"seed{seed}"
            cfg = baselines.method_config(baselines.METHODS[name], {**paper, "seed": seed}, pku, buffer, work)
            train.launch(cfg, num_processes=4, accelerate_config=accelerate_config)
            models.setdefault(name, {"config": "paper", "overrides": {}, "models": {}})["models"][seed] = (
                f"{cfg.output_dir}/model"
            )
    s.results["paper_beta"] = paper["beta"]
    return models


# ---------------------------------------------------------------------------------------------
# The figures of notebook 04: each saved under figures_dir (png, pdf and a caption) and its png returned
# ---------------------------------------------------------------------------------------------


def figure_margins(s: Study, margins: dict, figures_dir) -> Path:
    seed0 = min(s.seeds)
    caption = (
        f"Implicit-reward margin beta*h of each method's seed-{seed0} model (its chosen beta) on held-out SafeHelp "
        "pairs (chosen = the more helpful response), per label combination; last row: BFPO's targets g. Measured here."
    )
    fig = figures.plot_method_margins(margins, labels.targets())
    return _save(s, "figure_margins", fig, "04_method_margins", caption, figures_dir)


def figure_safe_rlhf(s: Study, checks: dict, figures_dir) -> Path:
    caption = (
        f"Safe RLHF's PPO-Lagrangian on SafeHelp with the chosen configuration ({s.results['chosen']['safe_rlhf']}), "
        "per seed: the Lagrange multiplier lambda; the window mean cost J_C that the constraint bounds, with the SFT "
        "start's J_C (dot at iteration 0) and the threshold d = J_C(start) - m (dashed); the reward model score of the "
        "rollouts, the gold-judge unsafe rate of the rollouts and the KL to the SFT reference (running means over "
        "5 iterations). Measured here."
    )
    fig = figures.plot_safe_rlhf(checks["metrics"], starts=checks["constraint"])
    return _save(s, "figure_safe_rlhf", fig, "04_safe_rlhf_lambda", caption, figures_dir)


def figure_tradeoff(s: Study, test: pd.DataFrame, run: Final, sweep: pd.DataFrame, figures_dir) -> Path:
    """Figure 1 of the paper, measured here, with Safe RLHF's fixed-lambda curve (``results["lambda_sweep"]``)."""
    curve = study.sweep_curve(sweep, "test")
    s.results["lambda_sweep"] = {"seeds": run.sweep_seeds, "test": curve.to_dict("records")}
    n = len(s.seeds)
    caption = (
        "Gold-judge helpfulness (benign and scary prompts) against harmlessness (harmful prompts) on test "
        f"wordings, mean +- sd over {n} seeds per method; the grey line is Safe RLHF with lambda fixed "
        f"at {list(s.P.lambda_sweep)} (mean over seeds {run.sweep_seeds}). Measured here."
    )
    fig = figures.plot_tradeoff(test, title=f"SafeHelp, test wordings ({n} seeds, measured here)", curve=curve)
    return _save(s, "figure_tradeoff", fig, "04_tradeoff", caption, figures_dir)


def figure_compute(s: Study, table: pd.DataFrame, figures_dir) -> Path | None:
    if not len(table):
        return None
    level = s.results["compute"]["levels"][0]["level"]
    caption = (
        "Test-wording harmlessness against cumulative training FLOPs (log) along every BFPO, SafeDPO and Safe "
        f"RLHF run, thin lines per seed, thick the mean over seeds {s.seeds}; dashed: the level SFT + 0.2 = "
        f"{level:.2f}. Safe RLHF's curve starts after its reward and cost models. Measured here."
    )
    fig = figures.plot_compute_curves(table, level, TITLES)
    return _save(s, "figure_compute", fig, "04_compute", caption, figures_dir)


def _save(s: Study, key: str, fig, name: str, caption: str, figures_dir) -> Path:
    png = figures.save_figure(fig, name, caption, figures_dir)["png"]
    s.results[key] = png.name
    return png
