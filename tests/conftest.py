"""Shared fixtures: a tiny SafeHelp world on disk with a tiny model, built once per test session."""

import os
from pathlib import Path

import pytest

# fp32 everywhere unless a test asks otherwise: the tests compare numbers bit for bit, and a
# machine with native bf16 would otherwise train in bf16 (mixed_precision "auto", bfpo.precision)
os.environ["BFPO_AUTO_PRECISION"] = "no"

from bfpo import data, models, safe_rlhf
from bfpo import toyworld as tw


@pytest.fixture(scope="session")
def pairs():
    """200 SafeHelp preference pairs (world seed 1), for the label views and the score models' pairs."""
    return tw.preference_pairs(200, tw.WorldConfig(seed=1))


def combos(ds):
    """(chosen_safe, rejected_safe) of each pair."""
    return [(r["chosen_safe"], r["rejected_safe"]) for r in ds]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Folders: sft, pairs, buffer (saved datasets) and init (a ~60K-parameter Llama + tokenizer)."""
    root = tmp_path_factory.mktemp("tiny_world")
    world = tw.WorldConfig(seed=0)
    sft, pairs, buffer = tw.sft_data(400, world), tw.preference_pairs(240, world), tw.buffer_pairs(80)
    for name, ds in (("sft", sft), ("pairs", pairs), ("buffer", buffer)):
        data.save(ds, root / name)
    texts = [models.format_prompt(p) + " " + r for p, r in zip(sft["prompt"], sft["response"], strict=True)]
    tokenizer = models.train_tokenizer(texts + list(pairs["chosen"]) + list(pairs["rejected"]), vocab_size=400)
    model = models.tiny_llama(tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    models.save(model, tokenizer, root / "init")
    return root


def _assert_tensorboard_matches(run, metrics, step_key):
    """The TensorBoard event files under ``run/trackers`` hold every metric of every record, once a step."""
    from bfpo import tracking

    logged = tracking.read_tensorboard(Path(run) / "trackers")
    keys = {k for m in metrics for k, v in m.items() if isinstance(v, int | float) and k != step_key}
    assert keys <= set(logged), keys - set(logged)
    for key in keys:
        expected = [(m[step_key], m[key]) for m in metrics if key in m]
        assert [s for s, _ in logged[key]] == [s for s, _ in expected], key
        assert [v for _, v in logged[key]] == pytest.approx([v for _, v in expected], rel=1e-6, abs=1e-6), key


@pytest.fixture
def assert_tensorboard_matches():
    """``f(run folder, metrics records, step key)``: TensorBoard's events equal ``metrics.jsonl``."""
    return _assert_tensorboard_matches


@pytest.fixture
def train_variants(tiny_world, tmp_path):
    """``f({name: TrainConfig keys}, **shared keys) -> {name: (losses per step, summary)}``: short
    BFPO runs on the tiny world that differ only by each variant's keys."""
    from bfpo import train

    def run(variants: dict, **shared):
        base = (
            dict(
                model=str(tiny_world / "init"),
                train_data=str(tiny_world / "pairs"),
                buffer_data=str(tiny_world / "buffer"),
                buffer_ratio=0.25,
                beta=0.5,
                learning_rate=3e-3,
                max_steps=4,
                max_length=64,
                progress=False,
                num_threads=1,
            )
            | shared
        )
        out = {}
        for name, keys in variants.items():
            summary = train.train(train.TrainConfig(**base, **keys, output_dir=str(tmp_path / name)))
            out[name] = ([m["loss"] for m in train.read_metrics(tmp_path / name)], summary)
        return out

    return run


@pytest.fixture(scope="session")
def score_models(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("safe_rlhf")
    held_out = tw.preference_pairs(200, tw.WorldConfig(seed=5), held_out=True)
    data.save(held_out, root / "held_out")
    out = {}
    for kind in ("reward", "cost"):
        cfg = safe_rlhf.ScoreConfig(
            model=str(tiny_world / "init"),
            output_dir=str(root / kind),
            train_data=str(tiny_world / "pairs"),
            eval_data=str(root / "held_out"),
            kind=kind,
            learning_rate=3e-3,
            max_steps=120,
            max_length=64,
            progress=False,
        )
        out[kind] = safe_rlhf.train_score_model(cfg)
    return root, out


@pytest.fixture
def ppo_config(tiny_world, score_models):
    """``ppo_config(output_dir, **overrides)``: a short PPO-Lagrangian run on the tiny world's score models."""
    from bfpo import ppo

    root, _ = score_models

    def make(out, **overrides):
        values = dict(
            actor=str(tiny_world / "init"),
            reward_model=str(root / "reward" / "model"),
            cost_model=str(root / "cost" / "model"),
            output_dir=str(out),
            prompts=str(tiny_world / "pairs"),
            iterations=4,
            rollout_batch_size=8,
            max_new_tokens=10,
            start_cost_prompts=16,
            actor_lr=1e-3,
            critic_lr=1e-3,
            progress=False,
        )
        return ppo.PPOConfig(**(values | overrides))

    return make
