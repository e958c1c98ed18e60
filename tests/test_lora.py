"""LoRA (trainable: lora): only adapters train, the adapter-disabled model is the reference, save/load/merge."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from bfpo import errors, lora, models, sequences, train
from bfpo.errors import BadInput


def lora_config(tiny_world, out, **overrides):
    values = dict(
        model=str(tiny_world / "init"),
        output_dir=str(out),
        train_data=str(tiny_world / "pairs"),
        buffer_data=str(tiny_world / "buffer"),
        buffer_ratio=0.25,
        loss="bfpo",
        beta=0.5,
        learning_rate=1e-2,
        per_device_batch_size=8,
        max_steps=12,
        max_length=64,
        progress=False,
        num_threads=1,
        trainable="lora",
        lora_target_modules=["q_proj", "v_proj", "down_proj"],
    )
    return train.TrainConfig(**(values | overrides))


def _logps(model, items, pad_id):
    input_ids, attn, resp = sequences.collate(sequences.micro_batch_sequences(items), pad_id, "cpu")
    with torch.no_grad():
        return sequences.sequence_logps(model, input_ids, attn, resp)[0]


@pytest.fixture(scope="module")
def lora_run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "run"
    cfg = lora_config(tiny_world, out, max_steps=60, buffer_data=None)
    return cfg, train.train(cfg)


def test_lora_bfpo_trains_only_the_adapters(tiny_world, lora_run):
    """A LoRA BFPO run in the smoke world: few parameters train, the objective falls, and only the
    adapters change (the base weights in the saved adapter's model equal the start model's)."""
    cfg, summary = lora_run
    out = train.Path(cfg.output_dir)
    assert lora.is_adapter(out / "model") and not (out / "model" / "model.safetensors").exists()
    assert summary["trainable_parameters"] < 0.2 * summary["total_parameters"]
    adapter = load_file(str(out / "model" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items()), "B moved off zero"
    metrics = train.read_metrics(out)
    early, late = metrics[:10], metrics[-20:]
    assert sum(m["loss"] for m in late) / 20 < 0.7 * sum(m["loss"] for m in early) / 10
    margin = {c: [m[f"margin/{c}"] for m in late if f"margin/{c}" in m] for c in ("safe>unsafe", "unsafe>safe")}
    margin = {c: sum(v) / len(v) for c, v in margin.items()}
    assert margin["safe>unsafe"] > 0 > margin["unsafe>safe"], margin  # BFPO's targets: +1 and -1 (x beta h)
    from peft import PeftModel

    init = load_file(str(tiny_world / "init" / "model.safetensors"))
    peft_model = PeftModel.from_pretrained(models.load_model(tiny_world / "init"), str(out / "model"))
    base = {
        k.removeprefix("base_model.model.").replace("base_layer.", ""): v
        for k, v in peft_model.state_dict().items()
        if "lora_" not in k
    }
    assert set(init) <= set(base)
    assert all(torch.equal(init[k], base[k]) for k in init), "a base weight changed"


def test_adapter_disabled_model_is_the_start_model(tiny_world, lora_run):
    cfg, _ = lora_run
    tok = models.load_tokenizer(tiny_world / "init")
    items, _ = sequences.tokenize(
        sequences.load_examples(cfg.train_data, "preference", "t")[:6], tok, cfg, "preference"
    )
    from peft import PeftModel

    start = models.load_model(tiny_world / "init")
    adapted = PeftModel.from_pretrained(models.load_model(tiny_world / "init"), cfg.output_dir + "/model")
    with lora.disabled(adapted):
        off = _logps(adapted, items, tok.pad_token_id)
    assert torch.allclose(off, _logps(start, items, tok.pad_token_id), atol=1e-6)
    assert not torch.allclose(_logps(adapted, items, tok.pad_token_id), off, atol=1e-3), "the adapter does something"


def test_save_load_merge_round_trip(tiny_world, lora_run, tmp_path):
    cfg, _ = lora_run
    tok = models.load_tokenizer(tiny_world / "init")
    items, _ = sequences.tokenize(
        sequences.load_examples(cfg.train_data, "preference", "t")[:6], tok, cfg, "preference"
    )
    loaded = models.load_model(cfg.output_dir + "/model")  # an adapter folder loads merged
    merged_dir = lora.merge(cfg.output_dir + "/model", tmp_path / "merged")
    assert not lora.is_adapter(merged_dir) and (merged_dir / "README.md").is_file()
    plain = AutoModelForCausalLM.from_pretrained(merged_dir)  # no peft involved
    assert type(plain).__name__ == "LlamaForCausalLM"
    assert torch.allclose(_logps(plain, items, tok.pad_token_id), _logps(loaded, items, tok.pad_token_id), atol=1e-5)
    assert lora.main(["merge", cfg.output_dir + "/model", str(tmp_path / "cli")]) == 0
    assert lora.main(["merge", str(tiny_world / "init"), str(tmp_path / "x")]) == errors.EXIT_BAD_INPUT


def test_lora_target_that_matches_no_module_is_one_line(tiny_world, tmp_path):
    with pytest.raises(BadInput, match=r"lora_target_modules: 'qkv_proj' matches no module; module names end in \["):
        train.train(lora_config(tiny_world, tmp_path / "run", lora_target_modules=["qkv_proj"]))
    assert not (tmp_path / "run").exists(), "nothing written"
    with pytest.raises(ValueError, match="trainable: expected a list of parameter name patterns or 'lora'"):
        lora_config(tiny_world, tmp_path / "run", trainable="loar")


@pytest.mark.parametrize(
    "mode,loss",
    [
        ("sft", "bfpo"),
        ("preference", "dpo"),
        ("preference", "ipo"),
        ("pointwise", "ulma"),
        ("pointwise", "pointwise_dpo"),
    ],
)
def test_lora_works_for_sft_and_every_loss(tiny_world, tmp_path, mode, loss):
    from bfpo import baselines, data

    train_data = {"sft": tiny_world / "sft", "preference": tiny_world / "pairs"}.get(mode)
    if mode == "pointwise":
        train_data = data.save(baselines.pointwise_view(data.load(tiny_world / "pairs")), tmp_path / "points")
    cfg = lora_config(
        tiny_world, tmp_path / "run", mode=mode, loss=loss, train_data=str(train_data), buffer_data=None, max_steps=2
    )
    summary = train.train(cfg)
    assert lora.is_adapter(tmp_path / "run" / "model") and summary["trainable_parameters"] < summary["total_parameters"]
