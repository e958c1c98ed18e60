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
# * **generative harmlessness**: greedy answers to AdvBench (the paper's 388 prompts), HarmBench,
#   XSTest (safe prompts: over-refusal; unsafe prompts: harmless rate) and ToxiGen, judged by a
#   pluggable judge (here the refusal-pattern judge; at paper scale the HarmBench classifier),
#   with 95% Wilson intervals;
# * **helpfulness**: win rate against the text-davinci-003 reference outputs of AlpacaEval with a
#   pairwise judge (here Safe RLHF's reward model from notebook 04, the paper used GPT-4), and on
#   the SafeHelp world the gold judge.
#
# **Smoke profile**: the tiny models of notebooks 03 and 04 on the first examples of each task.
# They are ~1M-parameter models trained on a synthetic world, so on the real benchmarks they sit
# at chance: these numbers check the machinery (and show the format of the paper's tables), not
# the method. The SafeHelp rows are the meaningful ones at this scale. **Paper profile**: the 7B
# models of the paper's comparison, on the full data (the multiple-choice test sets fetched from
# the hub, from the sources lm-evaluation-harness 0.4 reads), judged by the HarmBench classifier.

# %% tags=["parameters"]
profile = "smoke"  # smoke, cpu or paper
output_dir = None  # results folder, default runs/profile
figures_dir = "figures"  # where figures are written
limit_mc = 50  # examples per multiple-choice task (smoke; paper: all)
limit_generative = 20  # prompts per generative task (smoke; paper: all)
safehelp_samples = 4  # sampled answers per SafeHelp prompt

# %%
import json
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from bfpo import evaluation, figures
from bfpo.io import project_path, write_json

if profile not in ("smoke", "cpu", "paper"):
    raise ValueError(f"profile: expected 'smoke', 'cpu' or 'paper', got {profile!r}")
runs = project_path(output_dir or f"runs/{profile}")
out_dir = runs / "05_evaluation"
if profile != "paper":
    base = runs / "04_baselines"
    # notebook 04's chosen configuration of each method, its first seed (final_runs.json)
    final_runs = json.loads((base / "final_runs.json").read_text()) if (base / "final_runs.json").is_file() else {}
    first = lambda m: Path(next(iter(final_runs[m]["models"].values()))) if m in final_runs else base / "missing"  # noqa: E731
    candidates = {
        "SFT start": runs / "03_training" / "sft" / "model",
        "BFPO": first("bfpo"),
        "DPO (helpfulness)": first("dpo_helpful"),
        "DPO (safety)": first("dpo_safety"),
        "IPO": first("ipo"),
        "ULMA": first("ulma"),
        "Safe RLHF": first("safe_rlhf"),
    }
    if not candidates["SFT start"].is_dir():
        raise FileNotFoundError(f"{candidates['SFT start']} is missing: run notebooks 03 and 04 first")
    skipped = [name for name, p in candidates.items() if not p.is_dir()]
    if skipped:
        print(f"not trained in notebook 04, left out: {skipped}")
    candidates = {name: p for name, p in candidates.items() if p.is_dir()}
    judge, limits = "refusal", {"mc": limit_mc, "generative": limit_generative}
    decoding, bos_rule = "greedy", "tokenizer"
    hub_dir = None  # the vendored subsets in data/ (or $BFPO_DATA_DIR)
    reward_model = base / "safe_rlhf" / "start0" / "reward_model" / "model"
    win_rate_judge = evaluation.RewardModelJudge(reward_model) if reward_model.is_dir() else None
    # every task with a subset in data/ (the sets read from the hub only are for the paper profile)
    tasks = [*evaluation.VENDORED_TASKS, *(["alpaca_eval"] if win_rate_judge else []), "safehelp"]
else:  # the 7B models of the paper's comparison (hub ids), and the BFPO model of notebook 03
    candidates = {
        "Zephyr-7b-beta": "HuggingFaceH4/zephyr-7b-beta",
        "Mistral-7B-Instruct-v0.2": "mistralai/Mistral-7B-Instruct-v0.2",
        "OpenChat-3.5": "openchat/openchat_3.5",
        "Llama-2-7b-chat": "meta-llama/Llama-2-7b-chat-hf",
        "Beaver-7b (Safe RLHF)": "PKU-Alignment/beaver-7b-v1.0",
        "Juanako-7b-UNA": "fblgit/juanako-7b-UNA",
        "BFPO": str(runs / "03_training" / "bfpo" / "model"),
    }
    # the official BFPO evaluation: the classifier's contextual prompt, sampled answers (T 0.7, top-p 0.95,
    # 256 tokens), multiple choice as lm-eval 0.4.1 encodes it (no BOS)
    judge, limits, win_rate_judge = "harmbench_cls_contextual", {"mc": None, "generative": None}, None
    decoding, bos_rule = "official", "none"
    hub_dir = runs / "hub_data"  # the full test sets, fetched from the hub once
    # the official BFPO evaluation, then the other sets of this package (HarmBench, XSTest, ToxiGen prompts, ...)
    tasks = [*evaluation.OFFICIAL_TASKS, *(t for t in evaluation.VENDORED_TASKS if t not in evaluation.OFFICIAL_TASKS)]
print(f"{len(candidates)} models x {len(tasks)} tasks; judge: {judge}")

# %%
rows = []
for name, path in candidates.items():
    for kind, group in (
        ("mc", [t for t in tasks if t in evaluation.MC_TASKS]),
        ("generative", [t for t in tasks if t not in evaluation.MC_TASKS]),
    ):
        results = evaluation.evaluate(
            path,
            group,
            judge=judge,
            limit=limits[kind],
            cache_dir=out_dir / "cache",
            win_rate_judge=win_rate_judge,
            safehelp_samples=safehelp_samples,
            hub_dir=hub_dir,
            decoding=decoding,
            bos_rule=bos_rule,
        )
        rows += evaluation.tidy(results, name)
df = pd.DataFrame(rows)
df.to_csv(out_dir / "results.csv", index=False)
print(f"{len(df)} rows -> {out_dir / 'results.csv'}")

# %% [markdown]
# ## Tables per category, as in the paper
#
# Main metric per task (acc_norm for ARC, mc2 for TruthfulQA MC2, pct_stereotype for CrowS-Pairs
# where 0.5 is unbiased, harmless rates for the generative sets, over-refusal on XSTest's safe
# prompts, win rate on AlpacaEval). Measured here.

# %%
keep = df[[r.metric in evaluation.MAIN_METRICS[r.task] for r in df.itertuples()]]  # each task's main metrics
keep = keep.assign(
    column=keep["task"]
    + " "
    + keep["metric"].str.replace("harmless_rate/", "harmless ").str.replace("over_refusal/safe", "over-refusal")
)
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
results["figure"] = figures.save_figure(fig, "05_benchmarks", caption, figures_dir)["png"].name
write_json(out_dir / "results.json", results)
display(Markdown(f"Tidy results: `{out_dir / 'results.csv'}`; per-example outputs in `{out_dir / 'cache'}`."))
