"""mixed_precision: auto measures (a probe), bf16 tracks fp32, fp32 stays bit for bit."""

import pytest

from bfpo import precision

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


def test_bf16_losses_track_fp32(train_variants):
    runs = train_variants({"no": {"mixed_precision": "no"}, "bf16": {"mixed_precision": "bf16"}}, max_steps=8)
    for mp, (_, summary) in runs.items():
        assert summary["mixed_precision"] == mp
    fp32, bf16 = runs["no"][0], runs["bf16"][0]
    assert bf16 != fp32, "bf16 computes differently"
    assert bf16 == pytest.approx(fp32, rel=BF16_TOLERANCE, abs=BF16_TOLERANCE)


def test_bf16_on_a_cpu_trains_with_eager_attention_fp32_keeps_the_loaded_kernel(tiny_world):
    from bfpo import models

    for mixed_precision, expected in (("no", "sdpa"), ("bf16", "eager")):
        model = models.load_model(tiny_world / "init")
        assert precision.fit_attention(model, mixed_precision, "cpu") == expected
        assert model.config._attn_implementation == expected
    model = models.load_model(tiny_world / "init")
    assert precision.fit_attention(model, "bf16", "cuda") == "sdpa", "GPUs keep the fused kernel"
