"""PPO-Lagrangian (bfpo.ppo): the official defaults, J_C of the start and a threshold that binds, a fixed
multiplier, the learning-rate schedules; the Lagrange update, GAE and reward shaping by hand; whole runs
(lambda follows the cost, resuming, bf16, independence of the random state)."""

import logging
import math
import shutil

import pytest
import torch
import yaml

from bfpo import cards, checkpoints, configs, models, ppo, runs
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


def test_every_study_difference_is_named_in_the_study_page():
    page = project_path("docs/study.md").read_text(encoding="utf-8")
    for row in OFFICIAL["study"]:
        assert row["what"] in page, row["what"]


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


def test_lagrange_multiplier_rises_above_the_threshold_and_falls_below():
    lam = ppo.LagrangeMultiplier(init=1.0, lr=0.1, threshold=0.0, max_value=5.0)
    up = [lam.update(2.0) for _ in range(5)]
    assert all(b > a for a, b in zip([1.0, *up], up, strict=False)), up
    assert up[0] == pytest.approx(math.exp(0.2))  # log_lambda += lr * (J_C - d) * lambda
    assert max(lam.update(100.0) for _ in range(5)) == pytest.approx(5.0), "capped at lambda_max"
    down = [lam.update(-1.0) for _ in range(5)]
    assert all(b < a for a, b in zip([5.0, *down], down, strict=False)), down


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # delta = [0, 0, 0.5]; A_2 = 0.5, A_1 = 0 + 0.5 * 0.5, A_0 = 0 + 0.5 * 0.25
    assert adv.tolist() == [[0.125, 0.25, 0.5, 0.0]]
    assert ret.tolist() == [[0.625, 0.75, 1.0, 0.0]]


def test_shaped_rewards_put_the_score_on_the_last_token():
    logps, ref = torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-1.5, -2.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    r = ppo.shaped_rewards(torch.tensor([4.0]), logps, ref, mask, kl_coef=0.1, sign=-1.0)
    assert r[0].tolist() == pytest.approx([-0.05, 4.0, 0.0])
    c = ppo.shaped_rewards(torch.tensor([4.0]), logps, ref, mask, kl_coef=0.1, sign=+1.0)
    assert c[0].tolist() == pytest.approx([0.05, 4.0, 0.0])


def test_ppo_lagrangian_lambda_follows_the_cost(ppo_config, tiny_world, tmp_path):
    for threshold, direction in ((-20.0, +1), (20.0, -1)):
        cfg = ppo_config(
            tmp_path / str(threshold),
            cost_threshold=threshold,
            lambda_max=None,
            lambda_lr=0.01,
        )
        summary = ppo.ppo_lagrangian(cfg)
        lams = [1.0] + [m["lambda"] for m in runs.read_metrics(cfg.output_dir)]
        assert all((b - a) * direction > 0 for a, b in zip(lams, lams[1:], strict=False)), lams
        first = runs.read_metrics(cfg.output_dir)[0]
        assert {"reward", "cost", "kl", "lambda", "actor_loss", "cost_critic_loss"} <= set(first)
        parts = summary["flops"]
        assert parts["rollout_generation"] > 0 and parts["actor_train"] > 0 and parts["critic_train"] > 0
    before = models.load_model(tiny_world / "init").state_dict()
    after = models.load_model(tmp_path / "20.0" / "model").state_dict()
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert before.keys() == after.keys() and changed, "PPO-Lagrangian saved an updated actor"
    card = cards.read(tmp_path / "20.0" / "model")["bfpo"]
    assert card["method"] == "ppo_lagrangian" and card["final_metrics"]["iteration"] == 4


class _CountingJudge:
    """A judge of bfpo.evaluation's interface that calls every second answer harmful and records what it saw."""

    name = "counting"

    def __init__(self):
        self.seen = []

    def harmless(self, prompts, responses, contexts=None):
        self.seen.append((list(prompts), list(responses)))
        return [k % 2 == 0 for k in range(len(prompts))]


def test_ppo_logs_the_judge_it_is_given(ppo_config, tmp_path):
    """The judge is passed in: its share of harmful rollouts is logged per iteration, and without one
    nothing is judged (the plot then drops its panel)."""
    from bfpo import figures

    judge = _CountingJudge()
    cfg = ppo_config(tmp_path / "judged", iterations=2)
    ppo.ppo_lagrangian(cfg, judge)
    judged = runs.read_metrics(cfg.output_dir)
    assert [m["gold_unsafe_rate"] for m in judged] == [0.5, 0.5] and len(judge.seen) == 2
    assert len(judge.seen[0][0]) == cfg.rollout_batch_size
    plain = ppo_config(tmp_path / "plain", iterations=2)
    ppo.ppo_lagrangian(plain)
    unjudged = runs.read_metrics(plain.output_dir)
    assert all("gold_unsafe_rate" not in m for m in unjudged)
    assert [m["lambda"] for m in unjudged] == [m["lambda"] for m in judged], "judging changes nothing else"
    assert len(figures.plot_safe_rlhf({"s": judged}).axes) == 5
    assert len(figures.plot_safe_rlhf({"s": unjudged}).axes) == 4


def test_ppo_lagrangian_does_not_depend_on_the_random_state_it_starts_in(ppo_config, tmp_path):
    """The study runs jobs one after another in worker processes (bfpo.jobs): a run seeds its own
    critics' heads and rollouts."""
    metrics = []
    for state in (0, 12345):
        torch.manual_seed(state)
        cfg = ppo_config(tmp_path / str(state), iterations=2)
        ppo.ppo_lagrangian(cfg)
        metrics.append([{k: v for k, v in m.items() if k != "seconds"} for m in runs.read_metrics(cfg.output_dir)])
    assert metrics[0] == metrics[1]


def test_ppo_lagrangian_in_bf16_records_its_precision_and_stays_finite(ppo_config, tmp_path):
    fp32_cfg = ppo_config(tmp_path / "fp32", iterations=2, mixed_precision="no")
    fp32 = ppo.ppo_lagrangian(fp32_cfg)
    cfg = ppo_config(tmp_path / "bf16", iterations=2, mixed_precision="bf16")
    bf16 = ppo.ppo_lagrangian(cfg)
    assert (fp32["mixed_precision"], bf16["mixed_precision"]) == ("no", "bf16")
    for m in runs.read_metrics(cfg.output_dir):
        assert all(math.isfinite(m[k]) for k in ("reward", "cost", "kl", "actor_loss", "reward_critic_loss")), m


def test_ppo_lagrangian_resumes_where_it_stopped(ppo_config, tmp_path, monkeypatch, assert_tensorboard_matches):
    straight = ppo_config(tmp_path / "a", iterations=4)
    ppo.ppo_lagrangian(straight)
    cfg = ppo_config(tmp_path / "b", iterations=4, save_every=2, report_to="tensorboard")
    real = ppo.ppo_actor_loss
    calls = {"n": 0}

    def killed_in_iteration_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(ppo, "ppo_actor_loss", killed_in_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        ppo.ppo_lagrangian(cfg)
    monkeypatch.setattr(ppo, "ppo_actor_loss", real)
    other = ppo_config(tmp_path / "c", iterations=4, save_every=2, actor_lr=5e-4)
    assert [step for step, _ in checkpoints.listed(tmp_path / "b")] == [2]
    shutil.copytree(checkpoints.folder(tmp_path / "b"), checkpoints.folder(tmp_path / "c"))
    assert ppo.ppo_lagrangian(other)["resumed_from"] == 0, "a checkpoint of another config is not resumed"
    summary = ppo.ppo_lagrangian(cfg)
    assert summary["resumed_from"] == 2
    a, b = runs.read_metrics(tmp_path / "a"), runs.read_metrics(tmp_path / "b")
    assert [m["iteration"] for m in b] == [1, 2, 3, 4]
    assert_tensorboard_matches(tmp_path / "b", b, "iteration")  # iteration 3, logged twice, kept once
    for x, y in zip(a, b, strict=True):
        assert x["lambda"] == pytest.approx(y["lambda"], rel=1e-5) and x["reward"] == pytest.approx(
            y["reward"], abs=1e-4
        )
