"""The methods BFPO is measured against, as data + a loss for the one trainer.

Every pairwise or point-wise method is a :class:`Method`: how to relabel the labelled pairs
(helpfulness order, safety order, a naive mix, BFPO's global ranking, or point-wise labels) and
which loss of :mod:`bfpo.train` to run on them. Safe RLHF (reward and cost models, then
PPO-Lagrangian) lives in :mod:`bfpo.safe_rlhf`.

The label views of a pair (chosen is always the more helpful response; each has a safety label):

=====================  ==========================================================================
``helpfulness``        as given: the more helpful response wins (DPO on helpfulness, IPO, BFPO)
``safety``             the safe response wins; pairs whose responses are equally safe are left out
                       (they carry no safety preference)
``mix``                the union of the helpfulness and safety views (a naive mix of both data sets)
``ranked``             BFPO's global ranking decides: helpful-safe > unhelpful-safe >
                       unhelpful-unsafe > helpful-unsafe (the sign of the BFPO target)
=====================  ==========================================================================

Point-wise data (ULMA, point-wise DPO) gives each response of a pair its own label z: binary,
the winner of the ``ranked`` view is 1 and the loser 0; continuous, the response's place in the
global ranking (helpful-safe 1, unhelpful-safe 2/3, unhelpful-unsafe 1/3, helpful-unsafe 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch

from bfpo import data as bdata
from bfpo import labels, models, sequences, train
from bfpo import toyworld as tw

# ---------------------------------------------------------------------------------------------
# Label views
# ---------------------------------------------------------------------------------------------

POINT_FEATURES = datasets.Features(
    {
        "prompt": datasets.Value("string"),
        "response": datasets.Value("string"),
        "label": datasets.Value("float32"),
        "source": datasets.Value("string"),
    }
)
QUADRANT_SCORE = {"HS": 1.0, "US": 2 / 3, "UU": 1 / 3, "HU": 0.0}
"""A response's place in BFPO's global ranking, scaled to [0, 1] (continuous point-wise labels)."""


def _swap(row: dict) -> dict:
    return {
        **row,
        "chosen": row["rejected"],
        "rejected": row["chosen"],
        "chosen_safe": row["rejected_safe"],
        "rejected_safe": row["chosen_safe"],
    }


def safety_view(pairs: datasets.Dataset) -> datasets.Dataset:
    """Chosen = the safe response; pairs with equally safe responses are dropped."""
    rows = [r if r["chosen_safe"] else _swap(r) for r in pairs if r["chosen_safe"] != r["rejected_safe"]]
    if not rows:
        raise ValueError("safety view: no pair has one safe and one unsafe response")
    return datasets.Dataset.from_list(rows, features=pairs.features)


def ranked_view(pairs: datasets.Dataset) -> datasets.Dataset:
    """Chosen = the higher response in the global ranking (the sign of BFPO's target)."""
    rows = [r if r["chosen_safe"] else _swap(r) for r in pairs]  # a safe response outranks the helpful unsafe one
    return datasets.Dataset.from_list(rows, features=pairs.features)


def mix_view(pairs: datasets.Dataset) -> datasets.Dataset:
    """The naive mix: every pair with its helpfulness label, plus the safety view of the pairs."""
    return datasets.concatenate_datasets([pairs, safety_view(pairs)])


def pointwise_view(pairs: datasets.Dataset, label_type: str = "binary") -> datasets.Dataset:
    """Each response of each pair as its own example with a label z (see the module docstring)."""
    rows = []
    for r in pairs:
        if label_type == "binary":
            w = r if r["chosen_safe"] else _swap(r)
            rows += [(r["prompt"], w["chosen"], 1.0), (r["prompt"], w["rejected"], 0.0)]
        elif label_type == "continuous":
            chosen_q = "HS" if r["chosen_safe"] else "HU"  # chosen is the more helpful response
            rejected_q = "US" if r["rejected_safe"] else "UU"
            rows += [(r["prompt"], r["chosen"], QUADRANT_SCORE[chosen_q])]
            rows += [(r["prompt"], r["rejected"], QUADRANT_SCORE[rejected_q])]
        else:
            raise ValueError(f"label_type: expected 'binary' or 'continuous', got {label_type!r}")
    return datasets.Dataset.from_list(
        [{"prompt": p, "response": y, "label": z, "source": "pointwise"} for p, y, z in rows], features=POINT_FEATURES
    )


VIEWS = {
    "helpfulness": lambda pairs: pairs,
    "safety": safety_view,
    "mix": mix_view,
    "ranked": ranked_view,
    "pointwise_binary": lambda pairs: pointwise_view(pairs, "binary"),
    "pointwise_continuous": lambda pairs: pointwise_view(pairs, "continuous"),
}


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A pairwise or point-wise method: a label view of the pairs and a loss of the trainer."""

    name: str
    title: str  # for plots and tables
    view: str  # a key of VIEWS
    loss: str
    buffer: bool = True  # mix the helpful-only buffer in (in the view's form)
    overrides: dict = field(default_factory=dict)  # TrainConfig keys that differ from the shared budget

    @property
    def mode(self) -> str:
        return "pointwise" if self.view.startswith("pointwise") else "preference"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dpo_helpful", "DPO (helpfulness)", "helpfulness", "dpo"),
        Method("dpo_safety", "DPO (safety)", "safety", "dpo", buffer=False),
        Method("dpo_mix", "DPO (naive mix)", "mix", "dpo"),
        Method("ipo", "IPO", "helpfulness", "ipo"),
        Method("pointwise_dpo", "Point-wise DPO", "pointwise_binary", "pointwise_dpo"),
        Method(
            "pointwise_dpo_continuous",
            "Point-wise DPO (continuous)",
            "pointwise_continuous",
            "pointwise_dpo",
            overrides={"label_type": "continuous"},
        ),
        Method("ulma", "ULMA", "pointwise_binary", "ulma", overrides={"length_normalize": True}),
        Method("bfpo", "BFPO", "helpfulness", "bfpo"),
        # the safety transform (the safe response of a mixed pair wins) happens inside the loss
        Method("safedpo", "SafeDPO", "helpfulness", "safedpo"),
    )
}
"""Every method the trainer runs; Safe RLHF (``"safe_rlhf"``) runs through :mod:`bfpo.safe_rlhf`."""


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


def prepare_data(method: Method, pairs: datasets.Dataset, buffer: datasets.Dataset | None, out_dir) -> dict:
    """Write the method's training data (and buffer) under ``out_dir``; returns TrainConfig keys."""
    out = Path(out_dir)
    view = VIEWS[method.view]
    keys = {"mode": method.mode, "loss": method.loss, **method.overrides}
    train_data = view(pairs)
    if method.buffer and buffer is not None:
        # the buffer is helpful-only (safe/safe): every pairwise view of it is the helpfulness one
        if method.mode == "pointwise":  # point-wise losses have no buffer stream: the points join the data
            train_data = datasets.concatenate_datasets([train_data, view(buffer)])
        else:
            bdata.save(buffer, out / "buffer")
            keys["buffer_data"] = str(out / "buffer")
    if not method.buffer or buffer is None:
        keys["buffer_data"] = None
    bdata.save(train_data, out / "train")
    keys["train_data"] = str(out / "train")
    return keys


def method_config(method: Method, base: dict, pairs, buffer, work_dir) -> train.TrainConfig:
    """The TrainConfig of ``method`` on the shared budget ``base`` (model, steps, batch, beta, ...)."""
    work = Path(work_dir)
    keys = prepare_data(method, pairs, buffer, work / "data")
    return train.TrainConfig.from_dict({**base, **keys, "output_dir": str(work / "run")}, where=method.name)


# ---------------------------------------------------------------------------------------------
# What a trained model prefers: implicit-reward margins on the original pairs
# ---------------------------------------------------------------------------------------------

_reference_memo: dict[tuple, torch.Tensor] = {}


@torch.no_grad()
def implicit_margins(model_dir, ref_dir, pairs: datasets.Dataset, beta: float, max_length: int = 128) -> dict:
    """Mean beta * h_pi per label combination of ``pairs`` (helpfulness order), h_pi the log-ratio difference
    (log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) - log pi_ref(y_r)). The sign says which response
    of each combination the trained model has come to prefer over the reference."""
    from accelerate import Accelerator

    tok = models.load_tokenizer(model_dir)
    items, _ = sequences.tokenize(pairs.to_list(), tok, sequences.Encoding(max_length=max_length), "preference")
    acc = Accelerator(cpu=True)
    pad = tok.pad_token_id
    policy = sequences.reference_logps(models.load_model(model_dir), items, 64, acc, pad, desc="policy")  # [n, 2]
    # the reference's log-probs are the same for every method trained from it: computed once per process
    key = (sequences.model_fingerprint(str(ref_dir), None), sequences.data_fingerprint(items), pad)
    if key not in _reference_memo:
        _reference_memo[key] = sequences.reference_logps(
            models.load_model(ref_dir), items, 64, acc, pad, desc="reference"
        )
    ref = _reference_memo[key]
    h_pi = (policy[:, 0] - ref[:, 0]) - (policy[:, 1] - ref[:, 1])
    combo = [f"{'safe' if s[0] else 'unsafe'}>{'safe' if s[1] else 'unsafe'}" for s in (it["safe"] for it in items)]
    out = {}
    for name in labels.COMBINATIONS:
        sel = torch.tensor([c == name for c in combo])
        if sel.any():
            out[name] = float(beta * h_pi[sel].mean())
    return out


# ---------------------------------------------------------------------------------------------
# The red-teaming setting: the model's own generations on harmful prompts, judged
# ---------------------------------------------------------------------------------------------


def red_team_data(model_dir, n_prompts: int, samples: int = 2, seed: int = 0, temperature: float = 1.0):
    """BFPO pairs from the model's own answers to harmful (and scary-but-benign) SafeHelp prompts,
    labelled by the gold judge: the scaled-down version of the paper's ~1.5K red-teaming pairs.

    Returns (pairs, records); records keep every generation for inspection.
    """
    import random

    rng = random.Random(f"red-team-{seed}")
    topics = [t for t in tw.TOPICS if t.kind in ("harmful", "scary")]
    prompts = [tw.prompt(rng.choice(topics), rng) for _ in range(n_prompts)]
    model, tok = models.load_model(model_dir), models.load_tokenizer(model_dir)
    gens = models.generate(model, tok, prompts, samples, temperature=temperature, seed=seed)
    records = [{"prompt": p, "responses": g} for p, g in zip(prompts, gens, strict=True) if all(x.strip() for x in g)]
    pairs = bdata.red_team_pairs(records, tw.judge_scores, where=f"generations of {model_dir}")
    return pairs, records
