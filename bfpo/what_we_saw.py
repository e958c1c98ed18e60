"""The last cell of each notebook: what it showed, in a few lines, with every number read from the
results file the notebook wrote (never typed in), so that the words follow the run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def _read(path) -> dict:
    return json.loads(Path(path).read_text())


def theory(results_json) -> str:
    """Notebook 01: the derivation checked on the bandit, and the rankings each loss implies."""
    r = _read(results_json)
    rankings = "; ".join(f"{name}: {' > '.join(order)}" for name, order in r["rankings"].items())
    right = [n for n, order in r["rankings"].items() if order[0] == "helpful-safe" and order[-1] == "helpful-unsafe"]
    return "\n".join(
        [
            f"- The closed-form optimum pi* of the bilinear objective agrees with a numerical maximisation to "
            f"{r['optimum_max_abs_error']:.1e}, and gradient descent on the BFPO loss reaches pi* to "
            f"{r['bfpo_max_abs_error']:.1e} (tau = {r['tau']}, {r['steps']} steps).",
            f"- The global ranking each objective implies: {rankings}.",
            f"- Helpful-safe first and helpful-unsafe last: {', '.join(right) or 'none of them'}; SafeDPO's optimum "
            f"leaves {r['safedpo_unsafe_mass']:.1e} of its mass on unsafe responses.",
        ]
    )


def labeling(results_json) -> str:
    """Notebook 02: the label combinations per source and the gold judge's accuracy."""
    r = _read(results_json)
    counts = r["label_counts"]["safehelp"]
    total = sum(counts.values())
    mixed = counts["safe > unsafe"] + counts["unsafe > safe"]
    return "\n".join(
        [
            f"- SafeHelp: {total} pairs, {mixed} ({mixed / total:.0%}) with one safe and one unsafe response; in "
            f"{counts['unsafe > safe']} of them the more helpful response is the unsafe one, where helpfulness "
            "labels alone teach harm.",
            f"- The gold judge agrees with the world's own labels on {r['judge_accuracy']['clean']:.0%} of held-out "
            f"answers and {r['judge_accuracy']['perturbed']:.0%} of perturbed ones.",
            f"- Real sets read: {', '.join(f'{k} ({v})' for k, v in r['real_pairs'].items())}.",
        ]
    )


def training(results_json) -> str:
    """Notebook 03: the margins against their targets and the gold judge before and after BFPO."""
    r = _read(results_json)
    from bfpo import labels

    m, judged = r["final_margins"], r["judged"]
    order = sorted(m, key=m.get, reverse=True)
    targets = labels.targets()
    same = order == sorted(targets, key=targets.get, reverse=True)
    sft, bfpo = judged["SFT (test wordings)"], judged["BFPO (test wordings)"]
    return "\n".join(
        _real_lines(r.get("real_model"))
        + [
            f"- SFT ({r['sft']['steps']} steps) then BFPO ({r['bfpo']['steps']} steps) on {r['processes']} "
            "accelerate process(es).",
            f"- BFPO's implicit-reward margins per label combination, largest first: "
            f"{', '.join(f'{k} {m[k]:+.2f}' for k in order)}; "
            f"{'the order of its targets g' if same else 'not the order of its targets g'} "
            f"({', '.join(f'{k} {targets[k]:+.2f}' for k in sorted(targets, key=targets.get, reverse=True))}).",
            f"- Gold judge on test wordings, SFT -> BFPO: helpfulness {sft['helpfulness']:.2f} -> "
            f"{bfpo['helpfulness']:.2f}, harmlessness {sft['harmlessness']:.2f} -> {bfpo['harmlessness']:.2f}, "
            f"over-refusal {sft['over_refusal']:.2f} -> {bfpo['over_refusal']:.2f} (one seed: the mechanism, "
            "not a result; notebook 04 has the seeds).",
        ]
    )


def _real_lines(real: dict | None) -> list[str]:
    """Notebook 03's real chat model check, when it ran (first line of the list)."""
    if not real:
        return []
    t, start, after = real["training"], real["judged"]["start"], real["judged"]["BFPO"]
    return [
        f"- The real chat model ({real['model']}, {t['total_parameters'] / 1e6:.1f}M parameters, "
        f"{t['trainable_parameters'] / 1e6:.1f}M trained): {t['steps']} BFPO steps on {t['train_examples']} PKU pairs "
        f"in {t['seconds']:.0f} s ({t['mixed_precision']}), loss {real['first_loss']:.0f} -> {real['last_loss']:.0f}; "
        f"refusal rule, start -> BFPO: harmful prompts refused {start['harmless_rate']:.2f} -> "
        f"{after['harmless_rate']:.2f}, benign refused {start['over_refusal']:.2f} -> {after['over_refusal']:.2f} "
        "(a handful of answers: the code path, not a measurement)."
    ]


def baselines(results_json) -> str:
    """Notebook 04: each method's test-wording means, and Safe RLHF's constraint."""
    r = _read(results_json)
    rows = [
        f"{method}: helpfulness {v['helpfulness']:.2f}, harmlessness {v['harmlessness']:.2f}, "
        f"over-refusal {v['over_refusal']:.2f}"
        for key, v in sorted(r["means"].items())
        if key.startswith("test/")
        for method in [key.removeprefix("test/")]
    ]
    binds = sum(c["binds_at_start"] for c in r.get("constraint", {}).values())
    lines = [f"- Test wordings, mean over seeds {r['seeds']} (intervals and verdicts: notebook 06):"]
    lines += [f"  - {row}" for row in rows]
    if r.get("constraint"):
        lines.append(f"- Safe RLHF's constraint bound at the start in {binds} of {len(r['constraint'])} seeds.")
    return "\n".join(lines)


def evaluation(results_csv) -> str:
    """Notebook 05: how many models and tasks, and the SafeHelp rows."""
    df = pd.read_csv(results_csv)
    safehelp = df[(df["task"] == "safehelp") & (df["metric"] == "harmlessness")]
    lines = [f"- {df['model'].nunique()} models on {df['task'].nunique()} tasks ({len(df)} rows)."]
    lines += [f"  - {row.model}: SafeHelp harmlessness {row.value:.2f}" for row in safehelp.itertuples()]
    return "\n".join(lines)


def figures(results_json) -> str:
    """Notebook 06: each claim's verdict, replicated or not."""
    r = _read(results_json)
    lines = ["- The paper's claims on test wordings (RESULTS.md has the intervals):"]
    for row in r["replication"]:
        mark = "replicated" if row["replicated"] else "not replicated"
        lines.append(f"  - {row['claim']}: {row['all']} ({mark} across the seed halves)")
    return "\n".join(lines)
