"""mixed_precision: auto measures (a probe), bf16 tracks fp32, fp32 stays bit for bit."""

import pytest

from bfpo import precision, train

BF16_TOLERANCE = 0.05
"""bf16 autocast losses stay within 5 % (relative; measured: under 2 %) of fp32's over 8 steps: the stated tolerance."""


def test_auto_follows_the_probe(monkeypatch):
    monkeypatch.delenv(precision.AUTO_ENV, raising=False)
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    for speedup, chosen in ((3.9, "bf16"), (1.6, "bf16"), (1.2, "no"), (0.1, "no")):
        monkeypatch.setattr(precision, "probe", lambda threads, s=speedup: {"bf16_speedup": s})
        assert precision.resolve("auto", 2) == chosen
    assert precision.resolve("no") == "no" and precision.resolve("bf16") == "bf16"
    monkeypatch.setenv(precision.AUTO_ENV, "no")
    assert precision.resolve("auto") == "no", "the environment decides instead of the probe"


def test_probe_measures_both_precisions():
    found = precision.probe(1, n=128, repeats=2)
    assert found["float32"] > 0 and found["bfloat16"] > 0
    assert found["bf16_speedup"] == pytest.approx(found["bfloat16"] / found["float32"])


def test_bf16_losses_track_fp32(tiny_world, tmp_path):
    base = dict(
        model=str(tiny_world / "init"),
        train_data=str(tiny_world / "pairs"),
        buffer_data=str(tiny_world / "buffer"),
        buffer_ratio=0.25,
        beta=0.5,
        learning_rate=3e-3,
        max_steps=8,
        max_length=64,
        progress=False,
        num_threads=1,
    )
    losses = {}
    for mp in ("no", "bf16"):
        out = tmp_path / mp
        summary = train.train(train.TrainConfig(**base, output_dir=str(out), mixed_precision=mp))
        assert summary["mixed_precision"] == mp
        losses[mp] = [m["loss"] for m in train.read_metrics(out)]
    assert losses["bf16"] != losses["no"], "bf16 computes differently"
    assert losses["bf16"] == pytest.approx(losses["no"], rel=BF16_TOLERANCE, abs=BF16_TOLERANCE)
