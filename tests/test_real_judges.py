"""The real-model judges' math (bfpo.real_judges): probes recover a planted rule, AUC and kappa equal their
definitions on hand-made cases, and the weak label follows the 75 % line."""

import pytest
import torch

from bfpo import real_judges as rj


def _planted(n=400, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.arange(1, d + 1)  # features on different scales
    w = torch.zeros(d)
    w[2], w[5] = 1.0, -0.5
    return x, w


def test_logistic_probe_recovers_a_planted_linear_rule_and_saves():
    x, w = _planted()
    y = (x @ w > 0).float()
    probe = rj.fit_logistic(x[:300], y[:300], l2=1e-3)
    held_out = ((probe.score(x[300:]) > 0).float() == y[300:]).float().mean()
    assert held_out > 0.9
    assert rj.roc_auc(probe.score(x[300:]), y[300:]) > 0.95


def test_probe_round_trips_through_json(tmp_path):
    x, w = _planted()
    probe = rj.fit_logistic(x, (x @ w > 0).float())
    again = rj.Probe.load(probe.save(tmp_path / "p.json"))
    assert torch.equal(again.score(x), probe.score(x))


def test_bradley_terry_probe_orders_pairs_by_the_planted_reward():
    x, w = _planted(600)
    a, b = x[:300], x[300:]
    chosen = torch.where((a @ w > b @ w)[:, None], a, b)
    rejected = torch.where((a @ w > b @ w)[:, None], b, a)
    probe = rj.fit_bradley_terry(chosen[:200], rejected[:200], l2=1e-3)
    assert ((probe.score(chosen[200:]) - probe.score(rejected[200:])) > 0).float().mean() > 0.9


def test_roc_auc_is_the_mann_whitney_probability():
    assert rj.roc_auc(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 1, 0])) == 1.0
    assert rj.roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([1, 0])) == 0.0
    # one positive (0.5) against negatives 0.2, 0.5, 0.7: wins 1, ties 1, loses 1 -> (1 + 0.5) / 3
    assert rj.roc_auc(torch.tensor([0.5, 0.2, 0.5, 0.7]), torch.tensor([1, 0, 0, 0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both classes"):
        rj.roc_auc(torch.tensor([0.5]), torch.tensor([1]))


def test_cohen_kappa_on_hand_cases():
    a = [True, True, False, False]
    assert rj.cohen_kappa(a, a) == 1.0
    assert rj.cohen_kappa(a, [not v for v in a]) == -1.0
    # p_o = 0.5, p_e = 0.5 * 0.5 + 0.5 * 0.5 = 0.5 -> 0
    assert rj.cohen_kappa(a, [True, False, True, False]) == 0.0
    assert rj.cohen_kappa([True, True], [True, True]) == 1.0
    with pytest.raises(ValueError):
        rj.cohen_kappa([True], [])


def test_weak_label_below_75_percent():
    assert rj.label("reward probe", 0.62) == "reward probe (weak: 62% held-out accuracy)"
    assert rj.label("safety probe", 0.81) == "safety probe"


def test_hh_split_is_fixed_and_near_60_40():
    prompts = [f"prompt {i}" for i in range(2000)]
    share = sum(rj.hh_split(p) == "fit" for p in prompts) / len(prompts)
    assert 0.56 < share < 0.64 and rj.hh_split("prompt 0") == rj.hh_split("prompt 0")


def test_cross_validation_chooses_from_the_grid_on_the_fit_split_only():
    x, w = _planted(300)
    y = (x @ w > 0).float()
    seen = set()

    def fold(tr, te, l2):
        seen.update(tr.tolist() + te.tolist())
        return float(((rj.fit_logistic(x[tr], y[tr], l2).score(x[te]) > 0) == y[te]).float().mean())

    l2, means = rj.cross_validated_l2(fold, 200)  # only the first 200 rows are the fit split
    assert set(means) == set(rj.L2_GRID) and l2 == max(means, key=means.get)
    assert seen == set(range(200)), "every fit row is used, no held-out row"
    assert means[0.01] > means[100.0], "a planted clean rule prefers weak regularisation"
