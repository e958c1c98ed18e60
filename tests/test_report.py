"""The results summary: quoted numbers read with their source, claims beside measurements."""

import pandas as pd
import pytest

from bfpo import report


def test_quoted_7b_points_come_from_the_readme_figure():
    points = report.quoted_7b_points().set_index("method")
    assert len(points) == 7
    assert (points.loc["BFPO", "harmlessness"], points.loc["Zephyr-7b-beta", "harmlessness"]) == (0.74, 0.59)
    assert points["source"].str.contains("README figure").all()


def frame(gains: dict[str, tuple[float, float, float]], flops: dict[str, float]) -> pd.DataFrame:
    rows = [
        {
            "method": "sft",
            "seed": 0,
            "wording": "held-out",
            "helpfulness": 0.5,
            "harmlessness": 0.4,
            "over_refusal": 0.3,
            "flops": 0.0,
        }
    ]
    for method, (dh, dharm, dref) in gains.items():
        for seed, noise in enumerate((-0.01, 0.0, 0.01)):
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "wording": "held-out",
                    "helpfulness": 0.5 + dh + noise,
                    "harmlessness": 0.4 + dharm + noise,
                    "over_refusal": 0.3 + dref,
                    "flops": flops[method],
                }
            )
    return pd.DataFrame(rows)


def test_claims_and_verdicts(tmp_path):
    df = frame(
        {
            "bfpo": (0.0, 0.2, -0.3),
            "bfpo_red_team": (0.0, -0.1, 0.0),
            "safe_rlhf": (0.1, 0.1, 0.0),
            "dpo_helpful": (0.2, -0.4, -0.3),
            "dpo_safety": (-0.4, 0.5, 0.6),
        },
        {"bfpo": 5.0, "bfpo_red_team": 5.0, "safe_rlhf": 100.0, "dpo_helpful": 5.0, "dpo_safety": 5.0},
    )
    rows = {r["claim"]: r for r in report.claims(df)}
    public = rows["harmlessness gain with public data"]
    assert public["quoted"] == "+15 %" and public["measured"].startswith("+0.200 ± 0.010 (n=3)")
    assert public["verdict"].startswith("agrees")
    assert rows["harmlessness gain with red-teaming data"]["verdict"] == "does not agree"
    assert rows["helpfulness kept"]["verdict"] == "agrees"
    assert rows["compute of BFPO relative to Safe RLHF"]["measured"] == "5.0%"
    assert rows["compute of BFPO relative to Safe RLHF"]["verdict"] == "agrees"
    assert rows["DPO on safety labels over-refuses (Figure 1)"]["verdict"] == "agrees"
    path = report.write_summary(list(rows.values()), tmp_path / "R.md", "# Summary")
    assert path.read_text().count("\n| ") == len(rows) + 1


def test_missing_reported_file(monkeypatch, tmp_path):
    monkeypatch.setenv("BFPO_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="BFPO_DATA_DIR") as e:
        report.reported_results_path()
    assert "paper/bfpo_reported_results.csv" in str(e.value)
