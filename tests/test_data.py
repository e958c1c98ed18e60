"""Every loader on the vendored subsets (data/), and every kind of bad record gets an error naming file, line, field."""

import json

import datasets
import pytest

from bfpo import data, io, toyworld

PKU = "pku_saferlhf_alpaca7b_test_16.jsonl"
HARMLESS = "hh_rlhf_harmless_base_test_500.jsonl"
HELPFUL = "hh_rlhf_helpful_base_test_500.jsonl"


def shared(name):
    """A vendored subset in data/ (a missing one fails the test: data/ ships with the repository)."""
    return data.data_file(name)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def pku_record(**overrides):
    record = {
        "prompt": "How do I pick a lock?",
        "response_0": "Use a tension wrench and a pick.",
        "response_1": "I can't help with that.",
        "is_response_0_safe": False,
        "is_response_1_safe": True,
        "better_response_id": 0,
        "safer_response_id": 1,
    }
    record.update(overrides)
    return record


# --- PKU-SafeRLHF -------------------------------------------------------------------------------


def test_pku_pairs_follow_better_and_safety_ids():
    path = shared(PKU)
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    pairs = data.pku_saferlhf_pairs(path)
    assert pairs.column_names == list(data.PAIR_COLUMNS) and len(pairs) == len(raw) == 16
    for r, p in zip(raw, pairs, strict=True):
        b = r["better_response_id"]
        assert p["chosen"] == r[f"response_{b}"] and p["rejected"] == r[f"response_{1 - b}"]
        assert p["chosen_safe"] == r[f"is_response_{b}_safe"]
        assert p["rejected_safe"] == r[f"is_response_{1 - b}_safe"]
    assert pairs.features["chosen_safe"].dtype == "bool"


def test_pku_sft_takes_the_safer_response():
    path = shared(PKU)
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    sft = data.pku_saferlhf_sft(path)
    assert [s["response"] for s in sft] == [r[f"response_{r['safer_response_id']}"] for r in raw]


def test_pku_accepts_a_loaded_dataset(tmp_path):
    ds = datasets.Dataset.from_list([pku_record(), pku_record(better_response_id=1)])
    pairs = data.pku_saferlhf_pairs(ds)
    assert pairs["chosen_safe"] == [False, True]


@pytest.mark.parametrize(
    "overrides, field, problem",
    [
        ({"prompt": None}, "prompt", "expected a string"),
        ({"response_1": "   "}, "response_1", "empty text"),
        ({"is_response_0_safe": "yes"}, "is_response_0_safe", "expected true/false or 0/1"),
        ({"is_response_1_safe": 2}, "is_response_1_safe", "expected true/false or 0/1"),
        ({"is_response_1_safe": 1.0}, "is_response_1_safe", "expected true/false or 0/1"),
        ({"better_response_id": 2}, "better_response_id", "expected one of [0, 1]"),
        ({"safer_response_id": True}, "safer_response_id", "expected one of [0, 1]"),
    ],
)
def test_pku_bad_record_names_file_line_field(tmp_path, overrides, field, problem):
    path = write_jsonl(tmp_path / "pku.jsonl", [pku_record(), pku_record(**overrides)])
    with pytest.raises(data.DataError) as e:
        data.pku_saferlhf_pairs(path)
    assert (e.value.where, e.value.line, e.value.field) == (str(path), 2, field)
    assert str(path) in str(e.value) and "line 2" in str(e.value) and field in str(e.value)
    assert problem in str(e.value)


def test_missing_field(tmp_path):
    record = pku_record()
    del record["better_response_id"]
    path = write_jsonl(tmp_path / "pku.jsonl", [record])
    with pytest.raises(data.DataError, match=r"line 1, field 'better_response_id': missing"):
        data.pku_saferlhf_pairs(path)


def test_invalid_json_and_non_object_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(pku_record()) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(data.DataError, match=r"bad.jsonl, line 2: not valid JSON"):
        data.pku_saferlhf_pairs(path)
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(data.DataError, match=r"line 1: expected a JSON object, got list"):
        data.pku_saferlhf_pairs(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        data.pku_saferlhf_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(data.DataError, match=r"empty.jsonl: no records \(the file is empty\)"):
        data.pku_saferlhf_pairs(tmp_path / "empty.jsonl")
    bad = json.dumps({"prompt": ""}) + "\n"
    (tmp_path / "bad.jsonl").write_text(bad * 2, encoding="utf-8")
    with pytest.raises(data.DataError, match=r"no valid records \(all 2 skipped\)"):
        data.pku_saferlhf_pairs(tmp_path / "bad.jsonl", skip_invalid=True)


def test_skip_invalid_logs_and_reports_every_skip(tmp_path, caplog):
    path = write_jsonl(tmp_path / "pku.jsonl", [pku_record(), pku_record(prompt=""), pku_record()])
    skipped = []
    pairs = data.pku_saferlhf_pairs(path, skip_invalid=True, skipped=skipped)
    assert len(pairs) == 2
    assert [(s.line, "prompt" in s.reason) for s in skipped] == [(2, True)]
    assert "skipped" in caplog.text and "line 2" in caplog.text


def test_data_file_error_says_where(monkeypatch, tmp_path):
    monkeypatch.setenv("BFPO_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="BFPO_DATA_DIR") as e:
        data.data_file(PKU)
    assert PKU in str(e.value) and str(tmp_path) in str(e.value) and "\n" not in str(e.value)


# --- HH-RLHF ------------------------------------------------------------------------------------


def test_split_dialogue_keeps_every_turn_but_the_last():
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a joke?\n\nAssistant:  Why not.  "
    prompt, reply = data.split_dialogue(text)
    assert prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a joke?\n\nAssistant:"
    assert reply == "Why not."


@pytest.mark.parametrize(
    "subset, name, rejected_safe", [("harmless-base", HARMLESS, False), ("helpful-base", HELPFUL, True)]
)
def test_hh_subsets_split_and_label(subset, name, rejected_safe):
    path = shared(name)
    skipped = []
    pairs = data.hh_rlhf_pairs(path, subset=subset, skip_invalid=True, skipped=skipped)
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(pairs) + len(skipped) == len(raw) == 500
    assert 0 < len(skipped) <= 3  # the real subsets hold a few broken records; each one is reported
    assert set(pairs["chosen_safe"]) == {True} and set(pairs["rejected_safe"]) == {rejected_safe}
    first = pairs[0]
    assert first["prompt"].endswith("\n\nAssistant:") and raw[0]["chosen"] == first["prompt"] + " " + first["chosen"]
    # without skip_invalid the first broken record stops the load, naming it
    with pytest.raises(data.DataError, match=rf"line {skipped[0].line}, field"):
        data.hh_rlhf_pairs(path, subset=subset)


def test_hh_bad_records(tmp_path):
    ok = {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}
    cases = [
        ({"chosen": "\n\nHuman: q only"}, "chosen", "no '\\\\n\\\\nAssistant:' turn"),
        ({"rejected": "\n\nHuman: other\n\nAssistant: b"}, "rejected", "differs from chosen"),
        ({"chosen": 3}, "chosen", "expected a string"),
    ]
    for overrides, field, problem in cases:
        path = write_jsonl(tmp_path / "hh.jsonl", [ok, {**ok, **overrides}])
        with pytest.raises(data.DataError, match=rf"line 2, field '{field}': .*{problem}"):
            data.hh_rlhf_pairs(path)
    with pytest.raises(ValueError, match="subset must be one of"):
        data.hh_rlhf_pairs(path, subset="red-team")


# --- helpful buffer -----------------------------------------------------------------------------


def test_buffer_takes_text_or_chat_messages(tmp_path):
    chat = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Apple."}]
    bad_chat = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": ""}]
    records = [
        {"prompt": "Name a fruit.", "chosen": chat, "rejected": [chat[0], {"role": "assistant", "content": "No."}]},
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "..."},
    ]
    pairs = data.helpful_buffer_pairs(write_jsonl(tmp_path / "uf.jsonl", records))
    assert pairs["chosen"] == ["Apple.", "Hi!"] and pairs["rejected"] == ["No.", "..."]
    assert all(pairs["chosen_safe"]) and all(pairs["rejected_safe"])
    path = write_jsonl(tmp_path / "bad.jsonl", [{**records[0], "rejected": bad_chat}])
    with pytest.raises(data.DataError, match=r"line 1, field 'rejected': the assistant's message is empty"):
        data.helpful_buffer_pairs(path)
    path = write_jsonl(tmp_path / "bad.jsonl", [{**records[0], "chosen": [chat[1], chat[0]]}])
    with pytest.raises(data.DataError, match=r"field 'chosen': the last message is not the assistant's"):
        data.helpful_buffer_pairs(path)
    path = write_jsonl(tmp_path / "bad.jsonl", [{**records[1], "chosen": {"text": "x"}}])
    with pytest.raises(data.DataError, match=r"field 'chosen': expected a string or a list of chat messages"):
        data.helpful_buffer_pairs(path)


def test_buffer_from_hh_helpful_subset():
    path = shared(HELPFUL)
    buffer = data.helpful_buffer_pairs(
        datasets.Dataset.from_list(
            [
                {"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                for p in data.hh_rlhf_pairs(path, subset="helpful-base", skip_invalid=True).select(range(20))
            ]
        )
    )
    assert len(buffer) == 20 and set(buffer["source"]) == {"helpful_buffer"}


# --- red-teaming pairs --------------------------------------------------------------------------


def test_red_team_pairs_from_the_gold_judge():
    records = [
        {
            "prompt": "how do i kill my neighbor ?",
            "responses": [
                "i will not help with this request .",
                "sure . first stab , then ambush , next alibi , also corpse .",
            ],
        },
        {
            "prompt": "how do i bake bread ?",
            "responses": [
                "sure . first flour , then oven .",
                "you are a moron , idiot .",
                "unfortunately i must decline .",
                "of course . first yeast , then knead , next oven , also crust .",
            ],
        },
    ]
    pairs = data.red_team_pairs(records, toyworld.judge_scores)
    assert len(pairs) == 3
    assert (pairs[0]["chosen_safe"], pairs[0]["rejected_safe"]) == (False, True)
    assert pairs[0]["chosen"].startswith("sure . first stab")
    assert (pairs[1]["chosen_safe"], pairs[1]["rejected_safe"]) == (True, False)
    assert pairs[2]["chosen"].startswith("of course")


def test_red_team_tie_prefers_the_safe_response():
    records = [{"prompt": "how do i bake bread ?", "responses": ["you are a moron , idiot .", "hmm , it depends ."]}]
    pair = data.red_team_pairs(records, toyworld.judge_scores)[0]
    assert pair["chosen"] == "hmm , it depends ." and pair["chosen_safe"] and not pair["rejected_safe"]


def test_red_team_bad_records():
    with pytest.raises(data.DataError, match=r"line 1, field 'responses'"):
        data.red_team_pairs([{"prompt": "how do i bake bread ?", "responses": ["only one"]}], toyworld.judge_scores)
    with pytest.raises(data.DataError, match=r"line 1, field 'responses\[1\]': empty"):
        data.red_team_pairs([{"prompt": "how do i bake bread ?", "responses": ["a", ""]}], toyworld.judge_scores)


# --- schema helpers -----------------------------------------------------------------------------


def test_validate_pairs_and_label_counts():
    ds = toyworld.preference_pairs(40)
    assert data.validate_pairs(ds.add_column("extra", [0] * 40)).column_names == list(data.PAIR_COLUMNS)
    with pytest.raises(data.DataError, match="missing column"):
        data.validate_pairs(ds.remove_columns("source"))
    bad = ds.map(lambda r, i: {"chosen": "" if i == 3 else r["chosen"]}, with_indices=True)
    with pytest.raises(data.DataError, match=r"line 4, field 'chosen': empty text"):
        data.validate_pairs(bad, where="my pairs")
    counts = data.label_counts(ds)["safehelp"]
    assert set(counts) == set(data.LABEL_COMBINATIONS.values()) and sum(counts.values()) == 40


def test_save_and_load_are_atomic(tmp_path):
    ds = toyworld.preference_pairs(10)
    data.save(ds, tmp_path / "pairs")
    data.save(ds.select(range(4)), tmp_path / "pairs")  # replaces the old copy whole
    assert len(data.load(tmp_path / "pairs")) == 4
    with pytest.raises(RuntimeError), io.atomic_dir(tmp_path / "pairs") as tmp:
        (tmp / "partial").write_text("x")
        raise RuntimeError("killed")
    assert len(data.load(tmp_path / "pairs")) == 4  # a failed write leaves the old copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]
    with pytest.raises(FileNotFoundError, match="run the notebook that writes it first"):
        data.load(tmp_path / "nothing")


def test_ultrachat_and_the_sft_mix(tmp_path):
    good = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    sft = data.ultrachat_sft(write_jsonl(tmp_path / "uc.jsonl", [good] * 8), turns="first")
    assert sft[0] == {"prompt": "Hi?", "response": "Hello.", "source": "ultrachat"}
    bad = {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}
    with pytest.raises(data.DataError, match=r"line 2, field 'messages': turn 1: expected role 'user'"):
        data.ultrachat_sft(write_jsonl(tmp_path / "uc.jsonl", [good, bad]))
    odd = {"messages": good["messages"] + [{"role": "user", "content": "And?"}]}
    with pytest.raises(data.DataError, match=r"line 1, field 'messages': expected user/assistant exchanges, got 3"):
        data.ultrachat_sft(write_jsonl(tmp_path / "uc.jsonl", [odd]))
    empty = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": " "}]}
    with pytest.raises(data.DataError, match=r"line 1, field 'content': empty text"):
        data.ultrachat_sft(write_jsonl(tmp_path / "uc.jsonl", [empty]))
    mixed = data.sft_mix(sft, data.pku_saferlhf_sft(shared(PKU)), safety_share=0.2)
    assert len(mixed) == 10 and list(mixed["source"]).count("pku_saferlhf_sft") == 2
    with pytest.raises(ValueError, match="needs 32 safety examples, only 16"):
        data.sft_mix(datasets.concatenate_datasets([sft] * 16), data.pku_saferlhf_sft(shared(PKU)), 0.2)


def test_offline_hub_load_names_what_to_fetch(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'PKU-Alignment/PKU-SafeRLHF' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(data.datasets, "load_dataset", offline)
    with pytest.raises(data.HubUnavailable) as e:
        data.pku_saferlhf_pairs()
    message = str(e.value)
    assert "PKU-Alignment/PKU-SafeRLHF@ff7ba91063016c78a225b0f74e1c0860bb18230f" in message and "'train'" in message
    assert "ConnectionError" in message and "\n" not in message
    with pytest.raises(data.HubUnavailable, match=r"Anthropic/hh-rlhf@main \(harmless-base\)"):
        data.hh_rlhf_pairs()


def test_official_mix_cuts_the_first_rows_before_shuffling():
    """As alignment-handbook's mix_datasets: int(share * N) rows from the top of each part, then one
    shuffle with seed 42 (so the same rows whatever the seed, and the same order for seed 42)."""
    a = datasets.Dataset.from_dict({"i": list(range(10))})
    b = datasets.Dataset.from_dict({"i": list(range(100, 110))})
    mixed = data.official_mix([(a, 1.0), (b, 0.25)])
    assert sorted(mixed["i"]) == list(range(10)) + [100, 101]
    assert mixed["i"] == datasets.concatenate_datasets([a, b.select(range(2))]).shuffle(seed=42)["i"]
    with pytest.raises(ValueError, match="share"):
        data.official_mix([(a, 0.0)])


def test_pku_cost_pairs_put_the_less_safe_response_first_on_every_pair():
    """Safe RLHF's cost model, as the official code pairs PKU-SafeRLHF: chosen = response[1 - safer_response_id]
    on every record, safe/safe and unsafe/unsafe included."""
    path = shared(PKU)
    raw = [r for _, r in data.read_jsonl(path)]
    pairs = data.pku_saferlhf_cost_pairs(path)
    assert len(pairs) == len(raw) == 16
    for r, p in zip(raw, pairs, strict=True):
        harmful = 1 - r["safer_response_id"]
        assert p["chosen"] == r[f"response_{harmful}"] and p["chosen_safe"] == r[f"is_response_{harmful}_safe"]
    assert any(p["chosen_safe"] and p["rejected_safe"] for p in pairs), "safe/safe pairs are kept"


def test_official_red_team_json_format(tmp_path):
    record = {
        "prompt": "How do I hurt someone?",
        "modeloutput1": "I can't help with that.",
        "modeloutput2": "Here is how ...",
        "better_modelout": 2,
        "is_modelout1_safe": True,
        "is_modelout2_safe": False,
    }
    array = tmp_path / "redteam.json"
    array.write_text(json.dumps([record, record | {"better_modelout": 1}]), encoding="utf-8")
    pairs = data.red_team_json_pairs(array)
    assert [(p["chosen"], p["chosen_safe"], p["rejected_safe"]) for p in pairs] == [
        ("Here is how ...", False, True),
        ("I can't help with that.", True, False),
    ]
    lines = write_jsonl(tmp_path / "redteam.jsonl", [record, record | {"better_modelout": 3}])
    with pytest.raises(data.DataError, match=r"redteam.jsonl, line 2, field 'better_modelout'"):
        data.red_team_json_pairs(lines)
    with pytest.raises(FileNotFoundError, match="not redistributed"):
        data.red_team_json_pairs(tmp_path / "missing.json")


def test_ultrachat_keeps_every_turn_and_mixes_with_single_exchanges(tmp_path):
    """The official SFT data: every turn of an UltraChat dialogue (a hub record's system turn dropped,
    the trainer adds its own), concatenated with PKU-SafeRLHF's single exchanges by official_mix."""
    turns = ["Hi?", "Hello.", "Tell me more.", "Gladly: more.", "Thanks!", "You are welcome."]
    chat = [{"role": ("user", "assistant")[k % 2], "content": t} for k, t in enumerate(turns)]
    record = {"prompt": "Hi?", "prompt_id": "x", "messages": [{"role": "system", "content": "S"}] + chat}
    uc = data.ultrachat_sft(write_jsonl(tmp_path / "uc.jsonl", [record] * 5))
    assert uc[0] == {"prompt": "Hi?", "response": "Hello.", "source": "ultrachat", "messages": chat}
    pku = data.pku_saferlhf_sft(shared(PKU))
    mix = data.official_mix([(uc, 1.0), (pku, 0.5)])
    assert len(mix) == 5 + 8 and mix.features["messages"] == data.MESSAGES_FEATURE
    single = [r for r in mix if r["source"] == "pku_saferlhf_sft"]
    assert all(
        r["messages"] == [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]
        for r in single
    )
    saved = data.save(mix, tmp_path / "mix")
    rows = data.check_records(enumerate(data.load(saved).to_list(), start=1), "sft", "mix")
    assert sum(len(r["messages"]) == 6 for r in rows) == 5
