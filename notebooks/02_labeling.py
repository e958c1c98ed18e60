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
# # 02 · Labelling: preference pairs on two factors
#
# BFPO needs every pair labelled on **two factors**: which response is *more helpful*
# (that one is `chosen`, the paper's $y_{hw}$), and whether *each* response is *safe*
# ($I_{\text{safe}}(y_{hw})$, $I_{\text{safe}}(y_{hl})$). This notebook turns raw records into that
# schema, for the real data subsets in `data/` (vendored; see `data/SOURCES.md`) and for **SafeHelp**, the synthetic world in
# which the later notebooks train CPU-sized models:
#
# | column | type | meaning |
# |---|---|---|
# | `prompt` | str | the conversation up to the response |
# | `chosen` / `rejected` | str | the more / less helpful response |
# | `chosen_safe` / `rejected_safe` | bool | the safety label of each |
# | `source` | str | where the pair comes from |
#
# The two safety labels fix the BFPO target $g$ of the pair (notebook 01):
# $g = B_3(B_1 I_{\text{safe}}(y_{hw}) - I_{\text{safe}}(y_{hl})) - B_2$ with $B_1=3$, $B_3=\tfrac12$, $B_2=\alpha=\tfrac12$,
# i.e. $+0.5$ (safe > safe), $+1$ (safe > unsafe), $-1$ (unsafe > safe), $-0.5$ (unsafe > unsafe).

# %% tags=["parameters"]
profile = "smoke"  # smoke, cpu, gpu or paper
settings_file = None  # the profile's settings; None: bfpo/settings/<profile>.yaml
output_dir = None  # results folder, default runs/profile
figures_dir = "figures"  # where figures are written

# %%
import pandas as pd
import torch
from IPython.display import Image, Markdown, display

from bfpo import data, figures, losses, profiles, what_we_saw
from bfpo import toyworld as tw
from bfpo.io import project_path, write_json

# the settings file's labeling section. CPU profiles: the offline subsets and a SafeHelp world sized for
# minutes of CPU training; paper: the full hub data sets at the pinned revisions (needs the hub) and a
# larger SafeHelp world.
cfg = profiles.load(profile, settings_file)["labeling"]
out_dir = project_path(output_dir or f"runs/{profile}") / "02_labeling"
results = {"profile": profile, **cfg}
cfg

# %% [markdown]
# ## 1 · Real preference sets
#
# * **PKU-SafeRLHF** (the paper's public safety data): `chosen` follows `better_response_id`, the
#   safety labels follow `is_response_{0,1}_safe`. The hub copy is pinned to the revision the
#   paper used; offline we read the first 16 test records of the same format.
# * **HH-RLHF harmless-base**: annotators picked the *less harmful* reply. We label it safe and the
#   other unsafe. Because $g(0,1) = -g(1,0)$, the BFPO loss of such a pair does not depend on which
#   reply is the more helpful, so the missing helpfulness label costs nothing; turning a relative
#   judgement into absolute labels is the approximation.
# * **HH-RLHF helpful-base**: annotators picked the *more helpful* reply in benign conversations;
#   both replies are labelled safe. This is also the offline stand-in for the paper's helpful-only
#   buffer (UltraFeedback-binarized on the hub).
#
# Every record is validated. The real subsets contain a few broken records; we load with
# `skip_invalid=True`, which reports every skipped line instead of dropping it silently.

# %%
skipped = []
if cfg["hub"]:
    real = {
        # the official recipe trains on the first 20% of PKU-SafeRLHF train (cut before shuffling, seed 42)
        "pku_saferlhf": data.official_mix(
            [(data.pku_saferlhf_pairs(data.PKU_SAFERLHF[0], split="train", skip_invalid=True, skipped=skipped), 0.2)]
        ),
        "hh_harmless": data.hh_rlhf_pairs(subset="harmless-base", skip_invalid=True, skipped=skipped),
        "hh_helpful": data.hh_rlhf_pairs(subset="helpful-base", skip_invalid=True, skipped=skipped),
        "helpful_buffer": data.helpful_buffer_pairs(skip_invalid=True, skipped=skipped),
    }
else:
    hh_helpful = data.hh_rlhf_pairs(
        data.data_file("hh_rlhf_helpful_base_test_500.jsonl"), subset="helpful-base", skip_invalid=True, skipped=skipped
    )
    real = {
        "pku_saferlhf": data.pku_saferlhf_pairs(data.data_file("pku_saferlhf_alpaca7b_test_16.jsonl")),
        "hh_harmless": data.hh_rlhf_pairs(
            data.data_file("hh_rlhf_harmless_base_test_500.jsonl"),
            subset="harmless-base",
            skip_invalid=True,
            skipped=skipped,
        ),
        "hh_helpful": hh_helpful,
        "helpful_buffer": data.helpful_buffer_pairs(
            hh_helpful.remove_columns(["chosen_safe", "rejected_safe", "source"])
        ),
    }
pku_sft = data.pku_saferlhf_sft(
    data.PKU_SAFERLHF[0] if cfg["hub"] else data.data_file("pku_saferlhf_alpaca7b_test_16.jsonl")
)
for name, ds in real.items():  # the paper profile of notebook 03 trains on these
    data.save(ds, out_dir / "real" / name)
data.save(pku_sft, out_dir / "real" / "pku_saferlhf_sft")
results["real_pairs"] = {k: len(v) for k, v in real.items()}
results["skipped"] = [
    {"file": project_path(s.where).name, "line": s.line, "reason": s.reason.split(": ", 1)[-1]} for s in skipped
]
display(pd.DataFrame(results["skipped"]) if skipped else Markdown("No record skipped."))
pd.Series(results["real_pairs"], name="pairs").to_frame()


# %% [markdown]
# One PKU-SafeRLHF record, as a labelled pair (texts shortened), and the SFT view the paper mixes
# into its SFT data (the *safer* response as the target):


# %%
def short(text, n=160):
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


row = real["pku_saferlhf"][0]
display(
    pd.DataFrame([{k: short(v) if isinstance(v, str) else v for k, v in row.items()}]).T.rename(columns={0: "pair"})
)
print("SFT target:", short(pku_sft[0]["response"]))

# %% [markdown]
# ## 2 · The SafeHelp world
#
# Real 7B-scale training does not fit a laptop CPU, so the later notebooks train ~1M-parameter
# models on **SafeHelp**, a small synthetic language with the same tension as the paper:
#
# * topics of three kinds: **benign** ("bake bread"), **scary but benign** ("kill a python
#   process", the over-refusal trap of XSTest) and **harmful** ("kill my neighbor"); scary and
#   harmful topics share their verbs;
# * a helpful answer walks through the topic's content words; on a harmful topic those words are
#   themselves harmful, so complying is helpful *and* unsafe;
# * a **gold judge** scores any text: helpfulness = distinct topic words / 4 (0 for a refusal),
#   unsafe = any word of the harmful lexicon (harmful topic words and insults).

# %%
print(
    pd.DataFrame([{"kind": t.kind, "task": t.task, "content words": ", ".join(t.words)} for t in tw.TOPICS]).to_string(
        index=False
    )
)

# %% [markdown]
# The judge must separate the quadrants on text it has never seen, not only on the templates.
# We check it on responses of every kind to **held-out** prompt wordings, and on **perturbed**
# copies of them (shuffled words, changed case and punctuation, filler words). The table counts
# judged quadrants against the quadrant the response was built to be in.

# %%
rows = tw.judge_check(per_kind=10, seed=2) + tw.judge_check(per_kind=10, seed=2, perturbed=True)
checks = pd.DataFrame(rows)
judge_accuracy = {
    ("perturbed" if p else "clean"): float((g.expected == g.judged).mean()) for p, g in checks.groupby("perturbed")
}
results["judge_accuracy"] = judge_accuracy
assert min(judge_accuracy.values()) == 1.0, judge_accuracy
display(pd.crosstab(checks.expected, checks.judged, margins=True))
judge_accuracy

# %% [markdown]
# Now the SafeHelp data sets the later notebooks train on, written to disk so that notebook 03
# reads only files (no hidden state):
#
# * `pairs`: preference pairs over the four label combinations (40% safe > safe, 10% safe >
#   unsafe, 40% unsafe > safe, 10% unsafe > unsafe); labels come from the gold judge;
# * `buffer`: the helpful-only buffer, safe > safe pairs on benign and scary prompts;
# * `sft`: demonstrations for the SFT start, which is partly compliant on harmful topics and partly
#   over-refusing on scary ones (per-topic rates drawn from 0.3 to 0.7), so that preference
#   training has something to fix in both directions;
# * `eval_pairs`: pairs on held-out prompt wordings.

# %%
world = tw.WorldConfig(seed=0)
safehelp = {
    "pairs": tw.preference_pairs(cfg["safehelp_pairs"], world),
    "buffer": tw.buffer_pairs(cfg["safehelp_buffer"], seed=0),
    "sft": tw.sft_data(cfg["safehelp_sft"], world),
    "eval_pairs": tw.preference_pairs(cfg["safehelp_eval_pairs"], world, held_out=True),
}
for name, ds in safehelp.items():
    data.save(ds, out_dir / "safehelp" / name)
results["safehelp"] = {name: len(ds) for name, ds in safehelp.items()}
results["sft_refusal_rates"] = tw.refusal_rates(world)
safehelp["pairs"].to_pandas().head(8)

# %% [markdown]
# **Red-teaming pairs.** The paper's second experiment labels a model's *own* generations on
# harmful prompts with a judge. Here the "model" is a stand-in that samples responses the way the
# SFT start does (complying or refusing at each topic's rate, sometimes vaguely); notebook 04 repeats
# this with the trained model's real generations. `bfpo.data.red_team_pairs` turns generations and a
# judge into pairs of the same schema.

# %%
records = tw.stand_in_generations(per_topic=20, config=world, seed=3)
red_team = data.red_team_pairs(records, tw.judge_scores, source="safehelp_red_team")
results["safehelp"]["red_team"] = len(red_team)
red_team.to_pandas().head(5)

# %% [markdown]
# ## 3 · Examples of each label combination
#
# One pair per source and combination (texts shortened). In every row `chosen` is the more
# helpful response; the safety labels decide the sign and size of the BFPO target.

# %%
sources = {**real, "safehelp": safehelp["pairs"], "safehelp_buffer": safehelp["buffer"], "safehelp_red_team": red_team}
examples = []
for name, ds in sources.items():
    seen = set()
    for r in ds:
        combo = data.label_combination(r["chosen_safe"], r["rejected_safe"])
        if combo in seen:
            continue
        seen.add(combo)
        examples.append(
            {
                "source": name,
                "labels": combo,
                "prompt": short(r["prompt"][-120:], 70),
                "chosen": short(r["chosen"], 70),
                "rejected": short(r["rejected"], 70),
            }
        )
with pd.option_context("display.max_colwidth", 80):
    display(pd.DataFrame(examples).sort_values(["labels", "source"]).reset_index(drop=True))

# %% [markdown]
# ## 4 · Label combinations per source, and the BFPO target of each pair

# %%
counts = {}
for name, ds in sources.items():
    counts[name] = list(data.label_counts(ds).values())[-1]  # per source; one source per set
table = pd.DataFrame(counts).T[list(data.LABEL_COMBINATIONS.values())]
table["pairs"] = table.sum(axis=1)
results["label_counts"] = {k: {c: int(n) for c, n in v.items()} for k, v in counts.items()}
table

# %%
all_pairs = pd.concat([ds.to_pandas().assign(source=name) for name, ds in sources.items()], ignore_index=True)
all_pairs["bfpo_target"] = losses.bfpo_target(
    torch.tensor(all_pairs.chosen_safe.values, dtype=torch.float64),
    torch.tensor(all_pairs.rejected_safe.values, dtype=torch.float64),
    alpha=0.5,
    b1=3.0,
).numpy()
all_pairs["labels"] = [
    data.label_combination(c, r) for c, r in zip(all_pairs.chosen_safe, all_pairs.rejected_safe, strict=True)
]
targets = all_pairs.groupby("labels").bfpo_target.agg(["min", "max", "count"])
# every pair of a combination gets the same target: the four values of notebook 01
target_of = {combo: float(t) for combo, t in targets["min"].items()}
assert (targets["min"] == targets["max"]).all()
assert target_of == {"safe > safe": 0.5, "safe > unsafe": 1.0, "unsafe > safe": -1.0, "unsafe > unsafe": -0.5}, (
    target_of
)
results["targets"] = target_of
results["mean_target"] = all_pairs.groupby("source").bfpo_target.mean().round(4).to_dict()
display(targets)
all_pairs.groupby("source").bfpo_target.describe()[["count", "mean", "min", "max"]]

# %%
fig = figures.plot_label_combinations(counts, target_of)
caption = (
    f"Safety labels of the preference pairs per source (profile {profile}). Each bar splits a source's pairs "
    "by (safety of the more helpful response > safety of the less helpful one); numbers are pair counts; the "
    "legend gives each combination's BFPO target g (B1 = 3, alpha = 0.5). Real sources are the offline subsets "
    "of data/ (HH-RLHF labels are derived as described in notebook 02); SafeHelp is the synthetic "
    "world labelled by its gold judge. Measured here."
)
paths = figures.save_figure(fig, "02_label_combinations", caption, figures_dir)
display(Image(paths["png"]))  # the saved file, inline
results["figure"] = paths["png"].name

# %%
write_json(out_dir / "results.json", results)
display(
    Markdown(f"Results written to `{out_dir / 'results.json'}`; SafeHelp data sets under `{out_dir / 'safehelp'}`.")
)

# %% [markdown]
# ## What we saw
#
# The labels the two factors give, in a few lines; every number is read from the results file this notebook
# wrote (`bfpo.what_we_saw`), so the words follow the run.

# %%
display(Markdown(what_we_saw.labeling(out_dir / "results.json")))
