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
# # 05 · Evaluation: benchmarks, judged harmlessness, win rate
#
# `bfpo.evaluation` scores any causal LM the way the paper did:
#
# * **discriminative** tasks by log-likelihood, with lm-evaluation-harness 0.4's prompt formats and
#   metrics: TruthfulQA MC1/MC2, CrowS-Pairs, the five ETHICS tasks and BBQ (accuracy and bias
#   scores) on the harmlessness side, ARC-Challenge and MMLU on the helpfulness side; every
#   example's log-likelihoods are kept;
# * **generative harmlessness**: answers to AdvBench (the paper's 388 prompts), HarmBench, XSTest
#   (safe prompts: over-refusal; unsafe prompts: harmless rate) and ToxiGen, and at paper scale
#   ALERT, ALERT-adversarial, RealToxicityPrompts-challenging, PKU-SafeRLHF test and HHH harmless,
#   judged by a pluggable judge (here the refusal-pattern judge; at paper scale the HarmBench
#   classifier with the official contextual prompt), with 95% Wilson intervals;
# * **helpfulness**: win rate against the text-davinci-003 reference outputs of AlpacaEval with a
#   pairwise judge (here Safe RLHF's reward model from notebook 04, the paper used GPT-4), and on
#   the SafeHelp world the gold judge.
#
# **Smoke profile**: the tiny models of notebooks 03 and 04 on the first examples of each task.
# They are ~1M-parameter models trained on a synthetic world, so on the real benchmarks they sit
# at chance: these numbers check the machinery (and show the format of the paper's tables), not
# the method. The SafeHelp rows are the meaningful ones at this scale. **Paper profile**: the 7B
# models of the paper's comparison on the official BFPO evaluation (`evaluation.OFFICIAL_TASKS`, the
# full test sets fetched from the hub), judged by the HarmBench classifier.

# %% tags=["parameters"]
profile = "smoke"  # smoke, cpu, gpu or paper
settings_file = None  # the profile's settings; None: bfpo/settings/<profile>.yaml
output_dir = None  # results folder, default runs/profile
figures_dir = "figures"  # where figures are written
limit_mc = None  # examples per multiple-choice task; None: the settings' (evaluation.limit_mc; paper: all)
limit_generative = None  # prompts per generative task; None: the settings' (evaluation.limit_generative)
safehelp_samples = None  # sampled answers per SafeHelp prompt; None: the settings'
parallel = None  # models evaluated at once (one thread each); None: the settings' (1 in the paper profile: 7B)

# %%
from IPython.display import Image, Markdown, display

from bfpo import evaluation, figures, profiles, what_we_saw
from bfpo.io import project_path, write_csv, write_json

if profile not in ("smoke", "cpu", "gpu", "paper"):
    raise ValueError(f"profile: expected 'smoke', 'cpu', 'gpu' or 'paper', got {profile!r}")
runs = project_path(output_dir or f"runs/{profile}")
out_dir = runs / "05_evaluation"
# smoke / cpu: notebook 04's chosen models (first seed) on the vendored subsets, refusal judge, greedy answers;
# paper: the 7B models of the paper's comparison on the official BFPO evaluation (bfpo.evaluation.suite)
settings = profiles.load(profile, settings_file)["evaluation"]
limit_mc = limit_mc or settings["limit_mc"]
limit_generative = limit_generative or settings["limit_generative"]
safehelp_samples, parallel = safehelp_samples or settings["safehelp_samples"], parallel or settings["parallel"]
setup = evaluation.suite(profile, runs, limit_mc, limit_generative, settings["judge"])
if setup.left_out:
    print(f"not trained in notebook 04, left out: {setup.left_out}")
candidates, judge, limits = setup.models, setup.judge, setup.limits
print(f"{len(candidates)} models x {len(setup.tasks)} tasks; judge: {judge}")

# %% [markdown]
# ## The metrics
#
# **Multiple choice** (lm-evaluation-harness 0.4). Each choice $a_k$ is scored by its summed
# log-likelihood as a continuation of the context $x$, $\ell_k = \sum_t \log \pi(a_{k,t} \mid x, a_{k,<t})$;
# the prediction is $\mathrm{arg\,max}_k \ell_k$ (``acc``), or $\mathrm{arg\,max}_k \ell_k / \text{bytes}(a_k)$ (``acc_norm``).
# TruthfulQA MC2 is the normalised probability mass of the true answers $T$ among all answers $A$,
# $\text{mc2} = \sum_{k \in T} e^{\ell_k} / \sum_{k \in A} e^{\ell_k}$. CrowS-Pairs reports
# ``pct_stereotype``, the share of pairs whose more stereotypical sentence is likelier (0.5 is unbiased),
# and ``likelihood_diff``, the mean $|\ell_{\text{more}} - \ell_{\text{less}}|$. BBQ reports accuracy on
# ambiguous and disambiguated contexts and the bias scores of Parrish et al. (2022, section 4.2):
#
# $$s_{\text{DIS}} = 2\,\frac{n_{\text{biased}}}{n_{\text{non-unknown}}} - 1, \qquad
#   s_{\text{AMB}} = (1 - \text{acc}_{\text{AMB}})\, s_{\text{DIS}}^{\text{(amb)}},$$
#
# from $-1$ (always against the stereotype) to $+1$ (always with it), 0 unbiased.
#
# **Generative harmlessness.** Each answer is judged harmless or not; the harmless rate $\hat p = k / n$
# comes with the 95% Wilson interval ($z = 1.96$)
#
# $$\frac{\hat p + \frac{z^2}{2n} \pm z \sqrt{\frac{\hat p (1 - \hat p)}{n} + \frac{z^2}{4n^2}}}{1 + \frac{z^2}{n}},$$
#
# which stays inside $[0, 1]$ and is honest at the small $n$ of the smoke profile. XSTest's safe
# prompts report the over-refusal rate instead (refusing a safe request is the failure).
#
# **Win rate** (AlpacaEval). A pairwise judge compares each answer with the text-davinci-003 reference:
# $w_i = 1$ win, $\tfrac12$ tie, 0 loss; the win rate is $\bar w$ with the normal interval
# $\bar w \pm 1.96\, s_w / \sqrt{n}$.
#
# **TruthfulQA generation.** For a similarity $s$ (BLEU, ROUGE-1/2/L) between the answer and the true
# answers $T$ and false answers $F$: $s_{\max} = \max_{t \in T} s(\cdot, t)$,
# $s_{\text{diff}} = s_{\max} - \max_{f \in F} s(\cdot, f)$ and $s_{\text{acc}} = [s_{\text{diff}} > 0]$.

# %%
df = evaluation.run_suite(setup, out_dir / "cache", safehelp_samples, parallel)
write_csv(out_dir / "results.csv", df)
print(f"{len(df)} rows -> {out_dir / 'results.csv'}")

# %% [markdown]
# ## Tables per category, as in the paper
#
# Main metric per task (acc_norm for ARC, mc2 for TruthfulQA MC2, pct_stereotype for CrowS-Pairs
# where 0.5 is unbiased, harmless rates for the generative sets, over-refusal on XSTest's safe
# prompts, win rate on AlpacaEval). Measured here.

# %%
keep = evaluation.main_metrics(df)  # each task's main metrics, with a column name
tables = {}
for category in ("harmlessness", "helpfulness", "safehelp"):
    part = keep[keep["category"] == category]
    if len(part):
        tables[category] = part.pivot_table(index="model", columns="column", values="value", sort=False)
        display(Markdown(f"**{category}** (n per task: {int(part['n'].min())}-{int(part['n'].max())})"))
        display(tables[category].round(3))
results = {
    "profile": profile,
    "models": {k: str(v) for k, v in candidates.items()},
    "judge": judge,
    "limits": limits,
    "tables": {k: t.round(4).to_dict() for k, t in tables.items()},
}

# %%
wide = keep.pivot_table(index="model", columns="column", values="value", sort=False)
fig = figures.plot_benchmark_table(wide, title=f"Benchmarks, profile {profile} (measured here)")
caption = (
    f"Main metric per task and model (profile {profile}, judge {judge}; smoke: first {limit_mc} examples per "
    f"multiple-choice task, {limit_generative} prompts per generative task). Tiny SafeHelp models sit near chance "
    "on the real benchmarks; the SafeHelp columns are the informative ones at this scale. Measured here."
)
shown = figures.save_figure(fig, "05_benchmarks", caption, figures_dir)
results["figure"] = shown["png"].name
display(Image(shown["png"]))  # the saved file, inline
write_json(out_dir / "results.json", results)
display(Markdown(f"Tidy results: `{out_dir / 'results.csv'}`; per-example outputs in `{out_dir / 'cache'}`."))

# %% [markdown]
# ## What we saw
#
# The models on the benchmarks, in a few lines; every number is read from the results file this notebook
# wrote (`bfpo.what_we_saw`), so the words follow the run.

# %%
display(Markdown(what_we_saw.evaluation(out_dir / "results.csv")))
