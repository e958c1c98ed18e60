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
# (`configs/accelerate/zero3_bf16.yaml`); it needs the hub and about 12 GPU-hours.

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

from bfpo import cards, data, figures, labels, models, profiles, study, train, what_we_saw
from bfpo import toyworld as tw
from bfpo.io import project_path, write_json

if profile not in ("smoke", "cpu", "gpu", "paper"):
    raise ValueError(f"profile: expected 'smoke', 'cpu', 'gpu' or 'paper', got {profile!r}")
runs = project_path(output_dir or f"runs/{profile}")
labeled = runs / "02_labeling"
out_dir = runs / "03_training"
settings = profiles.load(profile, settings_file)["training"]
processes, eval_samples = processes or settings["processes"], eval_samples or settings["eval_samples"]
# smoke, cpu: accelerate's defaults with `processes` CPU processes; paper: DeepSpeed ZeRO-3 with bf16
accelerate_config = str(project_path(settings["accelerate_config"])) if "accelerate_config" in settings else None
if profile != "paper":
    sft_run, bfpo_run = settings["sft"], settings["bfpo"]
    sft_steps, bfpo_steps = sft_steps or sft_run["steps"], bfpo_steps or bfpo_run["steps"]
    # the study's precision (smoke "auto": bf16 where this machine's probe finds native bf16 matmuls; cpu "no":
    # fp32, as its committed results were made) and padded batches, as every run of the study
    budget = study.profile_settings(profile, settings_file).budget
    precision, padding_free = budget.mixed_precision, budget.padding_free
results = {"profile": profile, "processes": processes, "sft_steps": sft_steps, "bfpo_steps": bfpo_steps}

# %% [markdown]
# ## 1 · The start model
#
# Smoke: a BPE tokenizer (1,024 tokens) trained with `tokenizers` on the SafeHelp training text,
# and a 4-layer Llama of width 128 with tied embeddings, saved with `save_pretrained`. Paper:
# Mistral-7B from the hub.

# %%
if profile != "paper":
    sft_data = data.load(labeled / "safehelp" / "sft")
    pairs = data.load(labeled / "safehelp" / "pairs")
    texts = [models.format_prompt(p) + " " + r for p, r in zip(sft_data["prompt"], sft_data["response"], strict=True)]
    tokenizer = models.train_tokenizer(texts + list(pairs["chosen"]) + list(pairs["rejected"]), vocab_size=1024)
    tiny = models.tiny_llama(tokenizer, seed=0)
    init = models.save(tiny, tokenizer, out_dir / "init", cards.init_card(tiny.config.to_dict()))
    n_params = models.count_parameters(models.load_model(init))[1]
    results["parameters"] = n_params
    print(f"tiny Llama: {n_params:,} parameters, vocabulary {len(tokenizer)}")

# %% [markdown]
# ## 2 · SFT
#
# The SFT data mixes full answers and refusals at per-topic rates (notebook 02), so the start
# model is partly compliant on harmful prompts and partly over-refusing on scary ones.

# %%
if profile != "paper":
    sft_cfg = train.TrainConfig(
        model=str(init),
        output_dir=str(out_dir / "sft"),
        train_data=str(labeled / "safehelp" / "sft"),
        mode="sft",
        learning_rate=sft_run["learning_rate"],
        warmup_ratio=sft_run["warmup_ratio"],
        per_device_batch_size=sft_run["global_batch"] // processes,
        max_steps=sft_steps,
        log_every=5,
        seed=0,
        mixed_precision=precision,
        padding_free=padding_free,
    )
else:
    general = data.ultrachat_sft()
    # official mix_sft.yaml: all of UltraChat (every turn) plus the first 20% of PKU-SafeRLHF train
    # (safer responses), shuffled (seed 42)
    data.save(
        data.official_mix([(general, 1.0), (data.load(labeled / "real" / "pku_saferlhf_sft"), 0.2)]),
        out_dir / "data" / "sft_mix",
    )
    sft_cfg = train.TrainConfig.from_yaml(project_path(settings["sft_config"]), {"output_dir": str(out_dir / "sft")})
sft_summary = train.launch(sft_cfg, num_processes=processes, accelerate_config=accelerate_config)
assert train.ranks_seen(out_dir / "sft") == list(range(processes)), "every process must have taken part"
results["sft"] = {
    k: sft_summary[k]
    for k in ("steps", "processes", "global_batch", "seconds", "trainable_parameters", "mixed_precision")
}
results["sft"]

# %% [markdown]
# ## 3 · BFPO
#
# Training pairs from notebook 02 plus the helpful-only buffer (a quarter of every global batch).
# $\beta$ (the paper's $\tau$) is 0.1 here, for a tiny model and a few hundred steps; the paper
# uses 0.01 with a 7B model.

# %%
if profile != "paper":
    bfpo_cfg = train.TrainConfig(
        model=str(out_dir / "sft" / "model"),
        output_dir=str(out_dir / "bfpo"),
        train_data=str(labeled / "safehelp" / "pairs"),
        buffer_data=str(labeled / "safehelp" / "buffer"),
        buffer_ratio=bfpo_run["buffer_ratio"],
        loss="bfpo",
        beta=bfpo_run["beta"],
        alpha=bfpo_run["alpha"],
        b1=bfpo_run["b1"],
        learning_rate=bfpo_run["learning_rate"],
        warmup_ratio=bfpo_run["warmup_ratio"],
        per_device_batch_size=bfpo_run["global_batch"] // processes,
        max_steps=bfpo_steps,
        log_every=5,
        seed=0,
        mixed_precision=precision,
        padding_free=padding_free,
    )
else:
    bfpo_cfg = train.TrainConfig.from_yaml(project_path(settings["bfpo_config"]), {"output_dir": str(out_dir / "bfpo")})
bfpo_summary = train.launch(bfpo_cfg, num_processes=processes, accelerate_config=accelerate_config)
assert train.ranks_seen(out_dir / "bfpo") == list(range(processes))
results["bfpo"] = {
    k: bfpo_summary[k]
    for k in (
        "steps",
        "processes",
        "global_batch",
        "seconds",
        "train_examples",
        "buffer_examples",
        "skipped_truncated",
        "trainable_parameters",
        "mixed_precision",
    )
}
results["bfpo"]

# %% [markdown]
# ## 4 · Curves and per-combination margins
#
# Left to right: the SFT loss, the BFPO loss, the implicit-reward margin $\beta h$ of each label
# combination against its target $g$ (dashed), and how far the policy moved the log-probs of the
# chosen and rejected responses from the reference.

# %%
sft_metrics, bfpo_metrics = train.read_metrics(out_dir / "sft"), train.read_metrics(out_dir / "bfpo")
targets = labels.targets(alpha=bfpo_cfg.alpha, b1=bfpo_cfg.b1)  # g per label combination, from the run's config
fig = figures.plot_training(sft_metrics, bfpo_metrics, targets, label="BFPO")
caption = (
    f"Training on SafeHelp (profile {profile}, {processes} accelerate processes). From left: SFT loss; BFPO loss; "
    "implicit-reward margin beta*h per label combination (chosen = the more helpful response), with the BFPO "
    "targets g as dashed lines; change of the chosen and rejected log-probs from the reference. Running means "
    "over 10 logged steps. Measured here."
)
shown = figures.save_figure(fig, "03_training_curves", caption, figures_dir)
results["figure_training"] = shown["png"].name
display(Image(shown["png"]))  # the saved file, inline
late = bfpo_metrics[-max(1, len(bfpo_metrics) // 4) :]
margins = {
    c: sum(m[f"margin/{c}"] for m in late if f"margin/{c}" in m) / max(1, sum(f"margin/{c}" in m for m in late))
    for c in targets
}
results["final_margins"] = margins
# the theory's direction: the largest targets (+1 and -1) move first ...
assert margins["safe>unsafe"] > 0 > margins["unsafe>safe"], margins
# ... and after a few hundred steps every combination has the sign of its target (see the curves;
# the unsafe > unsafe margin first rises with the buffer's helpfulness push, then turns)
if profile != "paper" and bfpo_steps >= 300:
    assert margins["safe>safe"] > 0 and margins["unsafe>unsafe"] < 0, margins
pd.Series(margins, name="beta*h, last quarter of the logs").to_frame().assign(target=pd.Series(targets))

# %% [markdown]
# ## 5 · Before and after, by the gold judge
#
# Eight sampled responses (temperature 1) per evaluation prompt, judged by the SafeHelp gold judge:
# helpfulness on benign and scary prompts, over-refusal on scary ones, harmlessness on harmful
# ones. We report prompts in the training wordings and in the **test** wordings, never seen in training
# (`bfpo.toyworld.SPLITS`). This is one run with one seed, to show the mechanics; the numbers to
# rely on come from notebook 04's multi-seed study.

# %%
if profile != "paper":
    judged, rows = {}, {}
    for name in ("sft", "bfpo"):
        model = models.load_model(out_dir / name / "model")
        tok = models.load_tokenizer(out_dir / name / "model")
        for split in ("training", "test"):
            key = f"{name.upper()} ({split} wordings)"
            judged[key], rows[key] = tw.evaluate_model(model, tok, samples_per_prompt=eval_samples, split=split, seed=0)
    results["judged"] = judged
    table = pd.DataFrame(judged).T[["helpfulness", "helpful_rate", "over_refusal", "harmlessness", "samples"]]
    display(table.round(3))
    fig = figures.plot_judged(judged, "SFT start and BFPO, judged by the SafeHelp gold judge (measured here)")
    caption = (
        "SafeHelp gold-judge scores of the SFT start and the BFPO model (8 samples per prompt, temperature 1), on "
        "training and test prompt wordings (one run, one seed: see notebook 04 for the multi-seed study). Helpfulness on benign and scary prompts, over-refusal on scary "
        "prompts (lower is better), harmlessness on harmful prompts. Measured here."
    )
    shown = figures.save_figure(fig, "03_judged_before_after", caption, figures_dir)
    results["figure_judged"] = shown["png"].name
    display(Image(shown["png"]))  # the saved file, inline
    sample = (
        pd.DataFrame(rows["BFPO (test wordings)"])
        .groupby("kind")
        .head(2)[["kind", "prompt", "response", "helpfulness", "safe"]]
    )
    display(sample)

# %%
write_json(out_dir / "results.json", results)
display(Markdown(f"Results written to `{out_dir / 'results.json'}`; models under `{out_dir}`."))

# %% [markdown]
# ## What we saw
#
# One SFT and one BFPO run, in a few lines; every number is read from the results file this notebook
# wrote (`bfpo.what_we_saw`), so the words follow the run.

# %%
display(Markdown(what_we_saw.training(out_dir / "results.json")))
