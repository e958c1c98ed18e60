"""Compute curves: the FLOPs each run spent (:mod:`bfpo.compute`) against the gold-judged
harmlessness its snapshots reached on test wordings, and the compute claim read off them: the FLOPs
a method's mean curve over seeds needs to reach a level (SFT + delta), found by linear interpolation.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bfpo import checkpoints, compute
from bfpo.runs import summary_of
from bfpo.study import Run, judge_runs


def _score_model_flops(ppo_summary: dict) -> float:
    cfg = ppo_summary["config"]
    return sum(summary_of(Path(p).parent)["flops"]["total"] for p in (cfg["reward_model"], cfg["cost_model"]))


def run_flops(run_dir) -> float:
    """Training FLOPs of a finished run beyond the shared SFT; a Safe RLHF PPO run also counts the
    reward and cost models it needed (found beside it)."""
    summary = summary_of(run_dir)
    total = summary["flops"]["total"]
    if (Path(run_dir) / "ppo_summary.json").is_file():
        total += _score_model_flops(summary)
    return total


def curve_points(run_dir) -> list[dict]:
    """The points of a run's compute curve: every snapshot and the final model, each with the FLOPs
    spent up to it (``flops``; for Safe RLHF including the reward and cost models, paid before the
    first rollout) and its ``step`` and ``model`` folder."""
    summary = summary_of(run_dir)
    upfront = _score_model_flops(summary) if (Path(run_dir) / "ppo_summary.json").is_file() else 0.0
    last = summary.get("steps", summary.get("iterations"))
    points = [
        {"step": info["step"], "flops": info["flops"]["total"] + upfront, "model": str(path)}
        for info, path in checkpoints.snapshots(run_dir)
    ]
    points.append({"step": last, "flops": summary["flops"]["total"] + upfront, "model": f"{run_dir}/model"})
    return points


def flops_to_reach(curves: dict[int, list[tuple[float, float]]], level: float) -> float | None:
    """FLOPs a method needs to reach ``level``: the mean over seeds of the curve (``seed -> [(flops,
    value), ...]``, points in the same order for every seed) crossed by linear interpolation
    (:func:`bfpo.compute.first_crossing`); None when the mean curve never reaches it."""
    seeds = sorted(curves)
    n = min(len(curves[s]) for s in seeds)
    mean = [
        (sum(curves[s][i][0] for s in seeds) / len(seeds), sum(curves[s][i][1] for s in seeds) / len(seeds))
        for i in range(n)
    ]
    return compute.first_crossing(mean, level)


def compute_curves(
    runs: list[Run],
    starts_judged: pd.DataFrame,
    samples_per_prompt: int,
    cache_dir,
    methods=("bfpo", "safe_rlhf"),
    parallel: int = 2,
    test_wordings: int | None = None,
) -> pd.DataFrame:
    """Test-wording gold-judge numbers along the runs of ``methods``: one row per (method, seed,
    point) with ``step``, cumulative ``flops`` and the judged rates. Each curve starts at its seed's
    SFT start (0 FLOPs; ``starts_judged``: the tidy test rows of the ``sft`` method)."""
    rows = []
    chosen = [r for r in runs if r.method in methods]
    points = {id(run): curve_points(run.run_dir) for run in chosen}
    to_judge = [
        (run.method, f"{run.config}@{p['step']}", run.seed, p["model"]) for run in chosen for p in points[id(run)]
    ]
    judged = judge_runs(
        to_judge, samples_per_prompt, cache_dir, splits=("test",), parallel=parallel, test_wordings=test_wordings
    )
    judged = iter(judged[0])
    for run in chosen:
        start = starts_judged[starts_judged["seed"] == run.seed].iloc[0]
        rows.append(
            {
                "method": run.method,
                "seed": run.seed,
                "step": 0,
                "flops": 0.0,
                **{k: float(start[k]) for k in ("helpfulness", "harmlessness", "over_refusal")},
            }
        )
        for p in points[id(run)]:
            j = next(judged)
            rows.append(
                {
                    "method": run.method,
                    "seed": run.seed,
                    "step": p["step"],
                    "flops": p["flops"],
                    **{k: j[k] for k in ("helpfulness", "harmlessness", "over_refusal")},
                }
            )
    return pd.DataFrame(rows)


def flops_to_level(curves: pd.DataFrame, level: float, metric: str = "harmlessness") -> dict[str, float | None]:
    """Per method: the FLOPs its mean curve over seeds needs to reach ``level`` (:func:`flops_to_reach`)."""
    out = {}
    for method, part in curves.groupby("method"):
        by_seed = {
            seed: list(zip(g["flops"], g[metric], strict=True)) for seed, g in part.sort_values("step").groupby("seed")
        }
        out[method] = flops_to_reach(by_seed, level)
    return out


def compute_summary(curves: pd.DataFrame, start_level: float, total_flops: dict, deltas=(0.2, 0.1)) -> dict:
    """The compute claim at each level start + delta (the first delta is the declared one): the
    FLOPs each method's mean curve needs to reach it, and BFPO's share of Safe RLHF's. When Safe
    RLHF never reaches the level, the share is taken of all it spent (an upper bound); when BFPO
    never does, there is no share."""
    levels = []
    for delta in deltas:
        level = start_level + delta
        reach = flops_to_level(curves, level) if len(curves) else {}
        bfpo, safe = reach.get("bfpo"), reach.get("safe_rlhf")
        fraction = None
        if bfpo is not None and safe is not None:
            fraction = bfpo / safe
        elif bfpo is not None and total_flops.get("safe_rlhf"):
            fraction = bfpo / total_flops["safe_rlhf"]
        levels.append(
            {
                "delta": delta,
                "level": level,
                "flops_to_level": reach,
                "bfpo_fraction": fraction,
                "bfpo_reached": bfpo is not None,
                "safe_rlhf_reached": safe is not None,
            }
        )
    return {"start": start_level, "levels": levels, "total_flops": total_flops}
