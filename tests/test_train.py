"""The trainer: config errors, log-prob masking, schedules, BFPO margins, selective tuning, resume, 2 processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bfpo import checkpoints, data, losses, models, objectives, train


def config(tiny_world, tmp_path, **overrides):
    values = dict(
        model=str(tiny_world / "init"),
        output_dir=str(tmp_path / "run"),
        train_data=str(tiny_world / "pairs"),
        buffer_data=str(tiny_world / "buffer"),
        buffer_ratio=0.25,
        loss="bfpo",
        beta=0.5,
        learning_rate=3e-3,
        per_device_batch_size=8,
        max_steps=12,
        max_length=64,
        progress=False,
        num_threads=1,
    )
    values.update(overrides)
    return train.TrainConfig(**values)


def weights(path):
    return load_file(str(path / "model.safetensors"))


# --- config -------------------------------------------------------------------------------------


def test_config_errors(tmp_path):
    base = dict(model="m", output_dir="o", train_data="d")
    with pytest.raises(ValueError, match="unknown loss 'bfpoo'; known losses"):
        train.TrainConfig(**base, loss="bfpoo")
    with pytest.raises(ValueError, match="'reward_model' does not fit mode 'preference'"):
        train.TrainConfig(**base, loss="reward_model")
    with pytest.raises(ValueError, match="mode: expected"):
        train.TrainConfig(**base, mode="rl")
    path = tmp_path / "c.yaml"
    path.write_text("model: m\noutput_dir: o\ntrain_data: d\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"c.yaml: key 'learning_rat': unknown key \(did you mean 'learning_rate'\?\)"):
        train.TrainConfig.from_yaml(path)
    path.write_text("model: m\n")
    with pytest.raises(ValueError, match=r"key 'output_dir': missing \(required\)"):
        train.TrainConfig.from_yaml(path)
    assert train.TrainConfig.from_yaml(path, {"output_dir": "o", "train_data": "d", "beta": 0.01}).beta == 0.01


def test_unknown_parameter_group(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="trainable: pattern 'down_projj' matches no parameter"):
        train.train(config(tiny_world, tmp_path, trainable=["down_projj"]))


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "bfpo.train", "--help"], capture_output=True, text=True, check=True)
    assert "--config" in out.stdout and "accelerate launch" in out.stdout and "buffer_ratio" in out.stdout


# --- log-probs and schedule ---------------------------------------------------------------------


def test_sequence_logps_count_response_tokens_only(tiny_world):
    model = models.load_model(tiny_world / "init")
    prompt, response = [1, 5, 6, 7], [8, 9, 2]
    ids, attn, mask = train.collate([(prompt, response), (prompt[:2], response[:1])], pad_id=0, device="cpu")
    logps, n = train.sequence_logps(model, ids, attn, mask)
    assert n.tolist() == [3, 1]
    with torch.no_grad():
        full = model(input_ids=torch.tensor([prompt + response])).logits.log_softmax(-1)[0]
    by_hand = sum(full[len(prompt) - 1 + k, t] for k, t in enumerate(response))
    assert torch.allclose(logps[0], by_hand, atol=1e-5)
    with torch.no_grad():  # the shorter row: its response starts before the other's (logits_to_keep spans both)
        short = model(input_ids=torch.tensor([prompt[:2] + response[:1]])).logits.log_softmax(-1)[0]
    assert torch.allclose(logps[1], short[1, response[0]], atol=1e-5)


def test_reference_pass_matches_item_by_item(tiny_world):
    """Length-sorted, batched reference log-probs land on the right items."""
    from accelerate import Accelerator

    tok, model = models.load_tokenizer(tiny_world / "init"), models.load_model(tiny_world / "init")
    cfg = config(tiny_world, Path("-"))
    items, _ = train.tokenize(train.load_examples(cfg.train_data, "preference", "t")[:37], tok, cfg, "preference")
    ref = train.reference_logps(model, items, 8, Accelerator(cpu=True), tok.pad_token_id)
    for i in (0, 5, 36):
        with torch.no_grad():
            one = train.sequence_logps(model, *train.collate(train.micro_batch_sequences([items[i]]), 0, "cpu"))[0]
        assert torch.allclose(ref[i], one, atol=1e-4), i


def test_schedule_is_fixed_by_seed_and_step():
    a = train.StepSchedule(n_main=50, n_buffer=20, global_batch=8, buffer_ratio=0.25, seed=3)
    b = train.StepSchedule(n_main=50, n_buffer=20, global_batch=8, buffer_ratio=0.25, seed=3)
    assert [a.ids(s) for s in range(20)] == [b.ids(s) for s in range(20)]
    ids = a.ids(4)
    assert len(ids) == 8 and sum(i >= 50 for i in ids) == 2
    first_epoch = [i for s in range(int(50 / 6)) for i in a.ids(s) if i < 50]
    assert len(first_epoch) == len(set(first_epoch)), "no pair repeats within an epoch"


def test_truncated_away_pairs_are_counted(tiny_world, tmp_path, caplog):
    cfg = config(tiny_world, tmp_path / "a", max_length=8, max_prompt_length=8, max_steps=1, buffer_data=None)
    with pytest.raises(ValueError, match="no training example left after truncation to max_length 8"):
        train.train(cfg)
    summary = train.train(
        config(tiny_world, tmp_path / "b", max_length=16, max_prompt_length=64, max_steps=1, buffer_data=None)
    )
    assert 0 < summary["skipped_truncated"] < 240 and summary["train_examples"] == 240 - summary["skipped_truncated"]
    assert f"skipped {summary['skipped_truncated']} training example(s)" in caplog.text
    cfg = config(tiny_world, tmp_path, max_length=20, max_prompt_length=12)
    items, dropped = train.tokenize(
        train.load_examples(cfg.train_data, "preference", "x"), models.load_tokenizer(cfg.model), cfg, "preference"
    )
    assert all(len(it["prompt"]) <= 12 for it in items)
    assert all(len(it["prompt"]) + len(r) <= 20 for it in items for r in it["responses"])


def test_non_finite_loss_is_an_error(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setitem(train.PAIR_LOSSES, "bfpo", lambda b, cfg: b.chosen_logps * float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite loss at step 0"):
        train.train(config(tiny_world, tmp_path))


# --- training -----------------------------------------------------------------------------------


def test_bfpo_moves_margins_as_the_theory_says(tiny_world, tmp_path):
    summary = train.train(config(tiny_world, tmp_path, max_steps=60, log_every=1, buffer_data=None))
    metrics = train.read_metrics(tmp_path / "run")
    assert len(metrics) == 60 and summary["steps"] == 60
    late = metrics[-20:]
    margin = {
        c: sum(m[f"margin/{c}"] for m in late if f"margin/{c}" in m) / sum(f"margin/{c}" in m for m in late)
        for c in ("safe>safe", "safe>unsafe", "unsafe>safe", "unsafe>unsafe")
    }
    # the target of each combination is g: +0.5, +1, -1, -0.5 (beta * h -> g)
    assert margin["safe>unsafe"] > margin["safe>safe"] > 0 > margin["unsafe>unsafe"] > margin["unsafe>safe"], margin
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    loaded = models.load_model(tmp_path / "run" / "model")  # loadable by from_pretrained
    assert sum(p.numel() for p in loaded.parameters()) == summary["total_parameters"]


def test_selective_tuning_changes_only_named_parameters(tiny_world, tmp_path):
    summary = train.train(config(tiny_world, tmp_path, trainable=["down_proj"], max_steps=3))
    before, after = weights(tiny_world / "init"), weights(tmp_path / "run" / "model")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("down_proj" in k for k in changed)
    assert changed == {k for k in before if "down_proj" in k}
    assert summary["trainable_parameters"] == sum(before[k].numel() for k in changed) < summary["total_parameters"]


def test_saved_model_has_a_model_card(tiny_world, tmp_path):
    """README.md with YAML metadata: base model, data with revisions, method, config, final metrics, command;
    the folder still loads unchanged, and every snapshot has a card too."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bfpo import cards

    cfg = config(tiny_world, tmp_path, max_steps=4, snapshot_every=2)
    summary = train.train(cfg)
    meta = cards.read(tmp_path / "run" / "model")
    assert meta["base_model"] == cfg.model and meta["library_name"] == "transformers"
    assert meta["datasets"] == [cfg.train_data, cfg.buffer_data]
    info = meta["bfpo"]
    assert info["method"] == "bfpo" and info["config"] == json.loads(json.dumps(cfg.to_dict()))
    assert info["final_metrics"] == pytest.approx(summary["final"])
    state = json.loads((tiny_world / "pairs" / "state.json").read_text())
    assert info["datasets"][0] == {"name": cfg.train_data, "revision": "fingerprint:" + state["_fingerprint"]}
    assert info["command"]
    text = (tmp_path / "run" / "model" / "README.md").read_text()
    assert text.startswith("---\n") and "BFPO, Bi-Factorial Preference Optimization" in text
    AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    init = models.load_model(tiny_world / "init")
    tok = models.load_tokenizer(tiny_world / "init")
    models.save(init, tok, tmp_path / "init", cards.init_card(init.config.to_dict()))
    meta = cards.read(tmp_path / "init")
    assert "base_model" not in meta and meta["bfpo"]["method"] == "init"
    assert meta["bfpo"]["config"]["hidden_size"] == init.config.hidden_size
    ((info_2, snap),) = checkpoints.snapshots(tmp_path / "run")
    assert cards.read(snap)["bfpo"]["final_metrics"]["step"] == info_2["step"] == 2


def test_sft_mode_lowers_the_nll(tiny_world, tmp_path):
    cfg = config(
        tiny_world,
        tmp_path,
        mode="sft",
        train_data=str(tiny_world / "sft"),
        buffer_data=None,
        learning_rate=1e-2,
        max_steps=30,
    )
    train.train(cfg)
    metrics = train.read_metrics(tmp_path / "run")
    assert sum(m["loss"] for m in metrics[-5:]) < 0.7 * sum(m["loss"] for m in metrics[:5])


def test_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends(
    tiny_world, tmp_path, monkeypatch, assert_tensorboard_matches
):
    straight = config(tiny_world, tmp_path / "a", max_steps=10)
    straight_summary = train.train(straight)
    resumed = config(tiny_world, tmp_path / "b", max_steps=10, save_every=4, report_to="tensorboard")
    original = objectives.step_metrics

    def killed_at_step_7(step, *args, **kwargs):
        if step == 7:
            raise KeyboardInterrupt("killed")
        return original(step, *args, **kwargs)

    monkeypatch.setattr(objectives, "step_metrics", killed_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train.train(resumed)
    assert [step for step, _ in checkpoints.listed(tmp_path / "b" / "run")] == [4]
    assert not (tmp_path / "b" / "run" / "model").exists()
    monkeypatch.setattr(objectives, "step_metrics", original)
    summary = train.train(resumed)
    assert summary["resumed_from"] == 4
    assert summary["tokens"] == straight_summary["tokens"] and summary["flops"] == straight_summary["flops"]
    a, b = weights(tmp_path / "a" / "run" / "model"), weights(tmp_path / "b" / "run" / "model")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    metrics = train.read_metrics(tmp_path / "b" / "run")
    assert [m["step"] for m in metrics] == list(range(1, 11)), "the metrics log holds each step once"
    assert_tensorboard_matches(tmp_path / "b" / "run", metrics, "step")  # steps 5-7, logged twice, kept once
    assert train.train(resumed) == summary, "a finished run is not trained again"


def test_trl_metric_names(tiny_world, tmp_path, assert_tensorboard_matches):
    """TRL's names, as its DPOTrainer logs them, and BFPO's per-combination margins beside them."""
    train.train(config(tiny_world, tmp_path, max_steps=3, report_to=["tensorboard"]))
    metrics = train.read_metrics(tmp_path / "run")
    for m in metrics:
        assert m["rewards/margins"] == pytest.approx(m["rewards/chosen"] - m["rewards/rejected"], abs=1e-6)
        assert m["rewards/chosen"] == pytest.approx(0.5 * m["chosen_logp_change"], abs=1e-6)  # beta 0.5
        assert 0.0 <= m["rewards/accuracies"] <= 1.0 and m["logps/chosen"] < 0 and m["logps/rejected"] < 0
        assert any(k.startswith("margin/") for k in m)
    assert_tensorboard_matches(tmp_path / "run", metrics, "step")


def test_unknown_or_missing_tracker_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    path = tmp_path / "c.yaml"
    path.write_text("model: m\noutput_dir: o\ntrain_data: d\nreport_to: tensorbord\n")
    with pytest.raises(ValueError, match=r"c.yaml: key 'report_to': unknown tracker 'tensorbord'; expected 'none'"):
        train.TrainConfig.from_yaml(path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    path.write_text("model: m\noutput_dir: o\ntrain_data: d\nreport_to: [tensorboard, wandb]\n")
    with pytest.raises(ValueError, match=r"key 'report_to': the tracker 'wandb' is not installed; pip install wandb"):
        train.TrainConfig.from_yaml(path)
    assert train.TrainConfig.from_yaml(path, {"report_to": "none"}).report_to == []


def test_a_changed_config_does_not_resume_the_old_checkpoint(tiny_world, tmp_path, monkeypatch):
    cfg = config(tiny_world, tmp_path, max_steps=6, save_every=2)
    original = objectives.step_metrics

    def killed_at_step_5(step, *args, **kwargs):
        if step == 5:
            raise KeyboardInterrupt("killed")
        return original(step, *args, **kwargs)

    monkeypatch.setattr(objectives, "step_metrics", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg)
    monkeypatch.setattr(objectives, "step_metrics", original)
    assert checkpoints.listed(tmp_path / "run")
    other = train.TrainConfig.from_dict(cfg.to_dict() | {"learning_rate": 1e-3})
    assert train.train(other)["resumed_from"] == 0, "a checkpoint of another config is not resumed"
    same_but_threads = train.TrainConfig.from_dict(other.to_dict() | {"num_threads": 2, "progress": True})
    assert train.completed(tmp_path / "run", same_but_threads) is not None, "threads and progress bars do not count"


def test_reference_logps_are_cached(tiny_world, tmp_path):
    cache = tmp_path / "cache"
    train.train(config(tiny_world, tmp_path / "a", max_steps=2, ref_cache_dir=str(cache)))
    files = list(cache.glob("ref_logps_*.pt"))
    assert len(files) == 1 and torch.load(files[0]).shape == (240 + 80, 2)
    train.train(config(tiny_world, tmp_path / "b", max_steps=2, ref_cache_dir=str(cache), max_train_examples=100))
    assert len(list(cache.glob("ref_logps_*.pt"))) == 2, "other data, other key"


@pytest.mark.slow
def test_one_and_two_processes_give_the_same_losses(tiny_world, tmp_path):
    """Two gloo processes (per-device batch 4) against one (batch 8): same global batches, same losses."""
    one = config(tiny_world, tmp_path / "one", max_steps=6, per_device_batch_size=8)
    train.train(one)
    two_dir = tmp_path / "two" / "run"
    two = train.TrainConfig.from_dict(one.to_dict() | {"output_dir": str(two_dir), "per_device_batch_size": 4})
    summary = train.launch(two, num_processes=2, port=29517)
    assert train.ranks_seen(two_dir) == [0, 1]
    summary = json.loads((two_dir / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_batch"] == 8
    m1, m2 = train.read_metrics(tmp_path / "one" / "run"), train.read_metrics(two_dir)
    assert [m["step"] for m in m1] == [m["step"] for m in m2]
    for a, b in zip(m1, m2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), (a, b)
        assert a["rewards/margins"] == pytest.approx(b["rewards/margins"], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_fsdp_on_two_processes_shards_and_matches_one_process(tiny_world, tmp_path):
    """FSDP2 on 2 gloo processes: accelerate falls back to DDP on CPU, the trainer says so and shards
    with fully_shard itself. Each rank holds about half of the parameters, and the losses and final
    weights equal the 1-process run's."""
    one = config(tiny_world, tmp_path / "one", max_steps=6, per_device_batch_size=8)
    train.train(one)
    two_dir = tmp_path / "two" / "run"
    two = train.TrainConfig.from_dict(one.to_dict() | {"output_dir": str(two_dir), "per_device_batch_size": 4})
    train.launch(two, num_processes=2, port=29519, fsdp=True)
    assert "sharding with torch.distributed.fsdp.fully_shard directly" in (two_dir / "launch.log").read_text()
    summary = json.loads((two_dir / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["sharding"] == "direct"
    total = summary["total_parameters"]
    held = [json.loads((two_dir / "ranks" / f"rank{r}.json").read_text())["parameters_held"] for r in (0, 1)]
    assert all(0.4 * total < h < 0.6 * total for h in held) and sum(held) >= total, (held, total)
    m1, m2 = train.read_metrics(tmp_path / "one" / "run"), train.read_metrics(two_dir)
    for a, b in zip(m1, m2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), (a, b)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4, abs=1e-5)
    w0, w1, w2 = weights(tiny_world / "init"), weights(tmp_path / "one" / "run" / "model"), weights(two_dir / "model")
    assert w1.keys() == w2.keys()
    # Adam turns float-level gradient differences into update-sized ones on near-zero gradients:
    # the two runs' weights differ by under 5 % of how far training moved them
    moved = max(float((w1[k] - w0[k]).abs().max()) for k in w1)
    apart = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert apart < 0.05 * moved, (apart, moved)


@pytest.mark.slow
def test_fsdp_checkpoint_restores_the_shards_and_the_optimiser(tmp_path):
    """A directly sharded model and its AdamW state saved through accelerate's save_state and loaded
    into another model continue exactly as the saved run did."""
    accelerate = Path(sys.executable).with_name("accelerate")
    script = Path(__file__).parent / "scripts" / "fsdp_checkpoint.py"
    cmd = [str(accelerate), "launch", "--use_fsdp", "--fsdp_version", "2", "--num_processes", "2"]
    cmd += ["--main_process_port", "29521", "--mixed_precision", "no", "--dynamo_backend", "no", "--num_machines", "1"]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([*cmd, str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        result = json.loads((tmp_path / f"result{rank}.json").read_text())
        assert result["resumed"] == pytest.approx(result["straight"], abs=1e-6), result
        assert result["held"] < 0.6 * result["total"]


@pytest.mark.parametrize("name", ["paper_bfpo", "paper_sft"])
def test_shipped_configs_load(name):
    from bfpo.io import project_path

    cfg = train.TrainConfig.from_yaml(project_path(f"configs/{name}.yaml"))
    if name == "paper_bfpo":
        assert (cfg.beta, cfg.alpha, cfg.b1, cfg.learning_rate, cfg.trainable) == (0.01, 0.5, 3.0, 5e-7, ["down_proj"])
        assert (cfg.per_device_batch_size, cfg.gradient_accumulation_steps, cfg.max_length) == (2, 4, 1024)


def test_schedule_adds_an_equal_buffer_batch_in_each_micro_batch():
    s = train.StepSchedule(n_main=50, n_buffer=30, global_batch=8, buffer_ratio=0.5, seed=1, mode="add", micro=2)
    ids = s.ids(0)
    assert len(ids) == 16 and s.steps_per_epoch() == 50 / 8
    for c in range(0, 16, 4):  # each micro-batch: 2 training ids, then 2 buffer ids
        assert all(i < 50 for i in ids[c : c + 2]) and all(i >= 50 for i in ids[c + 2 : c + 4])
    assert ids == train.StepSchedule(50, 30, 8, 0.5, 1, "add", 2).ids(0), "fixed by seed and step"


def test_buffer_mode_add_sums_the_two_mean_losses(tiny_world, tmp_path):
    """The official BFPO step: G training pairs plus G buffer pairs, loss mean(training) + mean(buffer).
    At step 1 the policy is the reference, so each pair's BFPO loss is (g / beta)^2 exactly, and a
    buffer pair (safe/safe) has g = 0.5."""
    cfg = config(tiny_world, tmp_path, buffer_mode="add", max_steps=1, per_device_batch_size=4)
    summary = train.train(cfg)
    assert summary["skipped_truncated"] == 0 and summary["buffer_examples"] == 80
    pairs = train.load_examples(cfg.train_data, "preference", "x")
    schedule = train.StepSchedule(len(pairs), 80, 4, cfg.buffer_ratio, cfg.seed, "add", 4)
    main = [pairs[i] for i in schedule.ids(0) if i < len(pairs)]
    safe = [torch.tensor([float(p[k]) for p in main]) for k in ("chosen_safe", "rejected_safe")]
    g = losses.bfpo_target(*safe)
    expected = float(((g / cfg.beta) ** 2).mean()) + (0.5 / cfg.beta) ** 2
    assert len(main) == 4 and summary["final"]["loss"] == pytest.approx(expected, rel=1e-4)


def test_zephyr_template_renders_as_the_official_data(tiny_world):
    """The official BFPO text: "<|system|>\\n</s>\\n<|user|>\\n{prompt}</s>\\n<|assistant|>\\n" + the response
    + EOS (an empty system turn first, no space before the response)."""
    tok = models.load_tokenizer(tiny_world / "init")
    models.set_chat_template(tok, "zephyr")
    text = models.format_prompt("How do I bake bread?", tok, system="")
    assert text == "<|system|>\n</s>\n<|user|>\nHow do I bake bread?</s>\n<|assistant|>\n"
    assert train.encode_response(tok, "Knead it.", 100) == tok("Knead it.", add_special_tokens=False).input_ids + [
        tok.eos_token_id
    ]
    assert models.format_prompt("Hi", tok) == "<|user|>\nHi</s>\n<|assistant|>\n", "no system turn unless asked"


def test_sft_on_all_tokens_and_packing(tiny_world, tmp_path):
    base = dict(model=str(tiny_world / "init"), output_dir=str(tmp_path / "o"), train_data=str(tiny_world / "sft"))
    tok = models.load_tokenizer(tiny_world / "init")
    examples = train.load_examples(base["train_data"], "sft", "x")[:20]
    response_only = train.TrainConfig(**base, mode="sft", max_length=256, max_prompt_length=200)
    all_tokens = train.TrainConfig(**base, mode="sft", max_length=256, max_prompt_length=200, sft_loss="all")
    packed = train.TrainConfig(**base, mode="sft", max_length=32, sft_loss="all", packing=True)
    a, _ = train.tokenize(examples, tok, response_only, "sft")
    b, _ = train.tokenize(examples, tok, all_tokens, "sft")
    for x, y in zip(a, b, strict=True):  # the same tokens; every one after the first is now a target
        assert x["prompt"] + x["responses"][0] == y["prompt"] + y["responses"][0] and len(y["prompt"]) == 1
    c, _ = train.tokenize(examples, tok, packed, "sft")
    stream = [t for y in b for t in y["prompt"] + y["responses"][0]]  # no example was cut at 256 tokens
    assert all(len(y["prompt"]) + len(y["responses"][0]) < 200 for y in b)
    assert all(len(it["prompt"]) + len(it["responses"][0]) == 32 for it in c) and len(c) == len(stream) // 32
    assert [t for it in c for t in it["prompt"] + it["responses"][0]] == stream[: 32 * len(c)], "in order, EOS kept"
    with pytest.raises(ValueError, match="packing"):
        train.TrainConfig(**base, mode="sft", packing=True)
    with pytest.raises(ValueError, match="sft_loss"):
        train.TrainConfig(**base, sft_loss="all")
    summary = train.train(
        train.TrainConfig.from_dict(
            packed.to_dict() | {"max_steps": 2, "per_device_batch_size": 4, "progress": False, "num_threads": 1}
        )
    )
    assert summary["train_examples"] == len(
        train.tokenize(train.load_examples(base["train_data"], "sft", "x"), tok, packed, "sft")[0]
    )


def test_sft_trains_on_every_turn_of_a_dialogue(tiny_world, tmp_path):
    """Multi-turn SFT as the official recipe: with the Zephyr template, BOS + the rendered dialogue (an
    empty system turn first) + EOS, every token after the first a target; without a template, each
    exchange as prompt + response. A response-only loss refuses a dialogue of several exchanges."""
    tok = models.load_tokenizer(tiny_world / "init")
    chat = [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "More?"},
        {"role": "assistant", "content": "Sure."},
    ]
    rows = [{"prompt": "Hi?", "response": "Hello.", "messages": chat, "line": 7}]
    base = dict(model=str(tiny_world / "init"), output_dir=str(tmp_path / "o"), train_data="d.jsonl", mode="sft")
    cfg = train.TrainConfig(**base, max_length=512, sft_loss="all", chat_template="zephyr", system_prompt="")
    plain, _ = train.tokenize(rows, tok, cfg, "sft")
    assert tok.decode(plain[0]["prompt"] + plain[0]["responses"][0]) == (
        "<s>user: Hi?\nassistant: Hello.</s>user: More?\nassistant: Sure.</s>"
    ), "no chat template: the exchanges one after another"
    models.set_chat_template(tok, "zephyr")
    zephyr, _ = train.tokenize(rows, tok, cfg, "sft")
    ids = zephyr[0]["prompt"] + zephyr[0]["responses"][0]
    assert len(zephyr[0]["prompt"]) == 1 and tok.decode(ids) == (
        "<s><|system|>\n</s>\n<|user|>\nHi?</s>\n<|assistant|>\nHello.</s>\n"
        "<|user|>\nMore?</s>\n<|assistant|>\nSure.</s>\n</s>"
    )
    short = train.tokenize(rows, tok, train.TrainConfig.from_dict(cfg.to_dict() | {"max_length": 10}), "sft")[0]
    assert len(short[0]["prompt"] + short[0]["responses"][0]) == 10, "cut to max_length unless packed"
    response_only = train.TrainConfig(**base)
    with pytest.raises(data.DataError, match=r"d.jsonl, line 7, field 'messages': a dialogue of 4 turns"):
        train.check_dialogues(rows, response_only)
    train.check_dialogues(rows, cfg)
    train.check_dialogues([rows[0] | {"messages": chat[:2]}], response_only)
