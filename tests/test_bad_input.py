"""Every entry point a user types, given bad input or broken state: one clear line naming the file
and the record, field or key; exit 2 for bad input, 1 for a failure at run time; no traceback; and
no output of an earlier finished run changed or deleted. One row per case."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from bfpo import checkpoints, data, objectives, safe_rlhf, train
from bfpo import notebooks as runner
from bfpo.errors import run_cli
from bfpo.evaluation import cli as ev

GOOD_PAIR = {"prompt": "How do I bake bread?", "chosen": "Knead the dough.", "rejected": "No.", "source": "user"}


def pair(**overrides):
    return GOOD_PAIR | {"chosen_safe": True, "rejected_safe": True} | overrides


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished_run(tiny_world, tmp_path_factory):
    """A finished training run: every bad invocation below points its output_dir here."""
    out = tmp_path_factory.mktemp("finished") / "run"
    cfg = _cfg(tiny_world, out, max_steps=2, save_every=0, learning_rate=1e-4)
    train.train(cfg)
    return out, cfg


def snapshot(folder: Path) -> dict[str, str]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def write_config(tmp_path, finished_run, **changes) -> Path:
    """A train config aimed at the finished run's folder, with ``changes`` (None removes a key)."""
    _, cfg = finished_run
    values = cfg.to_dict() | {"learning_rate": 1e-3}  # another config: a valid one would start afresh
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def bad_pairs_file(tmp_path, record_13):
    records = [pair() for _ in range(12)] + [record_13] + [pair()]
    return str(write_jsonl(tmp_path / "pairs.jsonl", records))


# Each row: id, how to build the train config's changes (from tmp_path), the words the one line must hold.
TRAIN_ROWS = [
    (
        "label 'yes' on line 13",
        lambda t: {"train_data": bad_pairs_file(t, pair(chosen_safe="yes"))},
        ["pairs.jsonl", "line 13", "'chosen_safe'", "expected true/false or 0/1, got 'yes'"],
    ),
    (
        "label 2",
        lambda t: {"train_data": bad_pairs_file(t, pair(rejected_safe=2))},
        ["pairs.jsonl", "line 13", "'rejected_safe'", "got 2"],
    ),
    (
        "empty response text",
        lambda t: {"train_data": bad_pairs_file(t, pair(chosen="  "))},
        ["pairs.jsonl", "line 13", "'chosen'", "empty text"],
    ),
    (
        "response not text",
        lambda t: {"train_data": bad_pairs_file(t, pair(rejected=["a"]))},
        ["pairs.jsonl", "line 13", "'rejected'", "expected a string"],
    ),
    (
        "missing field",
        lambda t: {"train_data": bad_pairs_file(t, {k: v for k, v in pair().items() if k != "prompt"})},
        ["pairs.jsonl", "line 13", "'prompt'", "missing"],
    ),
    (
        "SafeDPO pair without safety labels",
        lambda t: {
            "loss": "safedpo",
            "train_data": bad_pairs_file(t, {k: v for k, v in pair().items() if k != "rejected_safe"}),
        },
        ["pairs.jsonl", "line 13", "'rejected_safe'", "missing"],
    ),
    (
        "SafeDPO margin 0",
        lambda t: {"loss": "safedpo", "safety_margin": 0},
        ["cfg.yaml", "key 'safety_margin'", "must be > 0, got 0"],
    ),
    ("not JSON", lambda t: {"train_data": _broken_json(t)}, ["pairs.jsonl", "line 2", "not valid JSON"]),
    (
        "empty file",
        lambda t: {"train_data": str(_touch(t / "empty.jsonl"))},
        ["empty.jsonl", "no records (the file is empty)"],
    ),
    ("no such data file", lambda t: {"train_data": str(t / "nope.jsonl")}, ["'train_data'", "nope.jsonl: no such"]),
    (
        "model path that does not exist",
        lambda t: {"model": str(t / "models" / "sft" / "model")},
        ["'model'", "no such folder (and not a hub id"],
    ),
    (
        "learning_rate: abc",
        lambda t: {"learning_rate": "abc"},
        ["cfg.yaml", "'learning_rate'", "expected a number, got 'abc' (str)"],
    ),
    ("beta: -1", lambda t: {"beta": -1}, ["cfg.yaml", "'beta'", "must be > 0, got -1"]),
    ("max_steps: 0", lambda t: {"max_steps": 0}, ["'max_steps'", "must be >= 1"]),
    ("a list where a number goes", lambda t: {"per_device_batch_size": [4]}, ["'per_device_batch_size'", "integer"]),
    ("unknown key", lambda t: {"learning_rat": 0.1}, ["'learning_rat'", "did you mean 'learning_rate'"]),
    ("missing required key", lambda t: {"train_data": None}, ["'train_data'", "missing (required)"]),
    ("loss that does not fit the mode", lambda t: {"loss": "ulma"}, ["'ulma' does not fit mode 'preference'"]),
    (
        "buffer with a point-wise loss",
        lambda t: {"mode": "pointwise", "loss": "ulma", "buffer_data": str(t)},
        ["'buffer_data'", "only the preference mode"],
    ),
    (
        "buffer share that does not divide the batch",
        lambda t: {"buffer_data": None, "buffer_ratio": 0.3} | {"buffer_data": _pairs_dir(t)},
        ["'buffer_ratio'", "not a whole number of buffer pairs"],
    ),
    (
        "trainable pattern matching nothing",
        lambda t: {"trainable": ["down_prj"]},
        ["cfg.yaml", "key 'trainable'", "'down_prj' matches no parameter"],
    ),
    (
        "LoRA target matching no module",
        lambda t: {"trainable": "lora", "lora_target_modules": ["qkv_proj"]},
        ["cfg.yaml", "key 'lora_target_modules'", "'qkv_proj' matches no module"],
    ),
    ("unknown tracker", lambda t: {"report_to": "tensorbord"}, ["cfg.yaml", "key 'report_to'", "'tensorbord'"]),
]


def _touch(path: Path) -> Path:
    path.write_text("")
    return path


def _broken_json(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(pair()) + "\n{not json\n")
    return str(path)


def _pairs_dir(tmp_path):
    return str(data.save(data.datasets.Dataset.from_list([pair()] * 6, features=data.PAIR_FEATURES), tmp_path / "b"))


def run_main(main, argv, capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def one_clear_line(err: str, prog: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case, changes, words", TRAIN_ROWS, ids=[r[0] for r in TRAIN_ROWS])
def test_train_cli_bad_input(case, changes, words, finished_run, tmp_path, capsys):
    out, _ = finished_run
    before = snapshot(out)
    path = write_config(tmp_path, finished_run, **changes(tmp_path))
    code, err = run_main(train.main, ["--config", str(path)], capsys)
    line = one_clear_line(err, "bfpo.train")
    assert code == 2, line
    for w in words:
        assert w in line, (w, line)
    assert snapshot(out) == before, "a bad invocation changed an earlier finished run"


def test_labels_as_0_and_1_are_accepted(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [pair(chosen_safe=1, rejected_safe=0), pair(chosen_safe=True)])
    rows = train.load_examples(str(path), "preference", "train_data")
    assert [(r["chosen_safe"], r["rejected_safe"], r["line"]) for r in rows] == [(True, False, 1), (True, True, 2)]


def test_saved_dataset_records_are_checked_too(tmp_path):
    ds = data.datasets.Dataset.from_list([{"prompt": "p", "response": "r", "label": 0.5}] * 3)
    data.save(ds.map(lambda r, i: {"label": 1.5 if i == 2 else r["label"]}, with_indices=True), tmp_path / "pts")
    with pytest.raises(data.DataError, match=r"pts \(saved dataset; line = row\), line 3, field 'label': .*got 1.5"):
        train.load_examples(str(tmp_path / "pts"), "pointwise", "train_data")


def test_config_file_problems(tmp_path, capsys):
    code, err = run_main(train.main, ["--config", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and "none.yaml: no such config file" in one_clear_line(err, "bfpo.train")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\n  beta: [1\n")
    code, err = run_main(train.main, ["--config", str(bad)], capsys)
    assert code == 2 and "bad.yaml, line 2: not valid YAML" in one_clear_line(err, "bfpo.train")
    bad.write_text("- a\n- b\n")
    code, err = run_main(train.main, ["--config", str(bad)], capsys)
    assert code == 2 and "expected a mapping of config keys" in one_clear_line(err, "bfpo.train")


def test_set_override_is_checked_like_the_file(finished_run, tmp_path, capsys):
    path = write_config(tmp_path, finished_run)
    code, err = run_main(train.main, ["--config", str(path), "--set", "beta=oops"], capsys)
    line = one_clear_line(err, "bfpo.train")
    assert code == 2 and "(with --set overrides)" in line and "'beta'" in line and "got 'oops'" in line


def test_numeric_string_is_read_as_a_number(finished_run, tmp_path):
    """YAML reads ``1e-4`` as a string; a float key takes it as the number it spells."""
    path = write_config(tmp_path, finished_run, learning_rate="1e-4")
    assert train.TrainConfig.from_yaml(path).learning_rate == 1e-4


def test_failure_at_run_time_is_exit_1_and_debug_shows_the_traceback(capsys, monkeypatch):
    def boom():
        raise RuntimeError("disk on fire\nsecond line")

    assert run_cli("bfpo.x", boom) == 1
    line = one_clear_line(capsys.readouterr().err, "bfpo.x")
    assert "failed: RuntimeError: disk on fire | second line" in line and "--debug" in line
    with pytest.raises(RuntimeError):
        run_cli("bfpo.x", boom, debug=True)
    monkeypatch.setenv("BFPO_DEBUG", "1")
    with pytest.raises(RuntimeError):
        run_cli("bfpo.x", boom)


EVAL_ROWS = [
    ("negative limit", ["--tasks", "arc_challenge", "--limit", "-3"], "argument --limit: expected a positive integer"),
    ("unknown task", ["--tasks", "arc"], "unknown task(s) 'arc'"),
    ("unknown judge", ["--tasks", "xstest", "--judge", "gpt5"], "unknown judge 'gpt5'"),
    ("alpaca_eval without a judge", ["--tasks", "alpaca_eval"], "alpaca_eval needs a pairwise judge"),
    ("missing data folder", ["--tasks", "xstest", "--data-dir", "/nonexistent/d"], "/nonexistent/d: no such folder"),
    ("hub-only task without a hub folder", ["--tasks", "alert"], "alert (no subset in data/) are read from the hub"),
    ("official tasks without a hub folder", ["--tasks", "official"], "are read from the hub: give a hub folder"),
    ("a device this machine lacks", ["--tasks", "xstest", "--device", "cuda:9"], "device: 'cuda:9'"),
    ("a device that is no device", ["--tasks", "xstest", "--device", "gpu"], "'gpu' is not a device"),
]


@pytest.mark.parametrize("case, argv, words", EVAL_ROWS, ids=[r[0] for r in EVAL_ROWS])
def test_evaluate_cli_bad_input(case, argv, words, tiny_world, tmp_path, capsys):
    argv = ["--model", str(tiny_world / "init"), "--cache-dir", str(tmp_path / "cache")] + argv
    try:
        code, err = run_main(ev.main, argv, capsys)
    except SystemExit as e:  # argparse's own check: usage, then one error line, exit 2
        code, err = e.code, capsys.readouterr().err
        assert words in err and "Traceback" not in err
    else:
        assert words in one_clear_line(err, "bfpo.evaluation")
    assert code == 2
    assert not (tmp_path / "cache").exists(), "nothing is computed or cached before the input is checked"


def test_evaluate_cli_missing_model(tmp_path, capsys):
    code, err = run_main(ev.main, ["--model", str(tmp_path / "runs" / "m"), "--tasks", "xstest"], capsys)
    assert code == 2 and "no such folder (and not a hub id" in one_clear_line(err, "bfpo.evaluation")


def test_safe_rlhf_cli_bad_input(tiny_world, tmp_path, capsys):
    path = tmp_path / "score.yaml"
    values = {"model": str(tiny_world / "init"), "output_dir": str(tmp_path / "o"), "train_data": str(tmp_path)}
    path.write_text(yaml.safe_dump(values | {"kind": "danger"}))
    code, err = run_main(safe_rlhf.main, ["score", "--config", str(path)], capsys)
    assert code == 2 and "'kind': expected 'reward' or 'cost'" in one_clear_line(err, "bfpo.safe_rlhf")
    ppo = {
        "actor": str(tiny_world / "init"),
        "reward_model": str(tmp_path / "no" / "reward" / "model"),
        "cost_model": str(tiny_world / "init"),
        "output_dir": str(tmp_path / "ppo"),
        "prompts": str(tiny_world / "pairs"),
    }
    path.write_text(yaml.safe_dump(ppo))
    code, err = run_main(safe_rlhf.main, ["ppo", "--config", str(path)], capsys)
    assert code == 2 and "'reward_model'" in one_clear_line(err, "bfpo.safe_rlhf")
    path.write_text(yaml.safe_dump(ppo | {"reward_model": ppo["cost_model"], "gamma": 1.5}))
    code, err = run_main(safe_rlhf.main, ["ppo", "--config", str(path)], capsys)
    assert code == 2 and "'gamma': must lie in [0, 1], got 1.5" in one_clear_line(err, "bfpo.safe_rlhf")
    assert not (tmp_path / "ppo").exists()
    empty = _touch(tmp_path / "prompts.jsonl")
    path.write_text(yaml.safe_dump(ppo | {"reward_model": ppo["cost_model"], "prompts": str(empty)}))
    code, err = run_main(safe_rlhf.main, ["ppo", "--config", str(path)], capsys)
    assert code == 2 and "prompts.jsonl: no records (the file is empty)" in one_clear_line(err, "bfpo.safe_rlhf")
    # Safe RLHF's constraint: a threshold that is not a number, a margin <= 0, a negative fixed lambda
    good = ppo | {"reward_model": ppo["cost_model"]}
    for change, words in (
        ({"cost_threshold": "low"}, "key 'cost_threshold': expected a number, got 'low'"),
        ({"cost_threshold_margin": 0}, "key 'cost_threshold_margin': must be > 0, got 0"),
        ({"lambda_init": -1.0, "lambda_lr": 0}, "key 'lambda_init': must be >= 0, got -1.0"),
        ({"cost_over": "scary"}, "key 'cost_over': expected 'all' or 'harmful', got 'scary'"),
        ({"device": "cuda:9"}, "key 'device': 'cuda:9'"),
    ):
        path.write_text(yaml.safe_dump(good | change))
        code, err = run_main(safe_rlhf.main, ["ppo", "--config", str(path)], capsys)
        line = one_clear_line(err, "bfpo.safe_rlhf")
        assert code == 2 and words in line, line
    path.write_text(yaml.safe_dump(good | {"cost_over": "harmful"}))  # the pairs have no "harmful" column
    code, err = run_main(safe_rlhf.main, ["ppo", "--config", str(path)], capsys)
    line = one_clear_line(err, "bfpo.safe_rlhf")
    assert code == 2 and "line 1" in line and "'harmful'" in line and "needs true or false" in line, line
    assert not (tmp_path / "ppo").exists()


def test_notebook_runner_bad_input(tmp_path, capsys):
    code, err = run_main(runner.main, ["--only", "99"], capsys)
    assert code == 2 and "--only 99: no such notebook" in one_clear_line(err, "bfpo.notebooks")


def test_cli_in_a_real_process_prints_one_line(tmp_path):
    """The same through ``python -m``: the exit status the shell sees, and nothing but the line."""
    path = tmp_path / "c.yaml"
    path.write_text("model: m\noutput_dir: o\ntrain_data: d\nlearning_rate: abc\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bfpo.train", "--config", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"bfpo.train: error: {path}: key 'learning_rate': expected a number, got 'abc' (str)"
    ]


# --- broken state: damaged checkpoints ---------------------------------------------------------


def _kill_at(monkeypatch, step_to_kill):
    original = objectives.step_metrics

    def killed(step, *args, **kwargs):
        if step == step_to_kill:
            raise KeyboardInterrupt("killed")
        return original(step, *args, **kwargs)

    monkeypatch.setattr(objectives, "step_metrics", killed)
    return original


def _cfg(tiny_world, out, **kw):
    values = dict(
        model=str(tiny_world / "init"),
        output_dir=str(out),
        train_data=str(tiny_world / "pairs"),
        max_steps=10,
        per_device_batch_size=4,
        max_length=64,
        learning_rate=3e-3,
        save_every=2,
        progress=False,
        num_threads=1,
    )
    return train.TrainConfig(**(values | kw))


def test_damaged_checkpoint_falls_back_to_the_previous_and_ends_as_uninterrupted(tiny_world, tmp_path, monkeypatch):
    straight = train.train(_cfg(tiny_world, tmp_path / "a", save_every=0))
    cfg = _cfg(tiny_world, tmp_path / "b")
    original = _kill_at(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg)
    monkeypatch.setattr(objectives, "step_metrics", original)
    assert [s for s, _ in checkpoints.listed(cfg.output_dir)] == [4, 6], "the newest two are kept"
    newest = checkpoints.folder(cfg.output_dir) / "step-000006"
    optimizer = next(newest.glob("optimizer*"))
    optimizer.write_bytes(optimizer.read_bytes()[:100])  # cut short, as after a disk fault
    assert "damaged" in checkpoints.damage(newest) and optimizer.name in checkpoints.damage(newest)
    summary = train.train(cfg)
    assert summary["resumed_from"] == 4
    a, b = (
        load_file(str(tmp_path / "a" / "model" / "model.safetensors")),
        load_file(str(tmp_path / "b" / "model" / "model.safetensors")),
    )
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert summary["flops"] == straight["flops"]
    assert [m["step"] for m in train.read_metrics(cfg.output_dir)] == list(range(1, 11))
    assert not checkpoints.folder(cfg.output_dir).exists(), "the finished model supersedes the checkpoints"


def test_no_intact_checkpoint_stops_unless_start_over(tiny_world, tmp_path, monkeypatch, capsys):
    cfg = _cfg(tiny_world, tmp_path / "c", max_steps=6)
    original = _kill_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg)
    monkeypatch.setattr(objectives, "step_metrics", original)
    for _, ckpt in checkpoints.listed(cfg.output_dir):
        (ckpt / "model.safetensors").write_bytes(b"")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    code, err = run_main(train.main, ["--config", str(path)], capsys)
    line = one_clear_line(err, "bfpo.train")
    assert code == 2 and "no intact checkpoint left" in line and "model.safetensors" in line and "start_over" in line
    code, err = run_main(train.main, ["--config", str(path), "--set", "start_over=true"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "c" / "train_summary.json").read_text())["resumed_from"] == 0


def test_a_notebook_raises_the_same_line_and_the_runner_calls_it_bad_input(tmp_path):
    import nbformat

    bad = write_jsonl(tmp_path / "pairs.jsonl", [pair(), pair(chosen_safe="yes")])
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('profile = "smoke"'),
        nbformat.v4.new_code_cell(f"from bfpo import train\ntrain.load_examples({str(bad)!r}, 'preference', 'x')"),
    ]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "01_bad.ipynb")
    with pytest.raises(runner.NotebookBadInput) as e:
        runner.run(
            "smoke",
            output_dir=tmp_path / "o",
            figures_dir=tmp_path / "f",
            notebooks_dir=tmp_path / "nbs",
            progress=False,
        )
    message = str(e.value)
    assert "\n" not in message and "01_bad.ipynb failed in cell 2 (starts with 'from bfpo import train')" in message
    assert f"DataError: {bad}, line 2, field 'chosen_safe': expected true/false or 0/1, got 'yes'" in message
