"""Baselines: label views and each method through the trainer (Safe RLHF: test_safe_rlhf.py, test_ppo.py)."""

import json
import math

import datasets
import pytest
import torch

# --- label views --------------------------------------------------------------------------------
from conftest import combos  # the pairs fixture is there too

from bfpo import baselines, data, models, sequences, train


def test_safety_view_keeps_only_pairs_with_one_safe_response_and_chooses_it(pairs):
    view = baselines.safety_view(pairs)
    mixed = sum(a != b for a, b in combos(pairs))
    assert len(view) == mixed and all(c == (True, False) for c in combos(view))
    assert set(view["prompt"]) <= set(pairs["prompt"])


def test_ranked_view_follows_the_sign_of_the_bfpo_target(pairs):
    ranked = baselines.ranked_view(pairs)
    for before, after in zip(pairs, ranked, strict=True):
        g = float(tw_target(before))
        assert (after["chosen"] == before["chosen"]) == (g > 0)


def tw_target(row):
    from bfpo import losses

    return losses.bfpo_target(torch.tensor([float(row["chosen_safe"])]), torch.tensor([float(row["rejected_safe"])]))[0]


def test_mix_view_adds_the_safety_order_of_pairs_whose_safety_differs():
    """Three pairs by hand: safe>safe, safe>unsafe and unsafe>safe. The naive mix keeps all three with
    their helpfulness order and adds, for the two whose safety differs, the safe response as chosen."""
    rows = [
        {"prompt": p, "chosen": c, "rejected": r, "chosen_safe": cs, "rejected_safe": rs, "source": "hand"}
        for p, c, r, cs, rs in (
            ("p1", "full answer", "partial answer", True, True),
            ("p2", "full answer", "insult", True, False),
            ("p3", "harmful recipe", "refusal", False, True),
        )
    ]
    mix = baselines.mix_view(datasets.Dataset.from_list(rows, features=data.PAIR_FEATURES))
    got = [(r["prompt"], r["chosen"], r["rejected"], r["chosen_safe"], r["rejected_safe"]) for r in mix]
    assert got == [
        ("p1", "full answer", "partial answer", True, True),
        ("p2", "full answer", "insult", True, False),
        ("p3", "harmful recipe", "refusal", False, True),
        ("p2", "full answer", "insult", True, False),
        ("p3", "refusal", "harmful recipe", True, False),
    ]


def test_pointwise_labels(pairs):
    binary = baselines.pointwise_view(pairs, "binary")
    assert len(binary) == 2 * len(pairs) and binary["label"][::2] == [1.0] * len(pairs)
    cont = baselines.pointwise_view(pairs, "continuous")
    chosen_rows, rejected_rows = cont.select(range(0, len(cont), 2)), cont.select(range(1, len(cont), 2))
    for row, chosen, rejected in zip(pairs, chosen_rows, rejected_rows, strict=True):
        assert chosen["label"] == pytest.approx(1.0 if row["chosen_safe"] else 0.0)
        assert rejected["label"] == pytest.approx(2 / 3 if row["rejected_safe"] else 1 / 3)
    with pytest.raises(ValueError, match="label_type"):
        baselines.pointwise_view(pairs, "ternary")


def test_unknown_method_and_bad_pointwise_data(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'dpo_help'; known: dpo_helpful"):
        baselines.get_method("dpo_help")
    path = tmp_path / "points.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "r", "label": 1.5}) + "\n")
    with pytest.raises(data.DataError, match=r"points.jsonl, line 1, field 'label'"):
        train.load_examples(str(path), "pointwise", "train_data")


# --- each method moves the margins its labels ask for ------------------------------------------

EXPECTED_SIGNS = {  # sign of beta * h on the original (helpfulness-ordered) pairs, per combination
    "dpo_helpful": {"safe>unsafe": +1, "unsafe>safe": +1, "safe>safe": +1},
    "ipo": {"safe>unsafe": +1, "unsafe>safe": +1, "safe>safe": +1},
    "dpo_safety": {"safe>unsafe": +1, "unsafe>safe": -1},
    "bfpo": {"safe>unsafe": +1, "unsafe>safe": -1, "safe>safe": +1, "unsafe>unsafe": -1},
    "pointwise_dpo": {"safe>unsafe": +1, "unsafe>safe": -1, "safe>safe": +1},
}


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    pairs, buffer = data.load(tiny_world / "pairs"), data.load(tiny_world / "buffer")
    base = dict(
        model=str(tiny_world / "init"),
        beta=0.5,
        learning_rate=3e-3,
        per_device_batch_size=16,
        max_steps=40,
        max_length=64,
        buffer_ratio=0.25,
        progress=False,
        num_threads=1,
    )
    runs = {}
    for name in [*EXPECTED_SIGNS, "dpo_mix", "ulma"]:
        cfg = baselines.method_config(baselines.METHODS[name], base, pairs, buffer, root / name)
        train.train(cfg)
        runs[name] = baselines.implicit_margins(
            root / name / "run" / "model", tiny_world / "init", pairs, beta=0.5, max_length=64
        )
    runs["_root"] = root
    return runs


@pytest.mark.parametrize("name", list(EXPECTED_SIGNS))
def test_each_method_shifts_the_margins_its_labels_ask_for(trained, name):
    margins = trained[name]
    for combo, sign in EXPECTED_SIGNS[name].items():
        assert margins[combo] * sign > 0, (name, combo, margins)


def test_ulma_lifts_positives_above_negatives(trained):
    """ULMA's SFT term on positives is unbounded and its point-wise term on negatives saturates: on
    this world it lifts every answer-shaped response (all four margins come out positive), so the
    check is on what it optimises, the positive and negative examples themselves."""
    last = train.read_metrics(trained["_root"] / "ulma" / "run")[-1]
    assert last["logp_change/positive"] > last["logp_change/negative"], last


def test_naive_mix_sits_between_helpfulness_and_safety(trained):
    m = "unsafe>safe"  # the combination where the two labels disagree
    assert trained["dpo_safety"][m] < trained["dpo_mix"][m] < trained["dpo_helpful"][m], trained


# Safe RLHF's score models: tests/test_safe_rlhf.py; PPO-Lagrangian: tests/test_ppo.py; the compute
# accounting and curves: tests/test_curves.py


def test_ulma_step_loss_is_the_mean_over_positives_plus_the_mean_over_negatives(trained, tiny_world):
    """At step 1 the policy is the reference, so a negative's loss is log 2 and a positive's is its
    token-averaged NLL; the logged loss must be mean(positives) + log 2, as the official code reduces it."""
    run = trained["_root"] / "ulma" / "run"
    saved = json.loads((run / "config.json").read_text())
    assert saved.pop("trainer_version") == train.TRAINER_VERSION
    cfg = train.TrainConfig.from_dict(saved)
    tok, model = models.load_tokenizer(cfg.model), models.load_model(cfg.model)
    items, _ = train.tokenize(train.load_examples(cfg.train_data, "pointwise", "x"), tok, cfg, "pointwise")
    schedule = train.StepSchedule(len(items), 0, cfg.per_device_batch_size, cfg.buffer_ratio, cfg.seed)
    batch = [items[i] for i in schedule.ids(0)]
    input_ids, attn, resp = train.collate(train.micro_batch_sequences(batch), tok.pad_token_id, "cpu")
    with torch.no_grad():
        logps, n_tok = train.sequence_logps(model, input_ids, attn, resp)
    positive = torch.tensor([it["label"] >= 0.5 for it in batch])
    assert positive.any() and (~positive).any()
    expected = float((-logps / n_tok)[positive].mean()) + math.log(2)
    assert train.read_metrics(run)[0]["loss"] == pytest.approx(expected, rel=1e-4)


def test_the_reference_of_the_margins_is_computed_once(trained, tiny_world, monkeypatch):
    """Every method's margins share the start's log-probs: a second model against the same start and
    pairs does not run the reference again, and gives the margins it gave before."""
    pairs = data.load(tiny_world / "pairs")
    root = trained["_root"]
    first = baselines.implicit_margins(
        root / "dpo_mix" / "run" / "model", tiny_world / "init", pairs, beta=0.5, max_length=64
    )
    calls = []
    real = sequences.reference_logps
    monkeypatch.setattr(sequences, "reference_logps", lambda *a, **k: calls.append(k.get("desc")) or real(*a, **k))
    again = baselines.implicit_margins(
        root / "dpo_mix" / "run" / "model", tiny_world / "init", pairs, beta=0.5, max_length=64
    )
    assert calls == ["policy"] and again == first == trained["dpo_mix"]
