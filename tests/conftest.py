"""Shared fixtures: a tiny SafeHelp world on disk with a tiny model, built once per test session."""

import pytest

from bfpo import data, models
from bfpo import toyworld as tw


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
