"""Notebook 03's runs, one function per step: the start model, the SFT and BFPO configurations (from the
profile's settings file, or the paper's recipe files), the per-combination margins and the gold-judge
before/after. The notebook explains each step and calls one function here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from bfpo import cards, data, models, profiles, study, train
from bfpo import toyworld as tw
from bfpo.io import project_path

SFT_KEYS = ("steps", "processes", "global_batch", "seconds", "trainable_parameters", "mixed_precision")
BFPO_KEYS = SFT_KEYS[:4] + ("train_examples", "buffer_examples", "skipped_truncated") + SFT_KEYS[4:]
"""What ``results.json`` keeps of each training summary."""


@dataclasses.dataclass
class Run:
    """Notebook 03's settings: the profile's ``training`` section with the notebook's overrides."""

    profile: str
    settings: dict
    labeled: Path
    out_dir: Path
    processes: int
    eval_samples: int
    sft_steps: int | None
    bfpo_steps: int | None
    accelerate_config: str | None
    budget: study.Budget | None = None  # the study's precision and padded batches (not in the paper profile)

    def results(self) -> dict:
        return {"profile": self.profile, "processes": self.processes, "sft_steps": self.sft_steps,
                "bfpo_steps": self.bfpo_steps}  # fmt: skip


def setup(profile, settings_file=None, output_dir=None, processes=None, sft_steps=None, bfpo_steps=None,
          eval_samples=None) -> Run:  # fmt: skip
    """Resolve the profile's training settings (None keeps the settings file's value)."""
    if profile not in profiles.NAMES:
        raise ValueError(f"profile: expected one of {', '.join(profiles.NAMES)}, got {profile!r}")
    runs = project_path(output_dir or f"runs/{profile}")
    settings = profiles.load(profile, settings_file)["training"]
    # smoke, cpu, gpu: accelerate's defaults with `processes` CPU processes; paper: DeepSpeed ZeRO-3 with bf16
    accelerate = str(project_path(settings["accelerate_config"])) if "accelerate_config" in settings else None
    budget = None
    if profile != "paper":  # the paper's steps are in its recipe files
        sft_steps, bfpo_steps = sft_steps or settings["sft"]["steps"], bfpo_steps or settings["bfpo"]["steps"]
        # the study's precision and padded batches, as every run of the study
        budget = study.profile_settings(profile, settings_file).budget
    return Run(profile, settings, runs / "02_labeling", runs / "03_training", processes or settings["processes"],
               eval_samples or settings["eval_samples"], sft_steps, bfpo_steps, accelerate, budget)  # fmt: skip


def start_model(r: Run) -> tuple[Path, int, int]:
    """A BPE tokenizer (1,024 tokens) trained on the SafeHelp training text and a tiny Llama from a
    config, saved as ``init``; returns (its folder, parameters, vocabulary)."""
    sft_data = data.load(r.labeled / "safehelp" / "sft")
    pairs = data.load(r.labeled / "safehelp" / "pairs")
    texts = [models.format_prompt(p) + " " + y for p, y in zip(sft_data["prompt"], sft_data["response"], strict=True)]
    tokenizer = models.train_tokenizer(texts + list(pairs["chosen"]) + list(pairs["rejected"]), vocab_size=1024)
    tiny = models.tiny_llama(tokenizer, seed=0)
    init = models.save(tiny, tokenizer, r.out_dir / "init", cards.init_card(tiny.config.to_dict()))
    return Path(init), models.count_parameters(models.load_model(init))[1], len(tokenizer)


def _common(r: Run, run: dict) -> dict:
    b = r.budget
    return {
        "learning_rate": run["learning_rate"],
        "warmup_ratio": run["warmup_ratio"],
        "per_device_batch_size": run["global_batch"] // r.processes,
        "log_every": 5,
        "seed": 0,
        "mixed_precision": b.mixed_precision,
        "padding_free": b.padding_free,
    }


def sft_config(r: Run, init) -> train.TrainConfig:
    """SFT of the start model on notebook 02's SFT data, from the settings' ``training.sft``."""
    return train.TrainConfig(
        model=str(init), output_dir=str(r.out_dir / "sft"), train_data=str(r.labeled / "safehelp" / "sft"),
        mode="sft", max_steps=r.sft_steps, **_common(r, r.settings["sft"]),
    )  # fmt: skip


def bfpo_config(r: Run) -> train.TrainConfig:
    """BFPO from the SFT model on notebook 02's pairs and helpful buffer, from the settings' ``training.bfpo``."""
    run = r.settings["bfpo"]
    return train.TrainConfig(
        model=str(r.out_dir / "sft" / "model"), output_dir=str(r.out_dir / "bfpo"), loss="bfpo",
        train_data=str(r.labeled / "safehelp" / "pairs"), buffer_data=str(r.labeled / "safehelp" / "buffer"),
        buffer_ratio=run["buffer_ratio"], beta=run["beta"], alpha=run["alpha"], b1=run["b1"],
        max_steps=r.bfpo_steps, **_common(r, run),
    )  # fmt: skip


def paper_configs(r: Run) -> tuple[train.TrainConfig, train.TrainConfig]:
    """The paper profile: the official SFT mix (all of UltraChat, every turn, plus the first 20 % of
    PKU-SafeRLHF train's safer responses, shuffled with seed 42) and the published SFT and BFPO recipes."""
    mix = data.official_mix([(data.ultrachat_sft(), 1.0), (data.load(r.labeled / "real" / "pku_saferlhf_sft"), 0.2)])
    data.save(mix, r.out_dir / "data" / "sft_mix")
    sft = train.TrainConfig.from_yaml(project_path(r.settings["sft_config"]), {"output_dir": str(r.out_dir / "sft")})
    bfpo = train.TrainConfig.from_yaml(project_path(r.settings["bfpo_config"]), {"output_dir": str(r.out_dir / "bfpo")})
    return sft, bfpo


def launch(r: Run, cfg: train.TrainConfig, keys: tuple[str, ...]) -> dict:
    """``accelerate launch`` of one training with the run's processes; checks that every process took part
    and returns the summary's ``keys``."""
    summary = train.launch(cfg, num_processes=r.processes, accelerate_config=r.accelerate_config)
    ranks = train.ranks_seen(cfg.output_dir)
    assert ranks == list(range(r.processes)), f"every process must have taken part, saw ranks {ranks}"
    return {k: summary[k] for k in keys}


def late_margins(metrics: list[dict], combinations) -> dict[str, float]:
    """The mean implicit-reward margin of each label combination over the last quarter of the logs."""
    late = metrics[-max(1, len(metrics) // 4) :]
    return {
        c: sum(m[f"margin/{c}"] for m in late if f"margin/{c}" in m) / max(1, sum(f"margin/{c}" in m for m in late))
        for c in combinations
    }


def judge_before_after(r: Run) -> tuple[dict[str, dict], pd.DataFrame]:
    """The SFT start and the BFPO model judged by the gold judge on training and test wordings
    (``eval_samples`` answers per prompt); returns (summary per model and wording, two BFPO test answers
    of each prompt kind)."""
    judged, rows = {}, {}
    for name in ("sft", "bfpo"):
        model, tok = models.load_model(r.out_dir / name / "model"), models.load_tokenizer(r.out_dir / name / "model")
        for split in ("training", "test"):
            key = f"{name.upper()} ({split} wordings)"
            n = r.eval_samples
            judged[key], rows[key] = tw.evaluate_model(model, tok, samples_per_prompt=n, split=split, seed=0)
    sample = pd.DataFrame(rows["BFPO (test wordings)"]).groupby("kind").head(2)
    return judged, sample[["kind", "prompt", "response", "helpfulness", "safe"]]
