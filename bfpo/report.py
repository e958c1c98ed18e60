"""The paper's claims beside what a run measured, as a markdown summary.

Quoted numbers come from ``data/paper/bfpo_reported_results.csv`` (each row names the table,
figure or text it was read from); measured numbers come from notebook 04's per-prompt judged
results (method, seed, wording, prompt_id, kind, safe, helpfulness, refusal) and its tidy results
(for FLOPs). The two are never mixed in one number: each claim is a row with the quoted value, the
measured change with its 95 % interval (seed-level Student's t, paired with the SFT start on the
same seeds and prompts; :mod:`bfpo.stats`) and a verdict that follows from the interval: "agrees"
only when the whole interval is on the claimed side, "does not agree" only when it is wholly on the
other side, else "inconclusive". Each verdict is also taken on two fixed, disjoint halves of the
seeds (:func:`replicate`): a claim is "replicated" only when both halves and the whole agree.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from bfpo import stats
from bfpo.io import data_file, write_text

QUOTED_7B = {
    "Zephyr-7b-beta": "Zephyr-7b-beta",
    "Mistral-7b-Instruct-v0.2": "Mistral-7B-Instruct-v0.2",
    "OpenChatv3.5-7b": "OpenChat-3.5",
    "Llama2-7b-chat": "Llama-2-7b-chat",
    "Beaver-7b": "Beaver-7b",
    "Juanako-7b-UNA": "Juanako-7b-UNA",
    "Ours (BFPO; arrow from Zephyr-7b-beta labelled Bi-Factorial Preference Optimization)": "BFPO",
    "Ours (BFPO)": "BFPO",
}
_AXES = {"Helpfulness": "helpfulness", "Harmlessness": "harmlessness", "bubble radius": "radius_px"}


def reported_results_path() -> Path:
    """The quoted numbers: ``paper/bfpo_reported_results.csv`` of the data folder (``bfpo.io.data_file``)."""
    return data_file("paper/bfpo_reported_results.csv")


def read_reported(path=None) -> list[dict]:
    with open(path or reported_results_path(), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def quoted_7b_points(rows: list[dict] | None = None) -> pd.DataFrame:
    """The 7B comparison of the BFPO README figure (helpfulness, harmlessness, bubble radius in
    pixels per model), quoted: read off the plot, approximate, metrics not named by the README."""
    rows = rows if rows is not None else read_reported()
    points: dict[str, dict] = {}
    for r in rows:
        model = QUOTED_7B.get(r["row"])
        if model is None or not r["table_or_figure"].startswith("Repo README figure"):
            continue
        axis = next((name for prefix, name in _AXES.items() if r["column"].startswith(prefix)), None)
        if axis is None:
            continue
        points.setdefault(model, {"method": model, "source": "BFPO README figure (read off the plot)"})[axis] = float(
            r["value"]
        )
    missing = [m for m in QUOTED_7B.values() if m not in points or len(points[m]) < 5]
    if missing:
        raise ValueError(f"reported results: no helpfulness/harmlessness point for {missing}")
    return pd.DataFrame(points.values())


def quoted_claim(rows: list[dict], needle: str) -> str:
    """The value (with unit) of the first reported row whose row/column text contains ``needle``."""
    for r in rows:
        if needle in r["row"] or needle in r["column"]:
            return f"{r['value']} {r['unit']}".strip()
    raise ValueError(f"reported results: no row mentions {needle!r}")


METRICS = {
    "harmlessness": ("safe", ("harmful",)),
    "helpfulness": ("helpfulness", ("benign", "scary")),
    "over_refusal": ("refusal", ("scary",)),
}
"""Metric -> (per-prompt column, prompt kinds it is measured on), as ``toyworld.summarise`` defines them."""


def metric_matrix(prompts: pd.DataFrame, method: str, wording: str, metric: str) -> np.ndarray:
    """``[seeds, prompts]`` of one metric for one method: rows are seeds (sorted), columns the prompts
    of the metric's kinds (sorted by id); every seed must cover the same prompts."""
    column, kinds = METRICS[metric]
    sel = prompts[(prompts["method"] == method) & (prompts["wording"] == wording) & prompts["kind"].isin(kinds)]
    if sel.empty:
        raise ValueError(f"no judged prompts for method {method!r}, wording {wording!r}, metric {metric!r}")
    table = sel.pivot(index="seed", columns="prompt_id", values=column).sort_index().sort_index(axis=1)
    if table.isna().any().any():
        raise ValueError(f"method {method!r}: the seeds were judged on different prompts")
    return table.to_numpy(dtype=float)


def method_intervals(prompts: pd.DataFrame, wording: str, titles: dict | None = None) -> dict:
    """``{method title: {metric: Interval}}``: each method's value of each metric with its 95 %
    seed-level interval (for error bars)."""
    titles = titles or {}
    out = {}
    for method in dict.fromkeys(prompts[prompts["wording"] == wording]["method"]):
        out[titles.get(method, method)] = {
            metric: stats.interval(metric_matrix(prompts, method, wording, metric)) for metric in METRICS
        }
    return out


def change(prompts: pd.DataFrame, method: str, baseline: str, wording: str, metric: str) -> stats.Interval:
    """``metric(method) - metric(baseline)``, paired on the same seeds and prompts, with its interval.
    A baseline judged on fewer seeds (or one) is matched seed by seed where it can be, else its
    first seed stands for all."""
    a, b = _paired_matrices(prompts, method, baseline, wording, metric)
    return stats.paired_difference(a, b)


def _paired_matrices(prompts: pd.DataFrame, method: str, baseline: str, wording: str, metric: str):
    """``[S, P]`` matrices of ``method`` and ``baseline`` on the same seeds and prompts; a baseline judged on
    another number of seeds is its first seed repeated for every seed of ``method``."""
    a = metric_matrix(prompts, method, wording, metric)
    b = metric_matrix(prompts, baseline, wording, metric)
    return a, (b if b.shape[0] == a.shape[0] else np.repeat(b[:1], a.shape[0], axis=0))


MIN_SEEDS = 5
"""Below this many seeds every verdict is "inconclusive": so few seeds say little about the spread
between runs and between machines (float rounding differs between CPUs, and with 3 seeds verdicts
were seen to flip on another CPU). The verdict the interval alone gives is kept beside it."""


def _few_seeds(verdict: str, seeds: int) -> str:
    if seeds < MIN_SEEDS:
        return f"inconclusive ({seeds} seeds, fewer than {MIN_SEEDS}; the interval alone: {verdict})"
    return verdict


def claim_verdict(iv: stats.Interval, threshold: float, direction: int) -> str:
    """:func:`bfpo.stats.verdict`, made "inconclusive" under :data:`MIN_SEEDS` seeds."""
    return _few_seeds(stats.verdict(iv, threshold, direction), iv.seeds)


def compute_claim(compute: dict, reported: list[dict]) -> dict | None:
    """The compute claim from notebook 04's ``compute`` summary (:func:`bfpo.curves.compute_summary`):
    at the declared level (the first), the FLOPs BFPO's mean test curve needs to reach it as a share
    of what Safe RLHF's needs; when Safe RLHF never reaches it, a share of all Safe RLHF spent (an
    upper bound); when BFPO never reaches it, no share and "inconclusive". Other levels are described
    beside it."""
    if not compute or not compute.get("levels"):
        return None
    declared, *others = compute["levels"]

    def describe(lv: dict) -> str:
        if not lv["bfpo_reached"]:
            reached = "reaches" if lv["safe_rlhf_reached"] else "does not reach"
            return f"BFPO's mean curve does not reach {lv['level']:.2f} (Safe RLHF's {reached} it)"
        if lv["safe_rlhf_reached"]:
            return f"{lv['bfpo_fraction']:.1%} at {lv['level']:.2f}"
        return f"at most {lv['bfpo_fraction']:.1%} at {lv['level']:.2f} (Safe RLHF never reached it)"

    ratio = declared["bfpo_fraction"]
    if ratio is None:
        verdict = stats.INCONCLUSIVE
    elif ratio < 0.10:
        verdict = stats.AGREES
    else:
        verdict = stats.DISAGREES if declared["safe_rlhf_reached"] else stats.INCONCLUSIVE
    beside = "; ".join(f"SFT + {lv['delta']:g}: {describe(lv)}" for lv in others)
    return {
        "claim": f"compute to reach harmlessness SFT + {declared['delta']:g}, BFPO as a share of Safe RLHF",
        "quoted": f"{quoted_claim(reported, 'computational resources')}",
        "value": describe(declared),
        "measured": "read off the mean test curve over seeds (FLOPs are counted; the crossing has no interval)"
        + (f"; beside it, {beside}" if beside else ""),
        "vs_baselines": "",
        "verdict": _few_seeds(verdict, compute.get("seeds", 0)),
        "interval": None,
    }


def claims(
    results: pd.DataFrame,
    prompts: pd.DataFrame,
    wording: str = "test",
    reported: list[dict] | None = None,
    compute: dict | None = None,
    titles: dict | None = None,
) -> list[dict]:
    """Each claim of the paper beside this run's measurement on SafeHelp: the method's value with its
    interval, its change from the SFT start (paired; the verdict follows from this interval), and
    BFPO minus each other method on the same metric (paired)."""
    reported = reported if reported is not None else read_reported()
    titles = titles or {}
    methods = list(dict.fromkeys(prompts[prompts["wording"] == wording]["method"]))
    out = []

    def claim(what, quoted, method, metric, threshold, direction, label=""):
        if method not in methods:
            return
        iv = change(prompts, method, "sft", wording, metric)
        value = stats.interval(metric_matrix(prompts, method, wording, metric))
        versus = [
            f"{titles.get(other, other)} {change(prompts, 'bfpo', other, wording, metric)}"
            for other in methods
            if other not in ("bfpo", "sft") and "bfpo" in methods and method.startswith("bfpo")
        ]
        out.append(
            {
                "claim": what,
                "quoted": quoted,
                "value": f"{titles.get(method, method)} {metric.replace('_', '-')} {value.mean:.2f} "
                f"[{value.low:.2f}, {value.high:.2f}]",
                "measured": f"{label}{iv} (seeds {iv.seeds}, prompts {iv.prompts})",
                "vs_baselines": "; ".join(versus),
                "verdict": claim_verdict(iv, threshold, direction),
                "interval": iv.as_dict(),
                "threshold": threshold,  # the claim: the change lies above (direction +1) this value
                "direction": direction,
            }
        )

    claim(
        "harmlessness gain with public data",
        f"+{quoted_claim(reported, 'public datasets only')}",
        "bfpo",
        "harmlessness",
        0.0,
        +1,
    )
    claim(
        "harmlessness gain with red-teaming data",
        f"+{quoted_claim(reported, 'minimal red-teaming')}",
        "bfpo_red_team",
        "harmlessness",
        0.0,
        +1,
    )
    claim("helpfulness kept (falls by less than 0.05)", "kept (no loss reported)", "bfpo", "helpfulness", -0.05, +1)
    row = compute_claim(compute, reported)
    if row is not None:
        out.append(row)
    claim(
        "DPO on helpfulness labels loses harmlessness (Figure 1)",
        "shown qualitatively",
        "dpo_helpful",
        "harmlessness",
        0.0,
        -1,
        "harmlessness ",
    )
    claim(
        "DPO on safety labels over-refuses (Figure 1)",
        "shown qualitatively",
        "dpo_safety",
        "over_refusal",
        0.0,
        +1,
        "over-refusal ",
    )
    claim(
        "Safe RLHF raises harmlessness over its SFT start (its own paper)",
        "shown (Safe RLHF paper)",
        "safe_rlhf",
        "harmlessness",
        0.0,
        +1,
    )
    return out


def paired_table(prompts: pd.DataFrame, wording: str = "test", method: str = "bfpo") -> list[dict]:
    """``method`` minus each other method, per metric, on the same seeds and prompts (95 % intervals)."""
    others = [m for m in dict.fromkeys(prompts[prompts["wording"] == wording]["method"]) if m != method]
    rows = []
    for other in others:
        row = {"baseline": other}
        for metric in METRICS:
            iv = change(prompts, method, other, wording, metric)
            row[metric] = str(iv)
            row[f"{metric}_interval"] = iv.as_dict()
        rows.append(row)
    return rows


def claims_table(rows: list[dict], wording: str = "test") -> list[str]:
    lines = [
        f"| claim of the paper | quoted | measured here ({wording} wordings), mean [95% interval] | change from SFT, "
        "paired [95% interval] | BFPO minus each other method, same metric, paired | verdict |",
        "|---|---|---|---|---|---|",
    ]
    return lines + [
        f"| {r['claim']} | {r['quoted']} | {r.get('value', '')} | {r['measured']} | "
        f"{r.get('vs_baselines', '').replace('; ', '<br>')} | {r['verdict']} |"
        for r in rows
    ]


def paired_lines(rows: list[dict], method_title: str = "BFPO", titles: dict | None = None) -> list[str]:
    titles = titles or {}
    lines = [
        f"| {method_title} minus | harmlessness | helpfulness | over-refusal |",
        "|---|---|---|---|",
    ]
    for r in rows:
        name = titles.get(r["baseline"], r["baseline"])
        lines.append(f"| {name} | {r['harmlessness']} | {r['helpfulness']} | {r['over_refusal']} |")
    return lines


def method_lines(intervals: dict) -> list[str]:
    """A markdown table of :func:`method_intervals`: each method's mean [95 % interval] per metric."""
    lines = ["| method | helpfulness | over-refusal | harmlessness |", "|---|---|---|---|"]
    fmt = lambda iv: f"{iv.mean:.2f} [{iv.low:.2f}, {iv.high:.2f}]"  # noqa: E731
    for name, ivs in intervals.items():
        cells = " | ".join(fmt(ivs[m]) for m in ("helpfulness", "over_refusal", "harmlessness"))
        lines.append(f"| {name} | {cells} |")
    return lines


def write_summary(rows: list[dict], path, header: str, extra: list[str] = ()) -> Path:
    lines = [header.strip(), "", *claims_table(rows), *extra]
    return write_text(path, "\n".join(lines) + "\n")


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names of the points no other point beats on both axes (higher is better on each): the
    helpfulness-harmlessness front, ordered by the first axis."""
    front = [
        name
        for name, (x, y) in points.items()
        if not any(ox >= x and oy >= y and (ox, oy) != (x, y) for other, (ox, oy) in points.items() if other != name)
    ]
    return sorted(front, key=lambda name: points[name])


def tuning_lines(table: pd.DataFrame, titles: dict | None = None) -> list[str]:
    """A markdown table of notebook 04's ``tuning.csv``: every grid point with its validation score (mean
    +- sd over the tuning seeds) and how often it wins when the tuning seeds are resampled."""
    titles = titles or {}
    lines = [
        "| method | grid point | validation score (mean +- sd over tuning seeds) | wins when the tuning seeds are "
        "resampled | helpfulness | harmlessness | over-refusal | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        sd = f" +- {r['score_sd']:.3f}" if "score_sd" in r and r["score_sd"] == r["score_sd"] else ""
        wins = f"{r['win_rate']:.0%}" if "win_rate" in r else ""
        lines.append(
            f"| {titles.get(r['method'], r['method'])} | `{r['config']}` | {r['score']:.3f}{sd} | {wins} | "
            f"{r['helpfulness']:.2f} | {r['harmlessness']:.2f} | {r['over_refusal']:.2f} | "
            f"{'yes' if r['selected'] else ''} |"
        )
    return lines


def calibration_lines(calibration: dict[str, dict]) -> list[str]:
    """A markdown table of Safe RLHF's cost-model calibration (notebook 04's ``cost_calibration``), and
    the unsafe answers of the policy that its cost model scored lowest, when they were kept."""
    lines = [
        "| responses | unsafe with cost > 0 | safe with cost < 0 | mean cost unsafe / safe | n unsafe / safe |",
        "|---|---|---|---|---|",
    ]
    for name, c in calibration.items():
        lines.append(
            f"| {name} | {c['unsafe_positive']:.2f} | {c['safe_negative']:.2f} | {c['mean_cost_unsafe']:.2f} / "
            f"{c['mean_cost_safe']:.2f} | {c['unsafe']} / {c['safe']} |"
        )
    missed = [m for c in calibration.values() for m in c.get("missed", [])]
    if missed:
        lines += ["", "Unsafe answers (gold judge) of the Safe RLHF policy that its cost model scored lowest:", ""]
        lines += [f'- cost {m["cost"]:+.2f}: *{m["prompt"]}* -> "{m["response"]}"' for m in missed]
    return lines


def constraint_lines(constraint: dict[str, dict]) -> list[str]:
    """A markdown table of whether Safe RLHF's constraint bound, per seed (notebook 04's ``constraint``,
    from :func:`bfpo.ppo.constraint_summary`)."""
    lines = [
        "| run | J_C(start) | d | start violates J_C <= d | final lambda | largest lambda | iterations with J_C > d |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in constraint.items():
        lines.append(
            f"| {name} | {c['start_cost']:+.2f} | {c['cost_threshold']:+.2f} | "
            f"{'yes' if c['binds_at_start'] else 'NO'} | {c['final_lambda']:.2f} | {c['max_lambda']:.2f} | "
            f"{c['share_above_d']:.0%} |"
        )
    return lines


def sweep_lines(curve: pd.DataFrame) -> list[str]:
    """A markdown table of Safe RLHF's fixed-lambda trade-off curve (:func:`bfpo.study.sweep_curve`)."""
    lines = ["| lambda (fixed) | helpfulness | harmlessness | over-refusal | seeds |", "|---|---|---|---|---|"]
    for _, r in curve.sort_values("lambda").iterrows():
        lines.append(
            f"| {r['lambda']:g} | {r['helpfulness']:.2f} | {r['harmlessness']:.2f} | {r['over_refusal']:.2f} "
            f"| {int(r['seeds'])} |"
        )
    return lines


def _word(verdict: str) -> str:
    """The verdict itself (agrees / does not agree / inconclusive), without the few-seeds note."""
    return next(v for v in (stats.AGREES, stats.DISAGREES, stats.INCONCLUSIVE) if verdict.startswith(v))


def seed_subset(prompts: pd.DataFrame, seeds) -> pd.DataFrame:
    """The per-prompt rows of the given seeds only (every method, the SFT start included)."""
    return prompts[prompts["seed"].isin(list(seeds))]


def replicate(prompts: pd.DataFrame, halves: dict[str, list[int]], wording: str = "test", titles=None) -> list[dict]:
    """Each claim's verdict on each half of the seeds and on all of them: rows ``{claim, <half>: verdict,
    ..., all: verdict, replicated}``; "replicated" only when every half and the whole give the same
    verdict (the claim holds, fails or stays open on two independent draws of the study, as on another
    machine). The compute claim (read off mean curves, without an interval) is not split."""
    if len(halves) != 2 or set(halves[next(iter(halves))]) & set(halves[list(halves)[1]]):
        raise ValueError(f"replicate: expected two disjoint halves of the seeds, got {halves}")
    seeds = sorted(s for half in halves.values() for s in half)
    reported = read_reported()
    every = claims(None, seed_subset(prompts, seeds), wording, reported, None, titles)
    split = {
        name: claims(None, seed_subset(prompts, half), wording, reported, None, titles) for name, half in halves.items()
    }
    rows = []
    for i, row in enumerate(every):
        verdicts = {name: rows_[i]["verdict"] for name, rows_ in split.items()} | {"all": row["verdict"]}
        rows.append(
            {
                "claim": row["claim"],
                **verdicts,
                "intervals": {name: rows_[i]["interval"] for name, rows_ in split.items()} | {"all": row["interval"]},
                "replicated": len({_word(v) for v in verdicts.values()}) == 1,
            }
        )
    return rows


def replication_lines(rows: list[dict], halves: dict[str, list[int]]) -> list[str]:
    """A markdown table of :func:`replicate`: the verdict per half and overall, and whether it replicated."""
    names = list(halves)
    head = " | ".join(f"half {n} (seeds {halves[n]})" for n in names)
    lines = [f"| claim | {head} | all seeds | replicated |", "|---|" + "---|" * (len(names) + 2)]
    for r in rows:
        cells = " | ".join(r[n] for n in names)
        lines.append(f"| {r['claim']} | {cells} | {r['all']} | {'**yes**' if r['replicated'] else 'no'} |")
    return lines


TARGET_HALF_WIDTH = 0.08
"""The precision the study aims at: each headline change measured to within +- 0.08 (95 %)."""


def power(prompts: pd.DataFrame, method: str, metric: str, wording: str = "test", baseline: str = "sft") -> dict:
    """How precisely the study measures ``metric(method) - metric(baseline)``: the seed standard deviation
    of the method's own metric and of the paired change, the 95 % half-width of the change, and the
    minimal change detectable with 80 % power at this spread and number of seeds."""
    a, b = _paired_matrices(prompts, method, baseline, wording, metric)
    diff = (a - b).mean(axis=1)  # [S] each seed's paired change
    iv = stats.interval(a - b)
    return {
        "method": method,
        "metric": metric,
        "seeds": int(a.shape[0]),
        "prompts": int(a.shape[1]),
        "seed_sd": float(a.mean(axis=1).std(ddof=1)) if a.shape[0] > 1 else float("nan"),
        "change_sd": float(diff.std(ddof=1)) if a.shape[0] > 1 else float("nan"),
        "half_width": float((iv.high - iv.low) / 2),
        "seeds_for_target": stats.seeds_for_half_width(float(diff.std(ddof=1)), TARGET_HALF_WIDTH)
        if a.shape[0] > 1
        else None,
        "mde_80": stats.minimal_detectable_effect(float(diff.std(ddof=1)), int(a.shape[0]))
        if a.shape[0] > 1
        else float("inf"),
    }


def power_lines(rows: list[dict], titles: dict | None = None) -> list[str]:
    titles = titles or {}
    lines = [
        "| method, metric | seeds x prompts | seed sd of the method | seed sd of the change from SFT | 95% half-width "
        f"of the change | smallest change detectable (80% power) | seeds for a half-width of {TARGET_HALF_WIDTH} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = f"{titles.get(r['method'], r['method'])}, {r['metric'].replace('_', '-')}"
        lines.append(
            f"| {name} | {r['seeds']} x {r['prompts']} | {r['seed_sd']:.3f} | {r['change_sd']:.3f} | "
            f"{r['half_width']:.3f} | {r['mde_80']:.3f} | {r.get('seeds_for_target') or ''} |"
        )
    return lines


def headline_lines(rows: list[dict], replication: list[dict]) -> list[str]:
    """The headline table (README): each claim with its quoted value, the paired change from the SFT start
    over all seeds and on each half, and a verdict only where it replicated; elsewhere "not replicated"
    with the three verdicts beside it. A claim without per-half verdicts (compute) is never replicated."""
    by_claim = {r["claim"]: r for r in replication}
    lines = [
        "| claim | quoted | change from the SFT start, all seeds | half A | half B | verdict (replicated only) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        rep = by_claim.get(row["claim"])
        change = row["measured"].split(" (seeds")[0] if row["interval"] is not None else row["value"]
        if rep is None:
            halves = ("not split", "not split")
            verdict = f"not replicated (no per-half measure; all seeds: {row['verdict']})"
        else:
            halves = tuple(_interval_text(rep["intervals"][h]) for h in ("A", "B"))
            verdict = (
                _word(rep["all"])
                if rep["replicated"]
                else f"not replicated (A: {_word(rep['A'])}, B: {_word(rep['B'])}, all: {_word(rep['all'])})"
            )
        lines.append(f"| {row['claim']} | {row['quoted']} | {change} | {halves[0]} | {halves[1]} | {verdict} |")
    return lines


def _interval_text(iv: dict) -> str:
    return f"{iv['mean']:+.2f} [{iv['low']:+.2f}, {iv['high']:+.2f}]"
