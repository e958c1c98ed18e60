"""RESULTS.md: the paper's claims beside a run's numbers, written from notebook 04's results.

:func:`write` is what notebook 06 calls: the header (what was measured, how, and the verdict rule),
the claims table on test wordings (:func:`bfpo.report.claims`), the headline of replicated verdicts,
the replication and power tables, every method's interval, BFPO minus each method, the tuning table,
Safe RLHF's constraint, trade-off curve and cost-model calibration, and the claims on training
wordings. It returns what notebook 06 keeps in its ``results.json``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bfpo import report, study
from bfpo.io import project_path


def write(
    profile: str,
    runs: Path,
    results_csv: Path,
    df: pd.DataFrame,
    prompts: pd.DataFrame,
    baselines_summary: dict,
    sweep: pd.DataFrame,
    titles: dict,
    made: dict,
    figures_dir,
) -> tuple[Path, dict]:
    """Write ``figures_dir/RESULTS.md`` for the run in ``runs``; returns its path and the results to keep."""
    seeds = sorted(df.loc[df["method"] != "sft", "seed"].unique())
    root = project_path(".")  # the results file named relative to the checkout
    shown_csv = results_csv.relative_to(root) if results_csv.is_relative_to(root) else results_csv
    seed_list = list(map(int, seeds))
    header = "\n".join(
        [
            f"# Results summary (profile {profile})",
            "",
            f"Written by `notebooks/06_figures.ipynb` from `{shown_csv}` and the per-prompt judgements beside it.",
            '"Quoted" values come from `data/paper/bfpo_reported_results.csv` (each with its source there);',
            '"measured" values are this run\'s, on the SafeHelp world (a ~1M-parameter Llama, gold judge,',
            "test prompt wordings, never seen in training or tuning): each method's value and its change from the "
            "SFT start, paired on the same seeds",
            f"{seed_list} and prompts, as the mean with its 95% seed-level Student's t interval (each",
            "seed's mean over prompts, then t over seeds; `bfpo.stats`). Verdicts follow from the interval: "
            '"agrees" only when the whole interval is on',
            'the claimed side, "does not agree" only when it is wholly on the other side, otherwise',
            '"inconclusive". A synthetic world checks the direction and the mechanism of each claim, not its size',
            "at 7B scale.",
        ]
    )
    if len(seeds) < 5:
        header += "\n".join(
            [
                "",
                "",
                f'**{len(seeds)} seeds: every verdict is "inconclusive".** So few seeds say little about the',
                "spread between runs and between machines (float rounding differs between CPUs, so every run "
                "diverges),",
                "and verdicts of this size of run have flipped on another CPU. What the interval alone says is kept",
                "beside each verdict; verdicts to rely on need at least 5 seeds.",
            ]
        )
    compute = baselines_summary.get("compute")
    rows = report.claims(df, prompts, wording="test", compute=compute, titles=titles)
    rows_training = report.claims(df, prompts, wording="training", compute=compute, titles=titles)
    paired = report.paired_table(prompts, wording="test")
    halves = {k: [int(x) for x in v] for k, v in baselines_summary.get("halves", study.split_halves(seeds)).items()}
    replication = report.replicate(prompts, halves, "test", titles)
    headline = [("bfpo", "harmlessness"), ("bfpo_red_team", "harmlessness"), ("bfpo", "helpfulness")]
    headline += [("dpo_helpful", "harmlessness"), ("dpo_safety", "over_refusal"), ("safe_rlhf", "harmlessness")]
    power = [report.power(prompts, m, metric) for m, metric in headline if m in set(prompts["method"])]
    tuning = pd.read_csv(Path(runs) / "04_baselines" / "tuning.csv")
    calibration = baselines_summary.get("cost_calibration", {})
    extra = [
        "",
        "Headline: the claims with a verdict only where the two halves of the seeds and all seeds agree (the README's "
        "table):",
        "",
        *report.headline_lines(rows, replication),
        "",
        "Replication: each claim's verdict on the two fixed halves of the report seeds and on all of them; a claim "
        "is **replicated** only when the three agree (the compute claim is read off mean curves and not split):",
        "",
        *report.replication_lines(replication, halves),
        "",
        "Power: the seed spread behind each claim, the 95% half-width of its change from the SFT start, and the "
        "smallest change the study detects with 80% power at that spread (paired t over seeds):",
        "",
        *report.power_lines(power, titles),
        "",
        "Each method on test wordings, mean [95% interval] over seeds and prompts:",
        "",
        *report.method_lines(report.method_intervals(prompts, "test", titles)),
        "",
        "BFPO minus each other method on test wordings, paired on the same seeds and prompts (mean [95% interval]):",
        "",
        *report.paired_lines(paired, titles=titles),
        "",
        f"Tuning (validation wordings, tuning seeds {baselines_summary['tuning_seeds']}; the rule: the highest "
        "(helpfulness + harmlessness) / 2, ties to the earlier point):",
        "",
        *report.tuning_lines(tuning, titles),
        "",
        "Safe RLHF's constraint, per seed of the chosen configuration: the SFT start's mean cost J_C (the cost "
        "model on the start's own samples), the threshold d = J_C(start) - m, and whether lambda had work to do:",
        "",
        *report.constraint_lines(baselines_summary.get("constraint", {})),
        "",
        "Safe RLHF's trade-off curve: the chosen configuration with lambda fixed (learning rate 0), test wordings, "
        "mean over seeds:",
        "",
        *report.sweep_lines(study.sweep_curve(sweep, "test")),
        "",
        "Safe RLHF's cost model on responses it did not train on (cost > 0 reads as unsafe):",
        "",
        *report.calibration_lines(calibration),
        "",
        "The same claims on the prompt wordings seen in training:",
        "",
        *report.claims_table(rows_training, "training"),
        "",
        "Figures of this notebook: " + ", ".join(f"`{p.name}`" for p in made.values()),
    ]
    path = report.write_summary(rows, project_path(figures_dir) / "RESULTS.md", header, extra)
    return path, {
        "claims_test": rows,
        "claims_training": rows_training,
        "paired_test": paired,
        "halves": halves,
        "replication": replication,
        "power": power,
        "figures": [p.name for p in made.values()],
    }
