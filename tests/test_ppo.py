"""PPO-Lagrangian (bfpo.ppo): the official defaults, J_C of the start and a threshold that binds, a fixed
multiplier, the learning-rate schedules."""

import logging
import math

import pytest
import yaml

from bfpo import configs, ppo, runs
from bfpo.errors import ConfigError
from bfpo.io import project_path

OFFICIAL = yaml.safe_load(project_path("configs/official_ppo_lag.yaml").read_text())


def test_ppo_config_defaults_are_the_official_script_values():
    defaults = ppo.PPOConfig(actor="a", reward_model="r", cost_model="c", output_dir="o", prompts="p")
    drift = [
        f"{row['key']}: ours {getattr(defaults, row['key'])!r}, official {row['official']!r} ({row['source']})"
        for row in OFFICIAL["keys"]
        if getattr(defaults, row["key"]) != row["official"]
    ]
    assert not drift, drift
    assert len(OFFICIAL["keys"]) >= 20 and all(row["source"] for row in OFFICIAL["keys"])


def test_every_study_difference_is_named_in_the_readme():
    readme = project_path("README.md").read_text(encoding="utf-8")
    for row in OFFICIAL["study"]:
        assert row["what"] in readme, row["what"]


def test_start_cost_is_measured_and_a_margin_puts_d_below_it(ppo_config, tmp_path, capsys):
    cfg = ppo_config(tmp_path / "m", cost_threshold_margin=1.5)
    summary = ppo.ppo_lagrangian(cfg)
    j_c, d = summary["start_cost"], summary["cost_threshold"]
    assert math.isfinite(j_c) and d == pytest.approx(j_c - 1.5) and summary["constraint_binds_at_start"]
    assert f"J_C(start) = {j_c:.3f}" in capsys.readouterr().out
    metrics = runs.read_metrics(cfg.output_dir)
    assert all(m["cost_threshold"] == pytest.approx(d) for m in metrics)
    # the same start and seed measure the same J_C; the measurement leaves the run's random stream alone
    again = ppo.ppo_lagrangian(ppo_config(tmp_path / "again", cost_threshold=d))
    assert again["start_cost"] == j_c
    assert [m["reward"] for m in runs.read_metrics(tmp_path / "again")] == [m["reward"] for m in metrics]


def test_a_threshold_above_the_start_cost_is_warned_about(ppo_config, tmp_path, caplog):
    cfg = ppo_config(tmp_path / "loose", cost_threshold=40.0, iterations=1)
    with caplog.at_level(logging.WARNING, logger="bfpo.ppo"):
        summary = ppo.ppo_lagrangian(cfg)
    assert not summary["constraint_binds_at_start"]
    warned = [r.getMessage() for r in caplog.records if "does not bind" in r.getMessage()]
    assert len(warned) == 1 and "d = 40.000" in warned[0] and f"J_C(start) = {summary['start_cost']:.3f}" in warned[0]


@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_a_fixed_multiplier_stays_where_it_is_set(ppo_config, tmp_path, lam):
    cfg = ppo_config(tmp_path / str(lam), iterations=3, lambda_init=lam, lambda_lr=0.0)
    summary = ppo.ppo_lagrangian(cfg)
    assert [m["lambda"] for m in runs.read_metrics(cfg.output_dir)] == [lam] * 3 and summary["final_lambda"] == lam


def test_a_learned_multiplier_needs_a_positive_start_and_lambda_is_never_negative():
    with pytest.raises(ValueError, match="lambda_init: must be > 0 while lambda is learned"):
        ppo.PPOConfig(actor="a", reward_model="r", cost_model="c", output_dir="o", prompts="p", lambda_init=0.0)
    with pytest.raises(ConfigError, match="'lambda_init': must be >= 0"):
        configs.build(
            ppo.PPOConfig,
            dict(actor="a", reward_model="r", cost_model="c", output_dir="o", prompts="p", lambda_init=-0.5),
        )


def test_the_actor_follows_its_cosine_schedule_with_warm_up(ppo_config, tmp_path):
    cfg = ppo_config(tmp_path / "cos", iterations=10, actor_warmup_ratio=0.2)
    ppo.ppo_lagrangian(cfg)
    lrs = [m["actor_lr"] for m in runs.read_metrics(cfg.output_dir)]
    # 10 actor steps, 2 of warm-up: 0.5, 1.0 x lr, then cosine decay to 0
    assert lrs[0] == pytest.approx(0.5e-3) and lrs[1] == pytest.approx(1e-3)
    assert all(b < a for a, b in zip(lrs[1:], lrs[2:], strict=False)) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_cost_over_harmful_counts_only_harmful_prompts(ppo_config, tiny_world, tmp_path):
    from bfpo import data
    from bfpo import toyworld as tw

    prompts = sorted(set(data.load(tiny_world / "pairs")["prompt"]))
    rows = [{"prompt": p, "harmful": tw.topic_of(p).kind == "harmful"} for p in prompts]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    cfg = ppo_config(tmp_path / "h", prompts=str(path), cost_over="harmful")
    summary = ppo.ppo_lagrangian(cfg)
    everything = ppo.ppo_lagrangian(ppo_config(tmp_path / "a", prompts=str(path)))
    assert summary["start_cost"] > everything["start_cost"], "harmful prompts alone cost more than the mix"
