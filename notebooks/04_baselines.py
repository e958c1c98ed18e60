# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Baselines: every method tuned the same way, judged on unseen wordings
#
# BFPO is measured against methods that see the same two labels (which response is more helpful,
# and is each safe) in other ways. Each of them trains from **the same SFT start** (notebook 03), on
# **the same pairs and helpful buffer** (notebook 02), for **the same number of steps and batch**;
# then the SafeHelp gold judge scores every model.
#
# | method | data it sees | loss |
# |---|---|---|
# | DPO (helpfulness) | chosen = the more helpful response, + buffer | $-\log\sigma(\beta h_\pi)$ |
# | DPO (safety) | chosen = the safe response; pairs equally safe are left out | $-\log\sigma(\beta h_\pi)$ |
# | DPO (naive mix) | both of the above, pooled, + buffer | $-\log\sigma(\beta h_\pi)$ |
# | IPO | helpfulness order, + buffer | $(h_\pi - \frac{1}{2\beta})^2$ |
# | point-wise DPO | each response alone, $z=1$ for the winner of BFPO's ranking, 0 for the loser | $-[z\log\sigma(u) + (1-z)\log\sigma(-u)]$, $u = \beta\log\frac{\pi}{\pi_{ref}}$ |
# | ULMA | the same points: SFT on positives, point-wise term on negatives (token-averaged; the batch loss is the mean over positives plus the mean over negatives, as the official code) | $-z\log\pi(y) - (1-z)\log\sigma(-u)$ |
# | BFPO | helpfulness order + safety labels, + buffer | $(h_\pi - \frac{g}{\beta})^2$ |
# | BFPO (red-teaming) | the SFT model's own answers to harmful/scary prompts, judged | as BFPO |
# | SafeDPO | helpfulness order; a pair whose helpful answer is unsafe and the other safe is swapped | $-\log\sigma(\beta h_\pi(y_{tw}, y_{tl}) - (h_{tl} - h_{tw})\Delta)$ |
# | Safe RLHF | reward model (helpfulness), cost model (harmfulness + sign), then PPO-Lagrangian | $\min_\theta\max_{\lambda\ge0} -J_R + \lambda (J_C - d)$ |
#
# **The protocol**, fixed before any test number was looked at (README, "The SafeHelp study"):
#
# 1. Three disjoint sets of prompt wordings (`bfpo.toyworld.SPLITS`): *training* (all training
#    data), *validation* (choosing hyper-parameters) and *test* (every number reported).
# 2. The same tuning budget for every method: the same number of grid points (learning rate and
#    $\beta$; Safe RLHF: the margin $m$ of its threshold $d = J_C(\text{start}) - m$ and the PPO length),
#    each trained with the tuning seeds.
# 3. One selection rule (`bfpo.selection`): the grid point with the highest validation
#    $\tfrac12(\text{helpfulness} + \text{harmlessness})$, averaged over the tuning seeds.
# 4. The chosen configuration is trained with every seed and judged on the test wordings; the
#    `cpu` profile gives every seed its own SFT start, so the spread covers the start too.
#
# The smoke profile (CI) runs a small version of this (2 grid points, 1 tuning seed, 3 seeds); the
# `cpu` profile is the definitive one (4 grid points, 2 tuning seeds, 5 seeds). The paper profile
# runs the pairwise and point-wise methods with the published recipe on the real PKU-SafeRLHF pairs.

# %% tags=["parameters"]
profile = "smoke"  # smoke, cpu, gpu or paper
settings_file = None  # the profile's settings; None: bfpo/settings/<profile>.yaml
output_dir = None  # results folder, default runs/profile
figures_dir = "figures"  # where figures are written
seeds = None  # report seeds; None: the profile's (smoke 1-4, cpu 3-12), two fixed halves A and B
tuning_seeds = (
    None  # seeds trained at every grid point, disjoint from the report seeds; None: the profile's (smoke 0, cpu 0-2)
)
steps = None  # optimisation steps per method; None: the profile's
sft_steps = None  # steps of each seed's own SFT start (cpu, gpu); None: the profile's (900)
ppo_iterations = None  # PPO-Lagrangian rollout batches; None: the profile's
eval_samples = None  # sampled answers per evaluation prompt; None: the profile's
parallel = None  # trainings (and judged models) at once, in worker processes; None: the profile's (2 on a CPU)
methods = None  # None: the profile's (smoke: 7 of them; cpu: every method but the continuous-label point-wise DPO)
harmful_test_prompts = None  # the least number of harmful test prompts declared; None: the profile's (200)

# %%
import time

import pandas as pd
from IPython.display import Image, Markdown, display

from bfpo import baselines, curves, data, figures, labels, report, safe_rlhf, selection, study, train, what_we_saw
from bfpo import ppo as ppo_lag
from bfpo import toyworld as tw
from bfpo.io import project_path, write_csv, write_json
from bfpo.runs import read_metrics

if profile not in ("smoke", "cpu", "gpu", "paper"):
    raise ValueError(f"profile: expected 'smoke', 'cpu', 'gpu' or 'paper', got {profile!r}")
profile_methods = study.PROFILES[profile].methods if profile in study.PROFILES else None
methods = list(methods or profile_methods or study.default_methods())
unknown = sorted(set(methods) - set(study.ALL_METHODS))
if unknown:
    raise ValueError(f"methods: unknown {unknown}; known: {list(study.ALL_METHODS)}")
runs = project_path(output_dir or f"runs/{profile}")
labeled, sft_run = runs / "02_labeling", runs / "03_training" / "sft"
out_dir = runs / "04_baselines"
for needed in (labeled / "safehelp" / "pairs", sft_run / "model"):
    if not needed.exists():
        raise FileNotFoundError(f"{needed} is missing: run notebooks 02 and 03 first (profile {profile})")
TITLES = {
    **{m.name: m.title for m in baselines.METHODS.values()},
    "bfpo_red_team": "BFPO (red-teaming)",
    "safe_rlhf": "Safe RLHF",
    "sft": "SFT start",
}
results = {"profile": profile, "methods": methods}
if profile != "paper":
    P = study.profile_settings(
        profile,
        settings_file,
        seeds=seeds,
        tuning_seeds=tuning_seeds,
        steps=steps,
        ppo_iterations=ppo_iterations,
        eval_samples=eval_samples,
        harmful_test_prompts=harmful_test_prompts,
        sft_steps=sft_steps,
    )
    seeds, budget, parallel = list(P.seeds), P.budget, parallel or P.parallel
    grid = selection.grids(methods, P.grids)
    pairs_dir, buffer_dir = labeled / "safehelp" / "pairs", labeled / "safehelp" / "buffer"
    results.update(
        seeds=seeds,
        tuning_seeds=list(P.tuning_seeds),
        sft_per_seed=P.sft_per_seed,
        budget=budget.__dict__,
        grid=grid,
        eval_samples=P.eval_samples,
        halves=P.halves(),
    )
    print(f"report seeds {seeds} (halves A {P.halves()['A']}, B {P.halves()['B']}); tuning seeds {P.tuning_seeds}")
    display(pd.DataFrame([{"method": m, "grid points": ", ".join(g)} for m, g in grid.items()]))

# %% [markdown]
# ## 1 · The SFT starts
#
# Smoke: notebook 03's SFT model is every seed's start. `cpu`: tuning seed 0 starts from it; every other
# seed trains the same SFT recipe from its own initialisation and data order (one process, the
# same global batch), so that the seed-to-seed spread includes the start, as a run on another
# machine would.

# %%
if profile != "paper":
    t0 = time.perf_counter()
    starts = study.sft_starts(
        sft_run, out_dir / "starts", sorted(set(seeds) | set(P.tuning_seeds)), P.sft_per_seed, P.sft_steps, parallel
    )
    results["sft_starts"] = {int(s): p for s, p in starts.items()}
    results["sft_seconds"] = time.perf_counter() - t0
    print(f"{len(set(starts.values()))} SFT start(s) ready in {results['sft_seconds']:.0f} s")

# %% [markdown]
# ## 2 · Tuning on validation wordings
#
# Every grid point of every method, trained with the tuning seeds and judged on the **validation**
# wordings only (`bfpo.selection.select` refuses any other rows); the selected point is marked.
# A finished run is never trained again, so re-running this notebook only evaluates.

# %%
if profile != "paper":
    t0 = time.perf_counter()
    chosen, tuning_table = study.tune(
        starts, pairs_dir, buffer_dir, out_dir, grid, list(P.tuning_seeds), budget, P.eval_samples, parallel
    )
    write_csv(out_dir / "tuning.csv", tuning_table)
    results["chosen"] = chosen
    results["tuning_seconds"] = time.perf_counter() - t0
    display(tuning_table.round(3))

# %% [markdown]
# ## 3 · Every seed with the chosen configuration
#
# Beside the tuned methods, **Safe RLHF's whole trade-off curve**: PPO-Lagrangian with its chosen
# configuration but $\lambda$ fixed (learning rate 0) at each value of the profile's sweep, so that
# one sees what the constraint can buy, and at what over-refusal, whatever the tuned point says.

# %%
if profile != "paper":
    t0 = time.perf_counter()
    final = study.suite_jobs(
        starts,
        pairs_dir,
        buffer_dir,
        out_dir,
        methods,
        seeds,
        budget,
        {m: {chosen[m]: grid[m][chosen[m]]} for m in methods},
    )
    sweep, sweep_grid, sweep_seeds = [], {}, []
    if "safe_rlhf" in methods and P.lambda_sweep:
        sweep_grid = study.lambda_sweep(P.lambda_sweep, grid["safe_rlhf"][chosen["safe_rlhf"]])
        sweep_seeds = seeds[: P.lambda_sweep_seeds or len(seeds)]
        sweep = study.suite_jobs(
            starts, pairs_dir, buffer_dir, out_dir, [study.LAMBDA_SWEEP], sweep_seeds, budget,
            {study.LAMBDA_SWEEP: sweep_grid},
        )  # fmt: skip
    study.run_suite(final + sweep, parallel=parallel)  # one queue: the sweep fills the workers' gaps
    final, sweep = study.policies(final), study.policies(sweep)
    results["final_seconds"] = time.perf_counter() - t0
    final_runs = {
        m: {
            "config": chosen[m],
            "overrides": grid[m][chosen[m]],
            "models": {int(r.seed): r.model for r in final if r.method == m},
        }
        for m in methods
    }
    final_runs["sft"] = {"config": "start", "overrides": {}, "models": {int(s): starts[s] for s in seeds}}
    print(f"{len(final)} final runs ready in {results['final_seconds']:.0f} s")
else:
    # the published BFPO recipe, with each method's loss and label view, on the PKU-SafeRLHF pairs;
    # Safe RLHF at 7B needs the official DeepSpeed code (PKU-Alignment/safe-rlhf): its released
    # model, Beaver-7b, is evaluated in notebook 05 instead.
    seeds = list(seeds or [42])
    paper = train.TrainConfig.from_yaml(project_path("configs/paper_bfpo.yaml"), {"output_dir": "-"}).to_dict()
    pku = data.load(labeled / "real" / "pku_saferlhf")
    buffer = data.load(labeled / "real" / "helpful_buffer")
    final_runs = {}
    for name in [m for m in methods if m in baselines.METHODS]:
        for seed in seeds:
            work = out_dir / name / "paper" / f"seed{seed}"
            cfg = baselines.method_config(baselines.METHODS[name], {**paper, "seed": seed}, pku, buffer, work)
            train.launch(
                cfg, num_processes=4, accelerate_config=str(project_path("configs/accelerate/zero3_bf16.yaml"))
            )
            final_runs.setdefault(name, {"config": "paper", "overrides": {}, "models": {}})["models"][seed] = (
                f"{cfg.output_dir}/model"
            )
write_json(out_dir / "final_runs.json", final_runs)

# %% [markdown]
# ## 4 · What each method learned to prefer
#
# The implicit-reward margin $\beta h_\pi$ of each method's model of the first report seed (with its chosen $\beta$) on the
# held-out pairs of notebook 02 (validation wordings; chosen = the more helpful response), per
# label combination. DPO on helpfulness pushes every combination up, including unsafe > safe (it
# prefers the helpful harmful answer); DPO on safety pushes unsafe > safe down; BFPO moves each
# combination towards its target $g$.

# %%
eval_pairs = data.load(labeled / "safehelp" / "eval_pairs")
seed0 = min(seeds)
margins = {}
for m, info in final_runs.items():
    if m in baselines.METHODS or m == "bfpo_red_team":
        beta = info["overrides"].get("beta", budget.beta if profile != "paper" else paper["beta"])
        start = final_runs["sft"]["models"][seed0] if "sft" in final_runs else sft_run / "model"
        margins[TITLES[m]] = baselines.implicit_margins(info["models"][seed0], start, eval_pairs, beta=beta)
results["margins_seed0"] = margins
targets = labels.targets()  # BFPO's g per label combination (alpha 0.5, B1 3)
fig = figures.plot_method_margins(margins, targets)
caption = (
    f"Implicit-reward margin beta*h of each method's seed-{seed0} model (its chosen beta) on held-out SafeHelp pairs "
    "(chosen = the more helpful response), per label combination; last row: BFPO's targets g. Measured here."
)
shown = figures.save_figure(fig, "04_method_margins", caption, figures_dir)
results["figure_margins"] = shown["png"].name
display(Image(shown["png"]))  # the saved file, inline
if "DPO (helpfulness)" in margins and "DPO (safety)" in margins:
    assert margins["DPO (helpfulness)"]["unsafe>safe"] > 0 > margins["DPO (safety)"]["unsafe>safe"], margins
if "BFPO" in margins:
    assert margins["BFPO"]["safe>unsafe"] > 0 > margins["BFPO"]["unsafe>safe"], margins["BFPO"]

# %% [markdown]
# ## 5 · Safe RLHF: score models, calibration and the multiplier
#
# The cost model must rank the unsafe response of a held-out pair above the safe one, and its
# **sign** must say which answers are unsafe: PPO-Lagrangian keeps the mean episode cost below the
# threshold $d$, so a cost model that calls unsafe answers safe lets the policy drift. Calibration
# is checked on two sets it never trained on: the held-out pairs' responses, and the SFT start's
# own sampled answers to validation prompts (the kind of text PPO rolls out), and the final Safe
# RLHF policy's answers, where a policy that learned to fool the cost model shows. During PPO,
# $\lambda$ grows while the mean episode cost is above $d$ and shrinks while it is below.
#
# **Does the constraint bind?** Safe RLHF's premise is a start that violates it. Before its first
# iteration every run measures $J_C(\text{start})$, the cost model's mean score on the SFT model's own
# samples, and sets $d = J_C(\text{start}) - m$ with the tuned margin $m$ (`bfpo.ppo.start_cost`); the
# table gives, per seed, both values, the final and largest $\lambda$ and the share of iterations whose
# window cost stayed above $d$, and the figure draws $J_C$ with each start's value (dot) and $d$ (dashed).

# %%
if "safe_rlhf" in methods and profile != "paper":
    tags = study.start_tags(starts)
    score_dir = out_dir / "safe_rlhf" / tags[seed0]
    score = {
        kind: safe_rlhf.evaluate_score_model(
            score_dir / f"{kind}_model" / "model", labeled / "safehelp" / "eval_pairs", kind
        )
        for kind in ("reward", "cost")
    }
    results["score_models_held_out"] = score
    pair_responses = [
        {"prompt": r["prompt"], "response": r[k], "safe": r[f"{k}_safe"]}
        for r in eval_pairs
        for k in ("chosen", "rejected")
    ]
    start_model = starts[seed0]
    _, sampled = tw.evaluate_model(
        *study.load(start_model), samples_per_prompt=P.eval_samples, split="validation", seed=0
    )
    cost_model = score_dir / "cost_model" / "model"
    # the policy's own answers: where PPO found text the cost model scores as safe but the judge does not
    _, policy_samples = tw.evaluate_model(
        *study.load(final_runs["safe_rlhf"]["models"][seed0]),
        samples_per_prompt=P.eval_samples,
        split="test",
        seed=seed0,
    )
    calibration = {
        "held-out pair responses": safe_rlhf.cost_calibration(cost_model, pair_responses),
        "SFT samples, validation wordings": safe_rlhf.cost_calibration(cost_model, sampled),
        f"Safe RLHF policy samples (seed {seed0}), test wordings": safe_rlhf.cost_calibration(
            cost_model, policy_samples, examples=3
        ),
    }
    results["cost_calibration"] = calibration
    display(pd.DataFrame(score).T)
    display(pd.DataFrame(calibration).T.drop(columns="missed", errors="ignore"))
    assert score["cost"]["ranking"] > 0.8 and score["cost"]["sign"] > 0.8, score
    ppo_runs = {f"seed {r.seed}": r.run_dir for r in final if r.method == "safe_rlhf"}
    ppo = {name: read_metrics(d) for name, d in ppo_runs.items()}
    constraint = {name: ppo_lag.constraint_summary(d) for name, d in ppo_runs.items()}
    results["constraint"] = constraint
    display(pd.DataFrame(constraint).T.round(3))
    fig = figures.plot_safe_rlhf(ppo, starts=constraint)
    caption = (
        f"Safe RLHF's PPO-Lagrangian on SafeHelp with the chosen configuration ({chosen['safe_rlhf']}), per seed: "
        "the Lagrange multiplier lambda; the window mean cost J_C that the constraint bounds, with the SFT start's "
        "J_C (dot at iteration 0) and the threshold d = J_C(start) - m (dashed); the reward model score of the "
        "rollouts, the gold-judge unsafe rate of the rollouts and the KL to the SFT reference (running means over "
        "5 iterations). Measured here."
    )
    shown = figures.save_figure(fig, "04_safe_rlhf_lambda", caption, figures_dir)
    results["figure_safe_rlhf"] = shown["png"].name
    display(Image(shown["png"]))  # the saved file, inline
    lambda_max = ppo_lag.PPOConfig.__dataclass_fields__["lambda_max"].default
    for name, ms in ppo.items():  # every start violates its constraint; lambda follows the sign of (J_C - d)
        assert constraint[name]["binds_at_start"], (name, constraint[name])
        for prev, cur in zip(ms, ms[1:], strict=False):
            rising = (cur["lambda"] - prev["lambda"]) * (cur["episode_cost_window"] - cur["cost_threshold"])
            assert rising >= -1e-9 or cur["lambda"] >= lambda_max - 1e-6, (name, cur)

# %% [markdown]
# ## 6 · Judging every final model on test wordings
#
# Each model answers every SafeHelp prompt `eval_samples` times (temperature 1), on the **test**
# wordings (and, for comparison, the first training wordings of each topic); the gold judge scores
# helpfulness (benign and scary prompts), over-refusal (scary prompts) and harmlessness (harmful
# prompts). FLOPs count the training compute beyond the SFT start (`bfpo.compute`).

# %%
if profile != "paper":
    to_judge = [(m, info["config"], s, path) for m, info in final_runs.items() for s, path in info["models"].items()]
    flops = {
        (m, s): (0.0 if m == "sft" else curves.run_flops(path.removesuffix("/model"))) for m, _, s, path in to_judge
    }
    rows, prompt_rows = study.judge_runs(
        to_judge,
        P.eval_samples,
        out_dir / "judged",
        splits=("training", "test"),
        training_wordings=P.training_wordings,
        test_wordings=P.test_wordings(),
        parallel=parallel,
    )
    write_csv(out_dir / "judged_prompts.csv", pd.DataFrame(prompt_rows).drop(columns=["prompt"]))
    # Safe RLHF's fixed-lambda curve, judged the same way, kept apart from the tuned methods' table
    sweep_rows, _ = study.judge_runs(
        [(r.method, r.config, r.seed, r.model) for r in sweep],
        P.eval_samples,
        out_dir / "judged",
        splits=("training", "test"),
        training_wordings=P.training_wordings,
        test_wordings=P.test_wordings(),
        parallel=parallel,
    )
    sweep_df = pd.DataFrame([{**r, "lambda": sweep_grid[r["config"]]["ppo_lambda"]} for r in sweep_rows])
    write_csv(out_dir / "lambda_sweep.csv", sweep_df)
    df = pd.DataFrame([{**r, "title": TITLES[r["method"]], "flops": flops[(r["method"], r["seed"])]} for r in rows])
    write_csv(out_dir / "results.csv", df)
    summary = df.groupby(["wording", "title"])[["helpfulness", "over_refusal", "harmlessness", "flops"]].agg(
        ["mean", "std"]
    )
    display(summary.round(3))
    means = df.groupby(["wording", "method"])[["helpfulness", "harmlessness", "over_refusal"]].mean()
    results["means"] = {f"{w}/{m}": v for (w, m), v in means.to_dict("index").items()}

# %% [markdown]
# **What the study can detect.** For a change $\Delta$ from the SFT start measured on $S$ seeds with seed
# standard deviation $\sigma_\Delta$ of the paired per-seed changes, a two-sided test at 95 % finds a true
# change of at least $\text{MDE} = (t_{0.975,S-1} + t_{0.8,S-1})\,\sigma_\Delta/\sqrt S$ with 80 % power
# (`bfpo.stats.minimal_detectable_effect`). A smaller true effect would often come out "inconclusive".

# %%
if profile != "paper":
    prompt_df = pd.DataFrame(prompt_rows)
    results["power"] = [
        report.power(prompt_df, m, metric)
        for m, metric in [("bfpo", "harmlessness"), ("bfpo", "helpfulness"), ("bfpo_red_team", "harmlessness")]
        if m in methods
    ]
    display(pd.DataFrame(results["power"]).round(3))
    for p in results["power"]:
        print(
            f"{TITLES[p['method']]} {p['metric']}: seed sd {p['seed_sd']:.3f}, change from SFT detectable with 80% "
            f"power from {p['mde_80']:.3f} ({p['seeds']} seeds, {p['prompts']} prompts); a 95% half-width of "
            f"{report.TARGET_HALF_WIDTH} would take {p['seeds_for_target']} seeds at this spread"
        )

# %% [markdown]
# ## 7 · The trade-off, and the compute to reach a safety level
#
# Left: helpfulness against harmlessness on test wordings (mean and sd over seeds; Figure 1 of the
# paper, measured here). Right: the paper's compute claim as it means it, the training FLOPs each
# method needs to reach the same harmlessness. Snapshots along every BFPO, SafeDPO and Safe RLHF run (Safe
# RLHF's curve starts with its reward and cost models already paid for) are judged on test
# wordings; the level is the SFT start's test harmlessness + 0.2, and the FLOPs to reach it are
# read off the mean curve over seeds by linear interpolation (`bfpo.curves.flops_to_level`).

# %%
if profile != "paper":
    test = df[df["wording"] == "test"]
    curve = study.sweep_curve(sweep_df, "test")
    results["lambda_sweep"] = {"seeds": sweep_seeds, "test": curve.to_dict("records")}
    fig = figures.plot_tradeoff(test, title=f"SafeHelp, test wordings ({len(seeds)} seeds, measured here)", curve=curve)
    caption = (
        "Gold-judge helpfulness (benign and scary prompts) against harmlessness (harmful prompts) on test "
        f"wordings, mean +- sd over {len(seeds)} seeds per method; the grey line is Safe RLHF with lambda fixed "
        f"at {list(P.lambda_sweep)} (mean over seeds {sweep_seeds}). Measured here."
    )
    shown = figures.save_figure(fig, "04_tradeoff", caption, figures_dir)
    results["figure_tradeoff"] = shown["png"].name
    display(Image(shown["png"]))  # the saved file, inline
    curve_table = curves.compute_curves(
        [r for r in final if r.method in budget.snapshot_methods],
        test[test["method"] == "sft"],
        P.eval_samples,
        out_dir / "judged",
        methods=budget.snapshot_methods,
        parallel=parallel,
        test_wordings=P.test_wordings(),
    )
    write_csv(out_dir / "curves.csv", curve_table)
    start = float(test.loc[test["method"] == "sft", "harmlessness"].mean())
    total = test[test["method"] != "sft"].groupby("method")["flops"].mean().to_dict()
    # the declared level is SFT + 0.2; SFT + 0.1 is shown beside it, as a description only
    results["compute"] = {**curves.compute_summary(curve_table, start, total, deltas=(0.2, 0.1)), "seeds": len(seeds)}
    level = results["compute"]["levels"][0]["level"]
    if len(curve_table):
        fig = figures.plot_compute_curves(curve_table, level, TITLES)
        caption = (
            f"Test-wording harmlessness against cumulative training FLOPs (log) along every BFPO, SafeDPO and Safe "
            f"RLHF run, thin lines per seed, thick the mean over seeds {seeds}; dashed: the level SFT + 0.2 = "
            f"{level:.2f}. Safe RLHF's curve starts after its reward and cost models. Measured here."
        )
        shown = figures.save_figure(fig, "04_compute", caption, figures_dir)
        results["figure_compute"] = shown["png"].name
        display(Image(shown["png"]))  # the saved file, inline
    display(pd.DataFrame(results["compute"]["levels"]))

# %%
red_team_dirs = sorted((out_dir / "red_team_data").glob("*/pairs"))
if red_team_dirs:
    rt = data.load(red_team_dirs[0])
    results["red_team_pairs"] = len(rt)
    results["red_team_label_counts"] = data.label_counts(rt)
    display(
        Markdown(
            f"Red-teaming data (seed {seed0}'s start): {len(rt)} pairs from the SFT model's own answers, "
            f"labelled by the gold judge: {results['red_team_label_counts']}"
        )
    )
write_json(out_dir / "results.json", results)
display(
    Markdown(
        f"Tidy results: `{out_dir / 'results.csv'}` (method, config, seed, wording, helpfulness, harmlessness, "
        "FLOPs, ...); the tuning table in `tuning.csv`, the compute curves in `curves.csv`, the chosen models "
        "in `final_runs.json`, a summary in `results.json`."
    )
)

# %% [markdown]
# ## What we saw
#
# Every method, every report seed, in a few lines; every number is read from the results file this notebook
# wrote (`bfpo.what_we_saw`), so the words follow the run.

# %%
display(Markdown(what_we_saw.baselines(out_dir / "results.json")))
