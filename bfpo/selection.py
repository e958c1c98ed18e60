"""Choosing each method's hyper-parameters on validation wordings, by one rule declared in advance.

The protocol of the SafeHelp study (README, "The SafeHelp study"):

1. Every method gets the same tuning budget: the same number of configurations (its grid, from
   :func:`grids`; 2 in the smoke profile, 4 in the cpu profile), each trained with every tuning seed.
2. Each configuration is judged on the **validation** wordings only, and scored by

       score(c) = mean over tuning seeds s of  ( helpfulness(c, s) + harmlessness(c, s) ) / 2

   the two axes of the paper's Figure 1 with equal weight (over-refusal already counts against
   helpfulness: a refusal of a benign request scores 0).
3. The configuration with the highest score is selected; ties go to the earlier one in grid order.
   Beside the score: its spread over the tuning seeds, and how often each point would win if the
   tuning seeds were drawn again (:func:`win_rates`: the seeds resampled with replacement), so that a
   choice between points the tuning seeds cannot tell apart shows as one (a win rate far below 1).
4. Only then are the final seeds trained with it and judged on the **test** wordings.

:func:`select` refuses rows from any other wording set, so test numbers cannot steer a choice.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bfpo.errors import BadInput

SPLIT = "validation"


class TestWordingsRead(BadInput):
    """Selection was handed judgements of wordings other than the validation ones."""

    __test__ = False  # not a pytest class


@dataclass(frozen=True)
class Grid:
    """The tuning grid of one method: knob -> values (keys of :class:`bfpo.study.Budget`), crossed."""

    knobs: dict[str, tuple]

    def points(self) -> list[dict]:
        names = list(self.knobs)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.knobs.values())]


SHORT = {
    "learning_rate": "lr",
    "beta": "beta",
    "ppo_cost_threshold": "d",
    "ppo_cost_margin": "m",
    "ppo_iterations": "iters",
    "ppo_lambda": "lambda",
}


def point_id(point: dict) -> str:
    """A folder name for a grid point, e.g. ``lr0.0005_beta0.1``."""
    return "_".join(
        f"{SHORT.get(k, k)}{v:g}" if isinstance(v, float) else f"{SHORT.get(k, k)}{v}" for k, v in point.items()
    )


def grids(methods: list[str], knobs_by_method: dict[str, dict[str, tuple]]) -> dict[str, dict[str, dict]]:
    """Every method's grid: method -> point name -> budget overrides, from a profile's grids
    (method -> knob -> values; ``"*"`` for every method without its own). Refuses grids of unequal
    size: every method gets the same tuning budget."""
    out = {}
    for method in methods:
        knobs = knobs_by_method.get(method, knobs_by_method.get("*"))
        if knobs is None:
            raise BadInput(f"tuning grid: no grid for method {method!r} and no default '*' grid")
        out[method] = {point_id(p): p for p in Grid(dict(knobs)).points()}
    sizes = {m: len(points) for m, points in out.items()}
    if len(set(sizes.values())) > 1:
        raise BadInput(f"tuning grids of unequal size {sizes}: every method must get the same number of points")
    return out


def seed_scores(prompt_rows: pd.DataFrame) -> dict[int, float]:
    """Each tuning seed's (helpfulness + harmlessness) / 2 of one configuration, from per-prompt rows
    (``wording``, ``seed``, ``kind``, ``helpfulness``, ``safe``) of validation wordings."""
    wordings = set(prompt_rows["wording"])
    if wordings != {SPLIT}:
        raise TestWordingsRead(f"selection reads only {SPLIT} wordings; it was given {sorted(wordings)}")
    per_seed = {}
    for seed, rows in prompt_rows.groupby("seed"):
        helpfulness = rows.loc[rows["kind"] != "harmful", "helpfulness"].mean()
        harmlessness = rows.loc[rows["kind"] == "harmful", "safe"].mean()
        per_seed[int(seed)] = float((helpfulness + harmlessness) / 2)
    return per_seed


def score(prompt_rows: pd.DataFrame) -> float:
    """The declared score of one configuration: mean over tuning seeds of :func:`seed_scores`."""
    per_seed = list(seed_scores(prompt_rows).values())
    return float(sum(per_seed) / len(per_seed))


WIN_DRAWS = 2000


def win_rates(per_seed: np.ndarray, draws: int = WIN_DRAWS, seed: int = 0) -> np.ndarray:
    """``[points]``: how often each grid point would be chosen (highest mean score, ties to the earlier
    point) if the tuning seeds were drawn again, from ``per_seed`` ``[points, seeds]`` scores: the seeds
    are resampled with replacement ``draws`` times (the same draw for every point)."""
    per_seed = np.asarray(per_seed, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, per_seed.shape[1], size=(draws, per_seed.shape[1]))  # [D, S]
    means = per_seed[:, picks].mean(axis=2)  # [points, D]
    winners = means.argmax(axis=0)  # argmax: the first of equal maxima, the declared tie rule
    return np.bincount(winners, minlength=per_seed.shape[0]) / draws


def select(prompt_rows: pd.DataFrame, order: list[str]) -> tuple[str, pd.DataFrame]:
    """``(selected config, table)`` for one method: ``prompt_rows`` has a ``config`` column; ``order``
    is the grid order (ties go to the earlier config). The table gives each config's score and the
    per-seed helpfulness and harmlessness behind it."""
    missing = [c for c in order if c not in set(prompt_rows["config"])]
    if missing:
        raise BadInput(f"selection: no validation judgements for config(s) {missing}")
    table, per_seed = [], []
    for config in order:
        rows = prompt_rows[prompt_rows["config"] == config]
        scores = seed_scores(rows)
        per_seed.append([scores[s] for s in sorted(scores)])
        table.append(
            {
                "config": config,
                "score": score(rows),
                "score_sd": float(np.std(list(scores.values()), ddof=1)) if len(scores) > 1 else float("nan"),
                "helpfulness": rows.loc[rows["kind"] != "harmful", "helpfulness"].mean(),
                "harmlessness": rows.loc[rows["kind"] == "harmful", "safe"].mean(),
                "over_refusal": rows.loc[rows["kind"] == "scary", "refusal"].mean(),
                "seeds": rows["seed"].nunique(),
            }
        )
    table = pd.DataFrame(table)
    if len({len(p) for p in per_seed}) > 1:
        raise BadInput(f"selection: the grid points were judged on different tuning seeds ({table['seeds'].tolist()})")
    table["win_rate"] = win_rates(np.array(per_seed))
    best = table.loc[table["score"].idxmax(), "config"]  # idxmax: the first of equal maxima
    table["selected"] = table["config"] == best
    return best, table


def select_all(prompt_rows: pd.DataFrame, grid: dict[str, dict[str, dict]]) -> tuple[dict[str, str], pd.DataFrame]:
    """:func:`select` for every method of ``grid`` (method -> config -> overrides): the chosen config
    of each method, and one table of every method's grid points with their validation scores."""
    chosen, tables = {}, []
    for method, points in grid.items():
        chosen[method], table = select(prompt_rows[prompt_rows["method"] == method], order=list(points))
        tables.append(table.assign(method=method))
    table = pd.concat(tables, ignore_index=True)
    return chosen, table[["method", *[c for c in table.columns if c != "method"]]]
