"""Helpfulness: the AlpacaEval-style win rate against reference outputs, with a pairwise judge."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from bfpo import data as bdata
from bfpo import models
from bfpo.evaluation.mc_docs import _need


class RewardModelJudge:
    """Pairwise judge from a scalar-head model (e.g. Safe RLHF's reward model): the output with the
    higher score wins; equal scores are a tie."""

    name = "reward_model"

    def __init__(self, path):
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = models.load_tokenizer(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        self.name = f"reward_model:{Path(path).name}"

    @torch.inference_mode()
    def scores(self, prompts: list[str], outputs: list[str]) -> list[float]:
        texts = [models.format_prompt(p, self.tokenizer) + " " + o for p, o in zip(prompts, outputs, strict=True)]
        out = []
        for start in range(0, len(texts), 32):
            enc = self.tokenizer(
                texts[start : start + 32], return_tensors="pt", padding=True, truncation=True, max_length=256
            )
            out += self.model(**enc).logits[:, 0].float().tolist()
        return out

    def preference(self, prompts, outputs, references) -> list[float]:
        """1 win, 0.5 tie, 0 loss for each output against its reference."""
        a, b = self.scores(prompts, outputs), self.scores(prompts, references)
        return [1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b, strict=True)]


def win_rate(preferences: list[float]) -> dict[str, float]:
    """AlpacaEval's win rate: mean preference (ties count half), with a 95% normal interval."""
    n = len(preferences)
    mean = sum(preferences) / n
    sd = math.sqrt(sum((p - mean) ** 2 for p in preferences) / max(1, n - 1))
    half = 1.96 * sd / math.sqrt(n)
    return {"win_rate": mean, "win_rate_ci": (max(0.0, mean - half), min(1.0, mean + half)), "n": n}


def run_alpaca_eval(model, tokenizer, judge, limit=None, max_new_tokens=64, data_dir=None) -> dict:
    path = (
        bdata.data_file("alpaca_eval_text_davinci_003_500.jsonl")
        if data_dir is None
        else Path(data_dir) / "alpaca_eval_text_davinci_003_500.jsonl"
    )
    rows = []
    for line, r in bdata.read_jsonl(path):
        if not isinstance(r.get("output"), str):  # an empty reference is kept: davinci-003 did answer nothing
            raise bdata.DataError(str(path), line, "output", "missing or not text")
        rows.append((_need(str(path), line, r, "instruction"), r["output"]))
    rows = rows[:limit] if limit else rows
    prompts = [p for p, _ in rows]
    outputs = [
        g[0]
        for g in models.generate(
            model, tokenizer, prompts, 1, max_new_tokens=max_new_tokens, temperature=0.0, sort_by_length=True
        )
    ]
    prefs = judge.preference(prompts, outputs, [ref for _, ref in rows])
    return {
        "task": "alpaca_eval",
        "category": "helpfulness",
        "judge": judge.name,
        "n": len(rows),
        "metrics": win_rate(prefs),
        "per_example": [
            {"instruction": p, "output": o, "preference": s} for p, o, s in zip(prompts, outputs, prefs, strict=True)
        ],
    }
