"""A study's jobs run in long-lived worker processes: the same results as a fresh process each."""

import json
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification

from bfpo import jobs, safe_rlhf, study, train


def _score_config(tiny_world, out):
    return safe_rlhf.ScoreConfig(
        model=str(tiny_world / "init"),
        output_dir=str(out),
        train_data=str(tiny_world / "pairs"),
        kind="cost",
        max_steps=2,
        per_device_batch_size=4,
        max_length=64,
        progress=False,
        num_threads=1,
    )


def test_a_score_model_does_not_depend_on_the_random_state_it_starts_in(tiny_world, tmp_path):
    """A worker runs jobs one after another, so a run must seed its own new weights (the score head)."""
    weights = []
    for i, state in enumerate((0, 12345)):
        torch.manual_seed(state)
        cfg = _score_config(tiny_world, tmp_path / f"run{i}")
        safe_rlhf.train_score_model(cfg)
        weights.append(AutoModelForSequenceClassification.from_pretrained(f"{cfg.output_dir}/model"))
    for (name, a), (_, b) in zip(weights[0].state_dict().items(), weights[1].state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_jobs_run_in_workers_and_a_failure_shows_the_command_and_its_error(tiny_world, tmp_path):
    good = study.train_job(
        "bfpo ok",
        train.TrainConfig(
            model=str(tiny_world / "init"),
            output_dir=str(tmp_path / "ok"),
            train_data=str(tiny_world / "pairs"),
            max_steps=2,
            per_device_batch_size=4,
            max_length=64,
        ),
    )
    assert list(jobs.run([good], workers=1)) == ["bfpo ok"]
    summary = json.loads((tmp_path / "ok" / "train_summary.json").read_text())
    assert summary["steps"] == 2
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text(yaml.safe_dump({"model": str(tiny_world / "init"), "learning_rat": 1}))
    bad = ("bfpo bad", [sys.executable, "-m", "bfpo.train", "--config", str(bad_config)])
    with pytest.raises(RuntimeError) as err:
        list(jobs.run([bad], workers=1))
    message = str(err.value)
    assert message.startswith("bfpo bad failed (exit 2): ") and str(bad_config) in message
    assert "unknown key (did you mean 'learning_rate'?)" in message, "the job's own one-line error is shown"


def test_a_job_is_a_module_command(tmp_path):
    with pytest.raises(ValueError, match="python -m module"):
        jobs.run_command(["python", "script.py"], str(tmp_path / "log"))
