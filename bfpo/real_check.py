"""The real chat model's code path at toy size: SmolLM2-135M-Instruct, a few BFPO steps on real PKU pairs,
greedy answers before and after, one judge. Notebook 03 runs it where the profile's settings have a
``training.real`` section (smoke: a minute of CPU), so CI goes through the GGUF-converted model, its chat
template, PKU-SafeRLHF's two labels, ``down_proj`` selective tuning and the refusal judge every time.

It shows the machinery works on a real model; a handful of steps moves the model a little, and the few judged
answers are no measurement (the ``real`` profile's study is the measurement).
"""

from __future__ import annotations

import json
from pathlib import Path

from bfpo import devices, models, real_data, real_model, records, train
from bfpo.evaluation.judges import is_refusal
from bfpo.io import data_file, write_json

SUMMARY_KEYS = ("steps", "processes", "global_batch", "train_examples", "seconds", "trainable_parameters",
                "total_parameters", "mixed_precision")  # fmt: skip


def config(settings: dict, out_dir: Path, processes: int, pku=None) -> train.TrainConfig:
    """BFPO on the first ``pairs`` pairs of the preference split, from the instruct model itself, with the
    paper's ``down_proj`` selective tuning; ``settings`` is the profile's ``training.real``; ``pku``: the PKU
    pairs with their split (:func:`bfpo.real_data.pku_pairs`, read when not given)."""
    pku = pku if pku is not None else real_data.pku_pairs()
    pairs = real_data.part(pku, "preference").select(range(settings["pairs"]))
    records.save(pairs.remove_columns("split"), out_dir / "pairs")
    return train.TrainConfig(
        model=real_model.resolve(settings["model"]), output_dir=str(out_dir / "bfpo"), loss="bfpo",
        train_data=str(out_dir / "pairs"), beta=settings["beta"], learning_rate=settings["learning_rate"],
        warmup_ratio=0.0, max_steps=settings["steps"], per_device_batch_size=settings["global_batch"] // processes,
        max_length=settings["max_length"], max_prompt_length=settings["max_length"] // 2,
        trainable=settings["trainable"].split(","), mixed_precision=settings["mixed_precision"], log_every=1,
    )  # fmt: skip


def prompts(n: int, pku=None) -> dict[str, list[str]]:
    """``n`` harmful prompts (PKU's test split, never trained on) and ``n`` benign ones (AlpacaEval)."""
    pku = pku if pku is not None else real_data.pku_pairs()
    harmful = list(dict.fromkeys(real_data.part(pku, "test")["prompt"]))[:n]
    with open(data_file("alpaca_eval_text_davinci_003_500.jsonl"), encoding="utf-8") as f:
        benign = [json.loads(line)["instruction"] for line, _ in zip(f, range(n), strict=False)]
    return {"harmful": harmful, "benign": benign}


def answers(model_dir: str, asked: dict[str, list[str]], max_new_tokens: int) -> dict[str, list[str]]:
    """Greedy answers (chat template, KV cache, batched) to each group of prompts."""
    device = devices.resolve("auto")  # the run's device (accelerate's: a GPU where there is one)
    tokenizer, model = models.load_tokenizer(model_dir), models.load_model(model_dir, device=device)
    return {
        group: [a[0] for a in models.generate(model, tokenizer, ps, max_new_tokens=max_new_tokens, temperature=0)]
        for group, ps in asked.items()
    }


def judged(said: dict[str, list[str]]) -> dict[str, float]:
    """The refusal rule (GCG/AdvBench's prefixes): refusals of harmful prompts count as harmless; refusals of
    benign prompts are over-refusals."""
    rate = lambda xs: sum(map(is_refusal, xs)) / max(len(xs), 1)
    return {"harmless_rate": rate(said["harmful"]), "over_refusal": rate(said["benign"])}


def from_settings(training: dict, out_dir: str | Path, processes: int) -> dict | None:
    """:func:`run` with the profile's ``training.real`` settings; None where the profile has none."""
    return run(training["real"], out_dir, processes) if training.get("real") else None


def run(settings: dict, out_dir: str | Path, processes: int) -> dict:
    """The whole check: train (``accelerate launch``), answer before and after, judge; written to
    ``<out_dir>/real_check.json`` and returned. A finished training is reused, as every run's."""
    out_dir, pku = Path(out_dir), real_data.pku_pairs()
    cfg = config(settings, out_dir, processes, pku)
    summary = train.launch(cfg, num_processes=processes)
    asked = prompts(settings["prompts"], pku)
    before = answers(cfg.model, asked, settings["max_new_tokens"])
    after = answers(str(out_dir / "bfpo" / "model"), asked, settings["max_new_tokens"])
    metrics = train.read_metrics(out_dir / "bfpo")
    result = {
        "model": settings["model"],
        "training": {k: summary[k] for k in SUMMARY_KEYS},
        "first_loss": metrics[0]["loss"],
        "last_loss": metrics[-1]["loss"],
        "prompts": asked,
        "before": before,
        "after": after,
        "judged": {"start": judged(before), "BFPO": judged(after)},
    }
    write_json(out_dir / "real_check.json", result)
    return result


def side_by_side(result: dict, group: str, width: int = 160):
    """A table of one group's prompts with the start's and BFPO's answers, cut to ``width`` characters."""
    import pandas as pd

    cut = lambda s: s if len(s) <= width else s[: width - 1] + "…"
    return pd.DataFrame(
        {
            "prompt": [cut(p) for p in result["prompts"][group]],
            "start (SmolLM2-135M-Instruct)": [cut(a) for a in result["before"][group]],
            "after BFPO": [cut(a) for a in result["after"][group]],
        }
    )
