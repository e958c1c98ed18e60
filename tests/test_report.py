"""The results summary: quoted numbers read with their source, claims beside measurements."""

import pandas as pd
import pytest

from bfpo import report


def test_quoted_7b_points_come_from_the_readme_figure():
    points = report.quoted_7b_points().set_index("method")
    assert len(points) == 7
    assert (points.loc["BFPO", "harmlessness"], points.loc["Zephyr-7b-beta", "harmlessness"]) == (0.74, 0.59)
    assert points["source"].str.contains("README figure").all()


KINDS = ["harmful"] * 4 + ["benign"] * 4 + ["scary"] * 4
SFT_SAFE = [0.25, 0.5, 0.5, 0.25]


def prompts_frame(methods: dict, seeds: int = 3) -> pd.DataFrame:
    """Per-prompt judged rows: ``methods[name](seed) -> (safe on the 4 harmful prompts, helpfulness,
    refusal on scary prompts)``; 3 seeds, 12 prompts."""
    rows = []
    for method, make in methods.items():
        for seed in range(seeds):
            safe, helpfulness, refusal = make(seed)
            for pid, kind in enumerate(KINDS):
                rows.append(
                    {
                        "method": method,
                        "seed": seed,
                        "wording": "test",
                        "prompt_id": pid,
                        "kind": kind,
                        "safe": safe[pid] if kind == "harmful" else 1.0,
                        "helpfulness": helpfulness,
                        "refusal": refusal if kind == "scary" else 0.0,
                    }
                )
    return pd.DataFrame(rows)


def test_claims_verdicts_follow_the_paired_intervals(tmp_path):
    prompts = prompts_frame(
        {
            "sft": lambda s: (SFT_SAFE, 0.5, 0.25),
            "bfpo": lambda s: ([x + 0.5 for x in SFT_SAFE], 0.5, 0.0),  # +0.5 on every prompt and seed
            "bfpo_red_team": lambda s: ([x + (0.25, -0.25, 0.0)[s] for x in SFT_SAFE], 0.5, 0.25),  # seeds disagree
            "safe_rlhf": lambda s: (SFT_SAFE, 0.6, 0.25),
            "dpo_helpful": lambda s: ([0.0] * 4, 0.7, 0.0),
            "dpo_safety": lambda s: ([1.0] * 4, 0.1, 1.0),
        }
    )
    results = pd.DataFrame(
        [{"method": m, "wording": "test", "flops": f} for m, f in (("bfpo", 5.0), ("safe_rlhf", 100.0), ("sft", 0))]
    )
    level = {"delta": 0.2, "level": 0.7, "bfpo_fraction": 0.05, "bfpo_reached": True, "safe_rlhf_reached": True}
    compute = {"levels": [level, {**level, "delta": 0.1, "level": 0.6}], "seeds": 5}
    rows = {r["claim"]: r for r in report.claims(results, prompts, compute=compute, titles={"safe_rlhf": "Safe RLHF"})}
    public = rows["harmlessness gain with public data"]
    assert public["quoted"] == "+15 %" and public["measured"].startswith("+0.500 [+0.500, +0.500] (seeds 3, prompts 4)")
    assert public["verdict"] == "inconclusive (3 seeds, fewer than 5; the interval alone: agrees)", (
        "under 5 seeds no verdict is trusted to survive another machine"
    )
    assert public["value"].startswith("bfpo harmlessness 0.88 [")  # SFT 0.375 + 0.5 on the 4 harmful prompts
    # BFPO minus each other method on the claim's metric, paired: +0.5 over Safe RLHF on every prompt
    assert "Safe RLHF +0.500 [+0.500, +0.500]" in public["vs_baselines"].split("; ")
    red = rows["harmlessness gain with red-teaming data"]
    assert red["verdict"].endswith("the interval alone: inconclusive)")
    assert red["interval"]["low"] < 0 < red["interval"]["high"]
    assert rows["helpfulness kept (falls by less than 0.05)"]["verdict"].endswith("the interval alone: agrees)")
    flops = rows["compute to reach harmlessness SFT + 0.2, BFPO as a share of Safe RLHF"]
    assert flops["value"] == "5.0% at 0.70" and flops["verdict"] == "agrees"
    assert flops["measured"].endswith("beside it, SFT + 0.1: 5.0% at 0.60")
    reported = report.read_reported()
    never = report.compute_claim(
        {**compute, "levels": [{**level, "bfpo_fraction": 0.3, "safe_rlhf_reached": False}]}, reported
    )
    assert never["value"].startswith("at most 30.0%") and never["verdict"] == "inconclusive"
    reached = report.compute_claim({**compute, "levels": [{**level, "bfpo_fraction": 0.3}]}, reported)
    assert reached["verdict"] == "does not agree"
    missed = report.compute_claim(
        {**compute, "levels": [{**level, "bfpo_fraction": None, "bfpo_reached": False, "safe_rlhf_reached": False}]},
        reported,
    )
    assert missed["verdict"] == "inconclusive" and missed["value"].startswith("BFPO's mean curve does not reach 0.70")
    few = report.compute_claim({**compute, "seeds": 3}, reported)
    assert few["verdict"] == "inconclusive (3 seeds, fewer than 5; the interval alone: agrees)"
    dpo_helpful = rows["DPO on helpfulness labels loses harmlessness (Figure 1)"]
    assert dpo_helpful["verdict"].endswith("the interval alone: agrees)") and dpo_helpful["vs_baselines"] == ""
    assert rows["DPO on safety labels over-refuses (Figure 1)"]["measured"].startswith("over-refusal +0.750")
    paired = {r["baseline"]: r for r in report.paired_table(prompts)}
    assert paired["dpo_safety"]["over_refusal"] == "-1.000 [-1.000, -1.000]"
    assert paired["sft"]["harmlessness"] == "+0.500 [+0.500, +0.500]"
    intervals = report.method_intervals(prompts, "test", {"bfpo": "BFPO"})
    assert intervals["BFPO"]["harmlessness"].mean == pytest.approx(0.875)
    table = report.method_lines(intervals)
    bfpo_line = next(line for line in table if line.startswith("| BFPO |"))
    # the interval is over seeds (the prompts are the fixed set the study is about): BFPO's three seeds score
    # the same 0.875 on their harmful prompts, so there is no spread to show; the red-teaming run's seeds differ
    assert bfpo_line == "| BFPO | 0.50 [0.50, 0.50] | 0.00 [0.00, 0.00] | 0.88 [0.88, 0.88] |"
    red_team = report.method_intervals(prompts, "test")["bfpo_red_team"]["harmlessness"]
    # seed means 0.625, 0.125, 0.375: mean 0.375, sd 0.25, so 0.375 +- t(0.975, 2) 0.25 / sqrt(3) = +- 0.621
    assert (red_team.low, red_team.high) == pytest.approx((0.375 - 4.3027 * 0.25 / 3**0.5, 0.375 + 0.6210), abs=1e-3)
    extra = report.paired_lines(list(paired.values()))
    path = report.write_summary(list(rows.values()), tmp_path / "R.md", "# Summary", extra)
    text = path.read_text()
    assert text.count("\n| ") == len(rows) + 1 + len(paired) + 1 and "inconclusive" in text


def test_metric_matrix_needs_the_same_prompts_per_seed():
    prompts = prompts_frame({"sft": lambda s: (SFT_SAFE, 0.5, 0.25)})
    assert report.metric_matrix(prompts, "sft", "test", "harmlessness").shape == (3, 4)
    assert report.metric_matrix(prompts, "sft", "test", "helpfulness").shape == (3, 8)
    with pytest.raises(ValueError, match="different prompts"):
        report.metric_matrix(prompts.drop(index=0), "sft", "test", "harmlessness")


def test_missing_reported_file(monkeypatch, tmp_path):
    monkeypatch.setenv("BFPO_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="BFPO_DATA_DIR") as e:
        report.reported_results_path()
    assert "paper/bfpo_reported_results.csv" in str(e.value)


def test_pareto_front_by_hand():
    points = {"a": (0.2, 0.9), "b": (0.5, 0.5), "c": (0.4, 0.4), "d": (0.9, 0.1), "e": (0.5, 0.5)}
    # c is beaten by b on both axes; b and e tie and beat nothing of each other: both stay
    assert report.pareto_front(points) == ["a", "b", "e", "d"] or report.pareto_front(points) == ["a", "e", "b", "d"]
    assert report.pareto_front({"only": (0.1, 0.1)}) == ["only"]


def test_calibration_lines_list_every_response_set_and_the_missed_answers():
    cal = {
        "pairs": {
            "unsafe_positive": 1.0,
            "safe_negative": 0.5,
            "mean_cost_unsafe": 2.0,
            "mean_cost_safe": -1.0,
            "unsafe": 4,
            "safe": 6,
        },
        "policy": {
            "unsafe_positive": 0.25,
            "safe_negative": 1.0,
            "mean_cost_unsafe": -0.5,
            "mean_cost_safe": -3.0,
            "unsafe": 4,
            "safe": 2,
            "missed": [{"prompt": "p?", "response": "r .", "cost": -2.0}],
        },
    }
    lines = report.calibration_lines(cal)
    assert lines[2] == "| pairs | 1.00 | 0.50 | 2.00 / -1.00 | 4 / 6 |"
    assert lines[3].startswith("| policy | 0.25 |") and lines[-1] == '- cost -2.00: *p?* -> "r ."'
    assert len(report.calibration_lines({"pairs": cal["pairs"]})) == 3


def test_a_claim_replicates_only_when_both_halves_and_the_whole_agree():
    """Ten seeds in halves A (0-4) and B (5-9). BFPO gains harmlessness on every seed of A (+0.5 to +0.7)
    but only on two of B (+0.5, -0.7, +0.5, -0.7, -0.7): A agrees, B and the whole stay open, so the claim
    is not replicated. Its helpfulness (the SFT start's everywhere) is "kept" on both halves and overall: replicated."""

    def bfpo(seed):
        gain = 0.5 + 0.05 * seed if seed < 5 else (0.5 if seed in (5, 7) else -0.7)
        return [x + gain for x in SFT_SAFE], 0.5, 0.0

    prompts = prompts_frame({"sft": lambda s: (SFT_SAFE, 0.5, 0.25), "bfpo": bfpo}, seeds=10)
    halves = {"A": [0, 1, 2, 3, 4], "B": [5, 6, 7, 8, 9]}
    rows = {r["claim"]: r for r in report.replicate(prompts, halves)}
    gain = rows["harmlessness gain with public data"]
    assert (gain["A"], gain["B"], gain["all"]) == ("agrees", "inconclusive", "inconclusive")
    assert not gain["replicated"] and gain["intervals"]["B"]["seeds"] == 5
    kept = rows["helpfulness kept (falls by less than 0.05)"]
    assert (kept["A"], kept["B"], kept["all"], kept["replicated"]) == ("agrees", "agrees", "agrees", True)
    table = "\n".join(report.replication_lines(list(rows.values()), halves))
    assert "| half A (seeds [0, 1, 2, 3, 4]) | half B (seeds [5, 6, 7, 8, 9]) | all seeds | replicated |" in table
    assert "| helpfulness kept (falls by less than 0.05) | agrees | agrees | agrees | **yes** |" in table
    with pytest.raises(ValueError, match="disjoint"):
        report.replicate(prompts, {"A": [0, 1], "B": [1, 2]})
    # the headline table: a verdict only where it replicated
    level = {"delta": 0.2, "level": 0.7, "bfpo_fraction": 0.05, "bfpo_reached": True, "safe_rlhf_reached": True}
    every = report.claims(None, prompts, compute={"levels": [level], "seeds": 10})
    lines = report.headline_lines(every, list(rows.values()))
    headline = {line.split(" | ")[0].lstrip("| "): line for line in lines}
    assert headline["harmlessness gain with public data"].endswith(
        "| not replicated (A: agrees, B: inconclusive, all: inconclusive) |"
    )
    assert "| +0.60 [+0.50, +0.70] | -0.22 [-1.04, +0.60] |" in headline["harmlessness gain with public data"]
    assert headline["helpfulness kept (falls by less than 0.05)"].endswith("| agrees |")
    compute_line = next(v for k, v in headline.items() if k.startswith("compute to reach"))
    assert compute_line.endswith("| not split | not split | not replicated (no per-half measure; all seeds: agrees) |")
    # power: BFPO's per-seed changes from SFT, their sd and the smallest change detectable at 80 % power
    p = report.power(prompts, "bfpo", "harmlessness")
    changes = [0.5 + 0.05 * s for s in range(5)] + [0.5, -0.7, 0.5, -0.7, -0.7]
    assert p["seeds"] == 10 and p["prompts"] == 4 and p["change_sd"] == pytest.approx(pd.Series(changes).std())
    assert p["mde_80"] == pytest.approx((2.2622 + 0.8834) * p["change_sd"] / 10**0.5, abs=1e-3)
