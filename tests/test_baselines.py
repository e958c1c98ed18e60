"""Baselines: label views, each method through the trainer, Safe RLHF's score models and PPO-Lagrangian."""

import json
import math
import shutil

import datasets
import pytest
import torch

from bfpo import baselines, cards, checkpoints, compute, curves, data, models, ppo, runs, safe_rlhf, sequences, train
from bfpo import toyworld as tw

# --- label views --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs():
    return tw.preference_pairs(200, tw.WorldConfig(seed=1))


def combos(ds):
    return [(r["chosen_safe"], r["rejected_safe"]) for r in ds]


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


# --- Safe RLHF -------------------------------------------------------------------------------


def test_cost_model_ranks_unsafe_above_safe_on_held_out_pairs(score_models):
    _, summary = score_models
    cost = summary["cost"]["eval_accuracy"]
    assert cost["ranking"] > 0.85 and cost["sign"] > 0.85, cost
    assert summary["reward"]["eval_accuracy"]["ranking"] > 0.7, summary["reward"]
    root, _ = score_models
    card = cards.read(root / "cost" / "model")
    assert card["pipeline_tag"] == "text-classification" and card["bfpo"]["method"] == "cost"
    assert card["bfpo"]["final_metrics"]["step"] == 120


def test_score_pairs_for_the_cost_model_put_the_harmful_response_first(pairs):
    for r in safe_rlhf.score_pairs(pairs.to_list(), "cost"):
        assert not r["chosen_safe"]
    assert len(safe_rlhf.score_pairs(pairs.to_list(), "cost")) == sum(not (a and b) for a, b in combos(pairs))


def test_lagrange_multiplier_rises_above_the_threshold_and_falls_below():
    lam = ppo.LagrangeMultiplier(init=1.0, lr=0.1, threshold=0.0, max_value=5.0)
    up = [lam.update(2.0) for _ in range(5)]
    assert all(b > a for a, b in zip([1.0, *up], up, strict=False)), up
    assert up[0] == pytest.approx(math.exp(0.2))  # log_lambda += lr * (J_C - d) * lambda
    assert max(lam.update(100.0) for _ in range(5)) == pytest.approx(5.0), "capped at lambda_max"
    down = [lam.update(-1.0) for _ in range(5)]
    assert all(b < a for a, b in zip([5.0, *down], down, strict=False)), down


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # delta = [0, 0, 0.5]; A_2 = 0.5, A_1 = 0 + 0.5 * 0.5, A_0 = 0 + 0.5 * 0.25
    assert adv.tolist() == [[0.125, 0.25, 0.5, 0.0]]
    assert ret.tolist() == [[0.625, 0.75, 1.0, 0.0]]


def test_shaped_rewards_put_the_score_on_the_last_token():
    logps, ref = torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-1.5, -2.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    r = ppo.shaped_rewards(torch.tensor([4.0]), logps, ref, mask, kl_coef=0.1, sign=-1.0)
    assert r[0].tolist() == pytest.approx([-0.05, 4.0, 0.0])
    c = ppo.shaped_rewards(torch.tensor([4.0]), logps, ref, mask, kl_coef=0.1, sign=+1.0)
    assert c[0].tolist() == pytest.approx([0.05, 4.0, 0.0])


def test_ppo_lagrangian_lambda_follows_the_cost(ppo_config, tiny_world, tmp_path):
    for threshold, direction in ((-20.0, +1), (20.0, -1)):
        cfg = ppo_config(
            tmp_path / str(threshold),
            cost_threshold=threshold,
            lambda_max=None,
            lambda_lr=0.01,
        )
        summary = ppo.ppo_lagrangian(cfg)
        lams = [1.0] + [m["lambda"] for m in runs.read_metrics(cfg.output_dir)]
        assert all((b - a) * direction > 0 for a, b in zip(lams, lams[1:], strict=False)), lams
        first = runs.read_metrics(cfg.output_dir)[0]
        assert {"reward", "cost", "kl", "lambda", "actor_loss", "cost_critic_loss"} <= set(first)
        parts = summary["flops"]
        assert parts["rollout_generation"] > 0 and parts["actor_train"] > 0 and parts["critic_train"] > 0
    before = models.load_model(tiny_world / "init").state_dict()
    after = models.load_model(tmp_path / "20.0" / "model").state_dict()
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert before.keys() == after.keys() and changed, "PPO-Lagrangian saved an updated actor"
    card = cards.read(tmp_path / "20.0" / "model")["bfpo"]
    assert card["method"] == "ppo_lagrangian" and card["final_metrics"]["iteration"] == 4


class _CountingJudge:
    """A judge of bfpo.evaluation's interface that calls every second answer harmful and records what it saw."""

    name = "counting"

    def __init__(self):
        self.seen = []

    def harmless(self, prompts, responses, contexts=None):
        self.seen.append((list(prompts), list(responses)))
        return [k % 2 == 0 for k in range(len(prompts))]


def test_ppo_logs_the_judge_it_is_given(ppo_config, tmp_path):
    """The judge is passed in: its share of harmful rollouts is logged per iteration, and without one
    nothing is judged (the plot then drops its panel)."""
    from bfpo import figures

    judge = _CountingJudge()
    cfg = ppo_config(tmp_path / "judged", iterations=2)
    ppo.ppo_lagrangian(cfg, judge)
    judged = runs.read_metrics(cfg.output_dir)
    assert [m["gold_unsafe_rate"] for m in judged] == [0.5, 0.5] and len(judge.seen) == 2
    assert len(judge.seen[0][0]) == cfg.rollout_batch_size
    plain = ppo_config(tmp_path / "plain", iterations=2)
    ppo.ppo_lagrangian(plain)
    unjudged = runs.read_metrics(plain.output_dir)
    assert all("gold_unsafe_rate" not in m for m in unjudged)
    assert [m["lambda"] for m in unjudged] == [m["lambda"] for m in judged], "judging changes nothing else"
    assert len(figures.plot_safe_rlhf({"s": judged}).axes) == 5
    assert len(figures.plot_safe_rlhf({"s": unjudged}).axes) == 4


def test_ppo_lagrangian_does_not_depend_on_the_random_state_it_starts_in(ppo_config, tmp_path):
    """The study runs jobs one after another in worker processes (bfpo.jobs): a run seeds its own
    critics' heads and rollouts."""
    metrics = []
    for state in (0, 12345):
        torch.manual_seed(state)
        cfg = ppo_config(tmp_path / str(state), iterations=2)
        ppo.ppo_lagrangian(cfg)
        metrics.append([{k: v for k, v in m.items() if k != "seconds"} for m in runs.read_metrics(cfg.output_dir)])
    assert metrics[0] == metrics[1]


def test_ppo_lagrangian_in_bf16_records_its_precision_and_stays_finite(ppo_config, tmp_path):
    fp32_cfg = ppo_config(tmp_path / "fp32", iterations=2, mixed_precision="no")
    fp32 = ppo.ppo_lagrangian(fp32_cfg)
    cfg = ppo_config(tmp_path / "bf16", iterations=2, mixed_precision="bf16")
    bf16 = ppo.ppo_lagrangian(cfg)
    assert (fp32["mixed_precision"], bf16["mixed_precision"]) == ("no", "bf16")
    for m in runs.read_metrics(cfg.output_dir):
        assert all(math.isfinite(m[k]) for k in ("reward", "cost", "kl", "actor_loss", "reward_critic_loss")), m


def test_ppo_lagrangian_resumes_where_it_stopped(ppo_config, tmp_path, monkeypatch, assert_tensorboard_matches):
    straight = ppo_config(tmp_path / "a", iterations=4)
    ppo.ppo_lagrangian(straight)
    cfg = ppo_config(tmp_path / "b", iterations=4, save_every=2, report_to="tensorboard")
    real = ppo.ppo_actor_loss
    calls = {"n": 0}

    def killed_in_iteration_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(ppo, "ppo_actor_loss", killed_in_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        ppo.ppo_lagrangian(cfg)
    monkeypatch.setattr(ppo, "ppo_actor_loss", real)
    other = ppo_config(tmp_path / "c", iterations=4, save_every=2, actor_lr=5e-4)
    assert [step for step, _ in checkpoints.listed(tmp_path / "b")] == [2]
    shutil.copytree(checkpoints.folder(tmp_path / "b"), checkpoints.folder(tmp_path / "c"))
    assert ppo.ppo_lagrangian(other)["resumed_from"] == 0, "a checkpoint of another config is not resumed"
    summary = ppo.ppo_lagrangian(cfg)
    assert summary["resumed_from"] == 2
    a, b = runs.read_metrics(tmp_path / "a"), runs.read_metrics(tmp_path / "b")
    assert [m["iteration"] for m in b] == [1, 2, 3, 4]
    assert_tensorboard_matches(tmp_path / "b", b, "iteration")  # iteration 3, logged twice, kept once
    for x, y in zip(a, b, strict=True):
        assert x["lambda"] == pytest.approx(y["lambda"], rel=1e-5) and x["reward"] == pytest.approx(
            y["reward"], abs=1e-4
        )


# --- compute -----------------------------------------------------------------------------------


def test_flop_formulas_and_trainer_accounting(tiny_world, tmp_path):
    assert compute.train_flops(100, 10) == 6 * 100 * 10
    assert compute.train_flops(100, 10, n_trainable=5) == (400 + 10) * 10
    assert compute.generation_flops(100, 3, 7) == 2 * 100 * 10
    cfg = train.TrainConfig(
        model=str(tiny_world / "init"),
        output_dir=str(tmp_path / "run"),
        train_data=str(tiny_world / "pairs"),
        max_steps=3,
        per_device_batch_size=4,
        max_length=64,
        trainable=["down_proj"],
        progress=False,
    )
    s = train.train(cfg)
    n, n_tr = s["total_parameters"], s["trainable_parameters"]
    assert s["flops"]["train"] == (4 * n + 2 * n_tr) * s["tokens"]["train"]
    assert s["flops"]["reference"] == 2 * n * s["tokens"]["reference"]
    assert s["tokens"]["train"] == sum(m["tokens"] for m in train.read_metrics(tmp_path / "run"))


def test_ppo_snapshots_carry_the_flops_spent_so_far(ppo_config, score_models, tmp_path):
    cfg = ppo_config(tmp_path / "ppo", iterations=4, snapshot_every=2)
    summary = ppo.ppo_lagrangian(cfg)
    snaps = checkpoints.snapshots(cfg.output_dir)
    assert [info["step"] for info, _ in snaps] == [2]  # the last iteration is the final model itself
    info, path = snaps[0]
    assert 0 < info["flops"]["total"] < summary["flops"]["total"]
    assert info["flops"]["rollout_generation"] == pytest.approx(summary["flops"]["rollout_generation"] / 2, rel=0.5)
    assert (path / "config.json").is_file() and "lambda" in info
    # the compute curve of a PPO run counts the reward and cost models before the first rollout
    upfront = sum(
        json.loads((score_models[0] / kind / "score_summary.json").read_text())["flops"]["total"]
        for kind in ("reward", "cost")
    )
    points = curves.curve_points(cfg.output_dir)
    assert [p["step"] for p in points] == [2, 4]
    assert points[0]["flops"] == pytest.approx(info["flops"]["total"] + upfront)
    assert points[-1]["flops"] == pytest.approx(summary["flops"]["total"] + upfront) == curves.run_flops(cfg.output_dir)


def test_cost_calibration_counts_each_side_of_zero(score_models):
    root, _ = score_models
    held_out = data.load(root / "held_out")
    records = [
        {"prompt": r["prompt"], "response": r[k], "safe": r[f"{k}_safe"]}
        for r in held_out
        for k in ("chosen", "rejected")
    ]
    cal = safe_rlhf.cost_calibration(root / "cost" / "model", records, max_length=64)
    assert cal["unsafe"] + cal["safe"] == len(records) and cal["unsafe"] == sum(not r["safe"] for r in records)
    assert cal["unsafe_positive"] > 0.6 and cal["safe_negative"] > 0.6, cal  # a tiny model, 120 steps
    assert cal["mean_cost_unsafe"] > 0 > cal["mean_cost_safe"]
    only_unsafe = safe_rlhf.cost_calibration(root / "cost" / "model", [r for r in records if not r["safe"]][:5], 64)
    assert only_unsafe["safe"] == 0 and only_unsafe["safe_negative"] != only_unsafe["safe_negative"]  # NaN: no safe


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
    input_ids, attn, resp = train.collate(train.micro_batch_sequences(batch), tok.pad_token_id)
    with torch.no_grad():
        logps, n_tok = train.sequence_logps(model, input_ids, attn, resp)
    positive = torch.tensor([it["label"] >= 0.5 for it in batch])
    assert positive.any() and (~positive).any()
    expected = float((-logps / n_tok)[positive].mean()) + math.log(2)
    assert train.read_metrics(run)[0]["loss"] == pytest.approx(expected, rel=1e-4)


def test_cost_pairs_in_the_given_harm_order_are_all_kept(pairs):
    rows = pairs.to_list()
    kept = safe_rlhf.score_pairs(rows, "cost", harm_order="given")
    assert kept == rows, "PKU's safer_response_id already orders every pair, safe/safe included"
    assert len(safe_rlhf.score_pairs(rows, "cost")) < len(rows), "from labels, safe/safe pairs say nothing"
    with pytest.raises(ValueError, match="harm_order"):
        safe_rlhf.score_pairs(rows, "cost", harm_order="vibes")


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
