"""Compute accounting (bfpo.compute) and the compute curves' snapshots (bfpo.curves): FLOP formulas, the
trainer's count, PPO snapshots carrying the FLOPs spent so far."""

import json

import pytest

from bfpo import checkpoints, compute, curves, ppo, train


def test_flop_formulas_and_trainer_accounting(tiny_world, tmp_path):
    assert compute.train_flops(100, 10) == 6 * 100 * 10
    assert compute.train_flops(100, 10, n_trainable=5) == (400 + 10) * 10
    assert compute.generation_flops(100, 3, 7) == 2 * 100 * 10
    cfg = train.TrainConfig(
        model=str(tiny_world / "init"),
        output_dir=str(tmp_path / "run"),
        train_data=str(tiny_world / "pairs"),
        max_steps=3,
        per_device_batch_size=4,
        max_length=64,
        trainable=["down_proj"],
        progress=False,
    )
    s = train.train(cfg)
    n, n_tr = s["total_parameters"], s["trainable_parameters"]
    assert s["flops"]["train"] == (4 * n + 2 * n_tr) * s["tokens"]["train"]
    assert s["flops"]["reference"] == 2 * n * s["tokens"]["reference"]
    assert s["tokens"]["train"] == sum(m["tokens"] for m in train.read_metrics(tmp_path / "run"))


def test_ppo_snapshots_carry_the_flops_spent_so_far(ppo_config, score_models, tmp_path):
    cfg = ppo_config(tmp_path / "ppo", iterations=4, snapshot_every=2)
    summary = ppo.ppo_lagrangian(cfg)
    snaps = checkpoints.snapshots(cfg.output_dir)
    assert [info["step"] for info, _ in snaps] == [2]  # the last iteration is the final model itself
    info, path = snaps[0]
    assert 0 < info["flops"]["total"] < summary["flops"]["total"]
    assert info["flops"]["rollout_generation"] == pytest.approx(summary["flops"]["rollout_generation"] / 2, rel=0.5)
    assert (path / "config.json").is_file() and "lambda" in info
    # the compute curve of a PPO run counts the reward and cost models before the first rollout
    upfront = sum(
        json.loads((score_models[0] / kind / "score_summary.json").read_text())["flops"]["total"]
        for kind in ("reward", "cost")
    )
    points = curves.curve_points(cfg.output_dir)
    assert [p["step"] for p in points] == [2, 4]
    assert points[0]["flops"] == pytest.approx(info["flops"]["total"] + upfront)
    assert points[-1]["flops"] == pytest.approx(summary["flops"]["total"] + upfront) == curves.run_flops(cfg.output_dir)
