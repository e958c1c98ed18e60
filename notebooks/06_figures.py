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
# # 06 · Figures and the results summary
#
# Every figure of the reproduction, drawn from the files the earlier notebooks wrote (no hidden
# state), in one seaborn style, as PNG and PDF with a caption in `figures/`. Numbers **measured
# here** and numbers **quoted** from the paper never share a plot without being labelled as such.
#
# The last cell writes `figures/RESULTS.md`: each claim of the paper beside what this run measured, and a
# plain verdict.

# %% tags=["parameters"]
profile = "smoke"  # smoke, cpu or paper
output_dir = None  # results folder, default runs/profile
figures_dir = "figures"  # where figures are written

# %%
import json
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

from bfpo import figures, labels, report, study, summary, what_we_saw
from bfpo.io import project_path, write_json
from bfpo.runs import read_metrics

if profile not in ("smoke", "cpu", "gpu", "paper"):
    raise ValueError(f"profile: expected 'smoke', 'cpu', 'gpu' or 'paper', got {profile!r}")
runs = project_path(output_dir or f"runs/{profile}")
results_csv = runs / "04_baselines" / "results.csv"
if not results_csv.is_file():
    raise FileNotFoundError(f"{results_csv} is missing: run notebook 04 first (profile {profile})")
df = pd.read_csv(results_csv)
prompts = pd.read_csv(runs / "04_baselines" / "judged_prompts.csv")  # per (method, seed, wording, prompt)
titles = dict(zip(df["method"], df["title"], strict=True))
baselines_summary = json.loads((runs / "04_baselines" / "results.json").read_text())
seeds = sorted(df.loc[df["method"] != "sft", "seed"].unique())
sweep_csv = runs / "04_baselines" / "lambda_sweep.csv"  # Safe RLHF with lambda fixed: its trade-off curve
sweep = pd.read_csv(sweep_csv) if sweep_csv.is_file() else pd.DataFrame()
made = {}

# %% [markdown]
# ## Figure 1: the helpfulness-harmlessness trade-off (measured here)
#
# Every method from the same SFT start with the same budget, judged by the SafeHelp gold judge on
# prompt wordings seen in training and on wordings never seen. Each point is the mean over seeds and
# prompts; the error bars are **95 % intervals at the seed level** (`bfpo.stats.interval`): each
# seed's mean over the prompts, then Student's t over the seeds. The grey line is **Safe RLHF's whole trade-off curve**: the same
# PPO-Lagrangian with $\lambda$ fixed at each value of the sweep (mean over its seeds), whatever the
# tuned point chose:
#
# $$\bar m_s = \frac{1}{P}\sum_{p=1}^{P} m_{s,p},\qquad \bar m = \frac{1}{S}\sum_{s=1}^{S} \bar m_s,\qquad
# \text{interval} = \bar m \pm t_{0.975,\,S-1}\,\frac{\operatorname{sd}(\bar m_1..\bar m_S)}{\sqrt S}.$$
#
# A two-level percentile bootstrap (seeds, then prompts) was used before: on 2,000 simulated studies
# shaped like this one it covered the truth in 85 % of them at 5 seeds, the t interval in 94-95 %
# (`tests/test_stats.py`).
#
# Seeds stand for everything that changes from run to run, the CPU's float rounding included: on
# another machine the bits differ, and the numbers should stay inside these intervals. A second
# figure shows every seed as a dot, so the spread is visible.

# %%
for wording in ("training", "test"):
    part = df[df["wording"] == wording]
    intervals = report.method_intervals(prompts, wording, titles)
    means = part.groupby("title")[["helpfulness", "harmlessness"]].mean()
    front = report.pareto_front({t: (r.helpfulness, r.harmlessness) for t, r in means.iterrows()})
    curve = study.sweep_curve(sweep, wording)
    title = f"SafeHelp, {wording} wordings ({len(seeds)} seeds, measured here)"
    fig = figures.plot_tradeoff(part, title=title, intervals=intervals, front=front, curve=curve)
    name = f"06_fig1_tradeoff_{wording}"
    caption = (
        f"The analogue of the BFPO paper's Figure 1 on the SafeHelp world: gold-judge helpfulness (benign and "
        f"scary prompts) against harmlessness (harmful prompts), {wording} prompt wordings, mean over seeds "
        f"{list(map(int, seeds))} and prompts with 95% seed-level t intervals; "
        f"the dashed line joins the methods on the Pareto front of the means ({', '.join(front)}); the grey line "
        f"is Safe RLHF with lambda fixed at {sorted(curve['lambda'].tolist())} (mean over seeds "
        f"{sorted(map(int, sweep['seed'].unique())) if len(sweep) else []}). Each method "
        f"was tuned on validation wordings by the rule of the README; the SFT start of each seed is sampled "
        f"with that seed. Measured here (profile {profile})."
    )
    made[name] = figures.save_figure(fig, name, caption, figures_dir)["png"]
display(Image(made["06_fig1_tradeoff_test"]))

# %% [markdown]
# Every seed as a dot: the spread the intervals summarise.

# %%
test = df[df["wording"] == "test"]
fig = figures.plot_per_seed(test, title="SafeHelp, test wordings: one dot per seed (measured here)")
caption = (
    f"Every seed of every method on test wordings (helpfulness, harmlessness, over-refusal); the bar marks "
    f"the mean over seeds {list(map(int, seeds))}. Measured here (profile {profile})."
)
made["06_per_seed"] = figures.save_figure(fig, "06_per_seed", caption, figures_dir)["png"]
display(Image(made["06_per_seed"]))

# %% [markdown]
# ## The 7B comparison (quoted)
#
# The paper's headline figure compares BFPO (from Zephyr-7b-beta) with six 7B models. These points
# are **quoted**: read off the figure in the official repository (`assets/result.png`), as recorded
# with their source in `data/paper/bfpo_reported_results.csv`; nothing here was measured.

# %%
quoted = report.quoted_7b_points()
display(quoted)
fig = figures.plot_quoted_bubbles(quoted, "wx-zhang/bfpo README figure assets/result.png (commit a1febab)")
caption = (
    "QUOTED, not measured here: helpfulness against harmlessness of seven 7B models as plotted in the BFPO "
    "repository's README figure (assets/result.png, commit a1febab), read off the plot (approximate); bubble "
    "size as in the source, which gives no legend for it. The arrow is BFPO's step from Zephyr-7b-beta."
)
made["06_quoted_7b_comparison"] = figures.save_figure(fig, "06_quoted_7b_comparison", caption, figures_dir)["png"]
display(Image(made["06_quoted_7b_comparison"]))

# %% [markdown]
# ## Training, margins, the multiplier, compute (measured here)
#
# **Margins.** For a pair, the implicit-reward margin is $\beta\,h_\pi$ with
# $h_\pi = \log\frac{\pi(y_{hw})}{\pi_{\text{ref}}(y_{hw})} - \log\frac{\pi(y_{hl})}{\pi_{\text{ref}}(y_{hl})}$
# (written $\beta h$ in the figures). BFPO drives it to its target $g$ per label combination
# (`bfpo.labels.targets`: $+0.5, +1, -1, -0.5$ for safe>safe, safe>unsafe, unsafe>safe, unsafe>unsafe);
# the other methods' margins show what each one learned instead.
#
# **The multiplier.** Safe RLHF's $\lambda$ rises while the mean episode cost $J_C$ of the recent
# rollouts exceeds the threshold $d$ and falls below it: $\log\lambda \leftarrow \log\lambda +
# \eta\,(J_C - d)\,\lambda$ (`bfpo.ppo.LagrangeMultiplier`). The gold panel shows whether the cost
# model's view of harm matches the gold judge's.
#
# **Compute.** FLOPs are estimated from parameter and token counts (Kaplan et al. 2020; `bfpo.compute`):
# a forward pass costs $2N$ per token, a training step $(4N + 2N_{\text{trainable}})$ per token, sampling
# $2N(T_{\text{prompt}} + T_{\text{new}})$. Safe RLHF's curve starts after its reward and cost models.
# The compute claim reads, off the mean curve over seeds, the FLOPs at which test harmlessness first
# reaches SFT + 0.2 (linear interpolation between snapshots; `bfpo.curves.flops_to_level`).

# %%
targets = labels.targets()  # BFPO's g per label combination (alpha 0.5, B1 3)
sft_metrics = read_metrics(runs / "03_training" / "sft")
final_runs = json.loads((runs / "04_baselines" / "final_runs.json").read_text())
first_run = lambda m: Path(next(iter(final_runs[m]["models"].values()))).parent  # noqa: E731
bfpo_metrics = read_metrics(first_run("bfpo"))
fig = figures.plot_training(sft_metrics, bfpo_metrics, targets, label="BFPO")
caption = (
    f"SFT loss (notebook 03) and BFPO (notebook 04, first seed, {final_runs['bfpo']['config']}): loss, implicit-reward margin beta*h per label "
    "combination with the targets g dashed, log-prob changes. Measured here."
)
made["06_training_curves"] = figures.save_figure(fig, "06_training_curves", caption, figures_dir)["png"]
fig = figures.plot_method_margins(baselines_summary["margins_seed0"], targets)
caption = "Implicit-reward margin beta*h per method and label combination on held-out pairs (seed 0). Measured here."
made["06_method_margins"] = figures.save_figure(fig, "06_method_margins", caption, figures_dir)["png"]
display(Image(made["06_method_margins"]))

# %% [markdown]
# The multiplier, per seed, then the compute curves.

# %%
if "safe_rlhf" in final_runs:
    ppo_dirs = {f"seed {s}": Path(p).parent for s, p in final_runs["safe_rlhf"]["models"].items()}
    fig = figures.plot_safe_rlhf(
        {name: read_metrics(p) for name, p in ppo_dirs.items()}, starts=baselines_summary["constraint"]
    )
    caption = (
        f"Safe RLHF's PPO-Lagrangian with its chosen configuration ({final_runs['safe_rlhf']['config']}): lambda; "
        "the window mean cost J_C with each seed's start J_C (dot) and threshold d = J_C(start) - m (dashed); "
        "reward, the gold judge's unsafe rate of the rollouts and KL per iteration, per seed. Measured here."
    )
    made["06_safe_rlhf_lambda"] = figures.save_figure(fig, "06_safe_rlhf_lambda", caption, figures_dir)["png"]
curves = pd.read_csv(runs / "04_baselines" / "curves.csv")
level = baselines_summary["compute"]["levels"][0]["level"]
fig = figures.plot_compute_curves(curves, level, titles)
caption = (
    f"Test-wording harmlessness against cumulative training FLOPs beyond SFT (log) along every BFPO and Safe RLHF "
    f"run: thin lines per seed, thick the mean over seeds; dashed, the level SFT + 0.2 = {level:.2f}. Safe RLHF's "
    "curve starts after its reward and cost models. Measured here."
)
made["06_compute"] = figures.save_figure(fig, "06_compute", caption, figures_dir)["png"]
display(Image(made["06_compute"]))

# %% [markdown]
# ## The paper's claims beside this run
#
# For a claim about a method $m$ and a metric (harmlessness, helpfulness), the **paired change** from
# the SFT start is measured on the same seeds $s$ and prompts $p$:
# $\Delta = \frac{1}{SP}\sum_{s,p}\big(m_{s,p} - \text{SFT}_{s,p}\big)$, with the same seed-level t
# interval over the seeds' paired changes for its 95% interval $[\Delta_{lo}, \Delta_{hi}]$; "BFPO minus each method" is
# paired the same way. The verdict rule, fixed before the run: **agrees** when $\Delta_{lo} > t$,
# **does not agree** when $\Delta_{hi} < t$, **inconclusive** otherwise, with threshold $t = 0$
# ($t = -0.05$ for "helpfulness kept"), and always inconclusive under 5 seeds. The **Pareto front** lists
# the methods no other method beats on both mean helpfulness and mean harmlessness.
#
# **Replication.** The report seeds are split into two fixed, disjoint halves A and B before the run
# (`bfpo.study.StudyProfile.halves`). Each claim's verdict is taken on A, on B and on all seeds; it is
# **replicated** only when the three agree, as a re-run on another machine (a new draw of the study)
# should. The power table gives, for each claim, the seed spread and the smallest change the study
# could detect with 80 % power.

# %%
# RESULTS.md: the claims beside this run's numbers, the replication, power, tuning and Safe RLHF tables
# (bfpo.summary writes it; the same file a reader finds in the figures folder)
path, written = summary.write(
    profile, runs, results_csv, df, prompts, baselines_summary, sweep, titles, made, figures_dir
)
display(Markdown(path.read_text()))
write_json(runs / "06_figures" / "results.json", written)

# %% [markdown]
# ## What we saw
#
# The paper's claims, in a few lines; every number is read from the results file this notebook
# wrote (`bfpo.what_we_saw`), so the words follow the run.

# %%
display(Markdown(what_we_saw.figures(runs / "06_figures" / "results.json")))
