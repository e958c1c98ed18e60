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
# **The protocol**, fixed before any test number was looked at (`docs/study.md`):
#
# 1. Three disjoint sets of prompt wordings (`bfpo.toyworld.SPLITS`): *training* (all training
#    data), *validation* (choosing hyper-parameters) and *test* (every number reported).
# 2. The same tuning budget for every method: the same number of grid points (the learning rate;
#    Safe RLHF: the margin $m$ of its threshold $d = J_C(\text{start}) - m$), each trained with the
#    tuning seeds.
# 3. One selection rule (`bfpo.selection`): the grid point with the highest validation
#    $\tfrac12(\text{helpfulness} + \text{harmlessness})$, averaged over the tuning seeds.
# 4. The chosen configuration is trained with every seed and judged on the test wordings; the
#    `cpu` profile gives every seed its own SFT start, so the spread covers the start too.
#
# The smoke profile (CI) runs a small version of this (2 grid points, 1 tuning seed, 4 report seeds); the
# `cpu` profile is the definitive one (2 grid points, 3 tuning seeds, 10 report seeds in two halves); the
# settings of each are in `bfpo/settings/<profile>.yaml` (described in `docs/profiles.md`). Each step is one
# function of `bfpo.protocol`. The paper profile has no SafeHelp study: its one section, at the end, trains
# the pairwise and point-wise methods with the published recipe on the real PKU-SafeRLHF pairs
# (`bfpo.notebooks` runs only the cells tagged for the profile: `safehelp` or `paper`).

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
sft_steps = None  # steps of each seed's own SFT start (cpu, gpu); None: the profile's
ppo_iterations = None  # PPO-Lagrangian rollout batches; None: the profile's
eval_samples = None  # sampled answers per evaluation prompt; None: the profile's
parallel = None  # trainings (and judged models) at once, in worker processes; None: the profile's (2 on a CPU)
methods = None  # None: the profile's (smoke: 7 of them; cpu: every method but the continuous-label point-wise DPO)
harmful_test_prompts = None  # the least number of harmful test prompts declared; None: the profile's (200)

# %%
import pandas as pd
from IPython.display import Image, Markdown, display

from bfpo import ppo, protocol, what_we_saw
from bfpo.io import write_json

S = protocol.setup(
    profile, settings_file, output_dir, methods, parallel,
    seeds=seeds, tuning_seeds=tuning_seeds, steps=steps, ppo_iterations=ppo_iterations,
    eval_samples=eval_samples, harmful_test_prompts=harmful_test_prompts, sft_steps=sft_steps,
)  # fmt: skip
if S.P:
    halves = S.P.halves()
    print(f"report seeds {S.seeds} (halves A {halves['A']}, B {halves['B']}); tuning seeds {S.P.tuning_seeds}")
    display(S.grid_table())

# %% [markdown]
# ## 1 · The SFT starts
#
# Smoke: notebook 03's SFT model is every seed's start. `cpu`: tuning seed 0 starts from it; every other
# seed trains the same SFT recipe from its own initialisation and data order (one process, the
# same global batch), so that the seed-to-seed spread includes the start, as a run on another
# machine would.

# %% tags=["safehelp"]
starts = protocol.sft_starts(S)
print(f"{len(set(starts.values()))} SFT start(s) ready in {S.results['sft_seconds']:.0f} s")

# %% [markdown]
# ## 2 · Tuning on validation wordings
#
# Every grid point of every method, trained with the tuning seeds and judged on the **validation**
# wordings only (`bfpo.selection.select` refuses any other rows); the selected point is marked.
# A finished run is never trained again, so re-running this notebook only evaluates.

# %% tags=["safehelp"]
chosen, tuning_table = protocol.tune(S, starts)
display(tuning_table.round(3))

# %% [markdown]
# ## 3 · Every seed with the chosen configuration
#
# Beside the tuned methods, **Safe RLHF's whole trade-off curve**: PPO-Lagrangian with its chosen
# configuration but $\lambda$ fixed (learning rate 0) at each value of the profile's sweep, so that
# one sees what the constraint can buy, and at what over-refusal, whatever the tuned point says.

# %% tags=["safehelp"]
run = protocol.train_final(S, starts, chosen)
final_runs = run.models
write_json(S.out_dir / "final_runs.json", final_runs)
print(f"{len(run.final)} final runs and {len(run.sweep)} sweep runs ready in {S.results['final_seconds']:.0f} s")

# %% [markdown]
# ## 4 · What each method learned to prefer
#
# The implicit-reward margin $\beta h_\pi$ of each method's model of the first report seed (with its chosen $\beta$) on the
# held-out pairs of notebook 02 (validation wordings; chosen = the more helpful response), per
# label combination. DPO on helpfulness pushes every combination up, including unsafe > safe (it
# prefers the helpful harmful answer); DPO on safety pushes unsafe > safe down; BFPO moves each
# combination towards its target $g$.

# %% tags=["safehelp"]
margins = protocol.margins(S, final_runs)
display(Image(protocol.figure_margins(S, margins, figures_dir)))  # the saved file, inline
protocol.check_margins(margins)

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

# %% tags=["safehelp"]
if "safe_rlhf" in S.methods:
    checks = protocol.safe_rlhf_checks(S, starts, run)
    display(pd.DataFrame(checks["score"]).T)
    display(pd.DataFrame(checks["calibration"]).T.drop(columns="missed", errors="ignore"))
    display(pd.DataFrame(checks["constraint"]).T.round(3))
    display(Image(protocol.figure_safe_rlhf(S, checks, figures_dir)))  # the saved file, inline
    protocol.check_safe_rlhf(checks, lambda_max=ppo.PPOConfig.__dataclass_fields__["lambda_max"].default)

# %% [markdown]
# ## 6 · Judging every final model on test wordings
#
# Each model answers every SafeHelp prompt `eval_samples` times (temperature 1), on the **test**
# wordings (and, for comparison, the first training wordings of each topic); the gold judge scores
# helpfulness (benign and scary prompts), over-refusal (scary prompts) and harmlessness (harmful
# prompts). FLOPs count the training compute beyond the SFT start (`bfpo.compute`).

# %% tags=["safehelp"]
df, prompts, sweep = protocol.judge_final(S, run)
metrics = ["helpfulness", "over_refusal", "harmlessness", "flops"]
display(df.groupby(["wording", "title"])[metrics].agg(["mean", "std"]).round(3))

# %% [markdown]
# **What the study can detect.** For a change $\Delta$ from the SFT start measured on $S$ seeds with seed
# standard deviation $\sigma_\Delta$ of the paired per-seed changes, a two-sided test at 95 % finds a true
# change of at least $\text{MDE} = (t_{0.975,S-1} + t_{0.8,S-1})\,\sigma_\Delta/\sqrt S$ with 80 % power
# (`bfpo.stats.minimal_detectable_effect`). A smaller true effect would often come out "inconclusive".

# %% tags=["safehelp"]
display(pd.DataFrame(protocol.power(S, prompts)).round(3))
for p in S.results["power"]:
    print(protocol.power_line(p))

# %% [markdown]
# ## 7 · The trade-off, and the compute to reach a safety level
#
# Helpfulness against harmlessness on test wordings (mean and sd over seeds; Figure 1 of the
# paper, measured here), with Safe RLHF's fixed-$\lambda$ curve.

# %% tags=["safehelp"]
test = df[df["wording"] == "test"]
display(Image(protocol.figure_tradeoff(S, test, run, sweep, figures_dir)))  # the saved file, inline

# %% [markdown]
# The paper's compute claim as it means it: the training FLOPs each method needs to reach the same
# harmlessness. Snapshots along every BFPO, SafeDPO and Safe RLHF run (Safe RLHF's curve starts with its
# reward and cost models already paid for) are judged on test wordings; the level is the SFT start's test
# harmlessness + 0.2, and the FLOPs to reach it are read off the mean curve over seeds by linear
# interpolation (`bfpo.curves.flops_to_level`).

# %% tags=["safehelp"]
curve_table = protocol.compute_curves(S, run, test)
if (png := protocol.figure_compute(S, curve_table, figures_dir)) is not None:
    display(Image(png))  # the saved file, inline
display(pd.DataFrame(S.results["compute"]["levels"]))
if (line := protocol.red_team_summary(S)) is not None:
    display(Markdown(line))

# %% [markdown]
# ## The paper profile (multi-GPU; skipped in the smoke, cpu and gpu profiles)
#
# The published BFPO recipe (`configs/paper_bfpo.yaml`: 4 processes, ZeRO-3, bf16), with each pairwise and
# point-wise method's own loss and label view, on the real PKU-SafeRLHF pairs and the helpful buffer, then
# the same margins as section 4. Safe RLHF at 7B needs the official DeepSpeed code (PKU-Alignment/safe-rlhf):
# its released model, Beaver-7b, is evaluated in notebook 05 instead.

# %% tags=["paper"]
final_runs = protocol.paper_runs(S)
write_json(S.out_dir / "final_runs.json", final_runs)
margins = protocol.margins(S, final_runs)
display(Image(protocol.figure_margins(S, margins, figures_dir)))  # the saved file, inline

# %% [markdown]
# ## What we saw
#
# Every method, every report seed, in a few lines; every number is read from the results file this notebook
# wrote (`bfpo.what_we_saw`), so the words follow the run.

# %%
write_json(S.out_dir / "results.json", S.results)
display(Markdown(f"Tidy results in `{S.out_dir}`: `results.csv`, `tuning.csv`, `curves.csv`, `final_runs.json`."))
display(Markdown(what_we_saw.baselines(S.out_dir / "results.json")))
