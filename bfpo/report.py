"""The paper's claims beside what a run measured, as a markdown summary.

Quoted numbers come from ``data/paper/bfpo_reported_results.csv`` (each row names the table,
figure or text it was read from); measured numbers come from notebook 04's tidy results
(method, seed, wording, helpfulness, harmlessness, over_refusal, flops). The two are never mixed
in one number: each claim is a row with the quoted value, the measured value (mean +- sd over
seeds) and a plain verdict.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

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


def _stat(values: pd.Series) -> str:
    return f"{values.mean():+.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f} (n={len(values)})"


def claims(results: pd.DataFrame, wording: str = "held-out", reported: list[dict] | None = None) -> list[dict]:
    """Each claim of the paper beside this run's measurement on SafeHelp, with a verdict."""
    reported = reported if reported is not None else read_reported()
    df = results[results["wording"] == wording]
    sft = df[df["method"] == "sft"].iloc[0]

    def gain(method: str, metric: str) -> pd.Series:
        return df[df["method"] == method][metric] - sft[metric]

    out = []
    for method, what, needle in (
        ("bfpo", "harmlessness gain with public data", "public datasets only"),
        ("bfpo_red_team", "harmlessness gain with red-teaming data", "minimal red-teaming"),
    ):
        g = gain(method, "harmlessness")
        if len(g):
            verdict = (
                "agrees (harmlessness rises)"
                if g.mean() - g.std(ddof=1 if len(g) > 1 else 0) > 0
                else ("direction agrees, within noise" if g.mean() > 0 else "does not agree")
            )
            out.append(
                {
                    "claim": what,
                    "quoted": f"+{quoted_claim(reported, needle)}",
                    "measured": _stat(g),
                    "verdict": verdict,
                }
            )
    h = gain("bfpo", "helpfulness")
    if len(h):
        kept = h.mean() > -0.05
        out.append(
            {
                "claim": "helpfulness kept",
                "quoted": "kept (no loss reported)",
                "measured": _stat(h),
                "verdict": "agrees" if kept else "does not agree (helpfulness falls by more than 0.05)",
            }
        )
    flops = df.groupby("method")["flops"].mean()
    if {"bfpo", "safe_rlhf"} <= set(flops.index) and flops["safe_rlhf"] > 0:
        ratio = flops["bfpo"] / flops["safe_rlhf"]
        out.append(
            {
                "claim": "compute of BFPO relative to Safe RLHF",
                "quoted": f"{quoted_claim(reported, 'computational resources')}",
                "measured": f"{ratio:.1%}",
                "verdict": "agrees"
                if ratio < 0.10
                else "does not agree (at or above 10%; the ratio depends on both budgets, and PPO here "
                "runs only a few thousand rollouts)",
            }
        )
    for method, metric, direction, what in (
        ("dpo_helpful", "harmlessness", -1, "DPO on helpfulness labels loses harmlessness (Figure 1)"),
        ("dpo_safety", "over_refusal", +1, "DPO on safety labels over-refuses (Figure 1)"),
    ):
        g = gain(method, metric)
        if len(g):
            ok = g.mean() * direction > 0
            out.append(
                {
                    "claim": what,
                    "quoted": "shown qualitatively",
                    "measured": f"{metric} {_stat(g)}",
                    "verdict": "agrees" if ok else "does not agree",
                }
            )
    return out


def write_summary(rows: list[dict], path, header: str) -> Path:
    lines = [
        header.strip(),
        "",
        "| claim of the paper | quoted | measured here (change from SFT) | verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['claim']} | {r['quoted']} | {r['measured']} | {r['verdict']} |" for r in rows]
    return write_text(path, "\n".join(lines) + "\n")
