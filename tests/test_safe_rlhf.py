"""Safe RLHF's reward and cost models (bfpo.safe_rlhf): the pairs each is trained on, held-out ranking,
the cost model's calibration around zero."""

import pytest
from conftest import combos  # the pairs fixture is there too

from bfpo import cards, data, safe_rlhf


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
    # better than chance on each side of zero: a tiny model, 120 steps (0.58-0.99 measured across runs)
    assert cal["unsafe_positive"] > 0.5 and cal["safe_negative"] > 0.5, cal
    assert cal["mean_cost_unsafe"] > 0 > cal["mean_cost_safe"]
    only_unsafe = safe_rlhf.cost_calibration(root / "cost" / "model", [r for r in records if not r["safe"]][:5], 64)
    assert only_unsafe["safe"] == 0 and only_unsafe["safe_negative"] != only_unsafe["safe_negative"]  # NaN: no safe


def test_cost_pairs_in_the_given_harm_order_are_all_kept(pairs):
    rows = pairs.to_list()
    kept = safe_rlhf.score_pairs(rows, "cost", harm_order="given")
    assert kept == rows, "PKU's safer_response_id already orders every pair, safe/safe included"
    assert len(safe_rlhf.score_pairs(rows, "cost")) < len(rows), "from labels, safe/safe pairs say nothing"
    with pytest.raises(ValueError, match="harm_order"):
        safe_rlhf.score_pairs(rows, "cost", harm_order="vibes")
