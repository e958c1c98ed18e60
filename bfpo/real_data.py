"""The real-model experiment's PKU-SafeRLHF splits: fixed, disjoint by prompt, the same on every machine.

``data/pku_saferlhf_alpaca7b_test_1131.jsonl`` (the first 1,131 records of PKU-SafeRLHF's Alpaca-7B test file,
both responses labelled safe or unsafe by PKU's annotators) is cut into four parts by a hash of the prompt text,
so a prompt that recurs in the source (1,107 distinct among 1,131) always lands in one part, and adding or
removing records never moves the others:

    preference   pairs the methods train on (chosen = the more helpful response; safety of both)
    judge_train  responses with their safety label, for the harmfulness classifier
    judge_val    held-out responses, for that classifier's accuracy and ROC AUC
    test         prompts the trained models answer (the paper's own harmlessness set)
"""

from __future__ import annotations

import hashlib

import datasets

from bfpo import data
from bfpo.io import data_file

PKU_FILE = "pku_saferlhf_alpaca7b_test_1131.jsonl"
SPLITS = {"preference": 0.5, "judge_train": 0.2, "judge_val": 0.1, "test": 0.2}
"""Each part's share of the prompts (by hash, so the counts are close to, not exactly, these shares)."""


def split_of(prompt: str) -> str:
    """The part ``prompt`` belongs to: the first 8 bytes of sha256(prompt) as a number in [0, 1), cut at the
    cumulative shares of :data:`SPLITS`."""
    u = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, share in SPLITS.items():
        edge += share
        if u < edge:
            return name
    return name  # u within float rounding of 1


def pku_pairs(path=None) -> datasets.Dataset:
    """Every record of the vendored file as a BFPO pair with a ``split`` column (bad records: one clear error
    naming the file, line and field)."""
    pairs = data.pku_saferlhf_pairs(str(path or data_file(PKU_FILE)))
    return pairs.add_column("split", [split_of(p) for p in pairs["prompt"]])


def part(pairs: datasets.Dataset, name: str) -> datasets.Dataset:
    """The records of one part, in the file's order."""
    if name not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {name!r}")
    return pairs.select([i for i, s in enumerate(pairs["split"]) if s == name])


def labelled_responses(pairs: datasets.Dataset) -> datasets.Dataset:
    """Both responses of each pair as (prompt, response, safe) rows: a safety classifier's data."""
    rows = [
        {"prompt": r["prompt"], "response": r[side], "safe": r[f"{side}_safe"]}
        for r in pairs
        for side in ("chosen", "rejected")
    ]
    return datasets.Dataset.from_list(rows)
