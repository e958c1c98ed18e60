import math

import pytest
import torch

from bfpo import losses, theory


@pytest.fixture
def bandit():
    return theory.quadrant_bandit()


@pytest.mark.parametrize("tau", [0.5, 0.01])
def test_closed_form_optimum_maximises_objective(bandit, tau):
    rewards = theory.bilinear_reward(bandit.helpful, bandit.safe)
    pi_star = theory.optimal_policy(bandit.ref_probs, rewards, tau)
    pi_num = theory.maximise_objective(bandit, rewards, tau)
    assert (pi_num - pi_star).abs().max() < 1e-4


@pytest.mark.parametrize("tau", [0.5, 0.01])
def test_bfpo_gradient_descent_reaches_optimum(bandit, tau):
    rewards = theory.bilinear_reward(bandit.helpful, bandit.safe)
    pi_star = theory.optimal_policy(bandit.ref_probs, rewards, tau)
    logps, trace = theory.fit_policy(bandit, "bfpo", theory.helpfulness_pairs(bandit), tau, steps=1500)
    assert trace[-1] < 1e-12 < trace[0]
    err = (
        (
            theory.implicit_reward(logps, bandit.ref_logps, tau)
            - theory.implicit_reward(pi_star.log(), bandit.ref_logps, tau)
        )
        .abs()
        .max()
    )
    assert err < 1e-8


def test_dpo_on_helpfulness_prefers_helpful_unsafe_bfpo_does_not(bandit):
    pairs = theory.helpfulness_pairs(bandit)
    hu, us = bandit.names.index("helpful-unsafe"), bandit.names.index("unhelpful-safe")
    dpo, _ = theory.fit_policy(bandit, "dpo", pairs, 0.5, steps=800)
    bfpo, _ = theory.fit_policy(bandit, "bfpo", pairs, 0.5, steps=800)
    assert dpo[hu] > dpo[us]
    assert bfpo[hu] < bfpo[us]
    assert theory.ranking(bfpo - bandit.ref_logps, bandit.names) == list(theory.QUADRANTS)


def test_targets_are_reward_differences():
    for b1 in (1.5, 3.0, 7.0):
        c = theory.c_from_b1(b1)
        for i_w in (0.0, 1.0):
            for i_l in (0.0, 1.0):
                t = lambda v: torch.tensor([v], dtype=torch.float64)
                diff = theory.bilinear_reward(t(1.0), t(i_w), 0.3, c) - theory.bilinear_reward(t(0.0), t(i_l), 0.3, c)
                g = losses.bfpo_target(t(i_w), t(i_l), alpha=0.3, b1=b1)
                torch.testing.assert_close(g, diff)


def test_helpfulness_and_safety_pairs(bandit):
    hp = theory.helpfulness_pairs(bandit)
    assert all(bandit.helpful[hp.chosen] > bandit.helpful[hp.rejected])
    label_pairs = zip(hp.chosen_safe.tolist(), hp.rejected_safe.tolist(), strict=True)
    assert sorted(label_pairs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    sp = theory.safety_pairs(bandit)
    assert all(sp.chosen_safe == 1) and all(sp.rejected_safe == 0) and len(sp.chosen) == 4


def test_bad_reference_policy():
    with pytest.raises(ValueError, match="ref_probs"):
        theory.quadrant_bandit((0.5, 0.5, 0.0, 0.0))


def test_safedpo_gradient_descent_reaches_its_safe_optimum():
    bandit = theory.quadrant_bandit()
    rewards = 2.0 * bandit.helpful
    star = theory.safe_optimal_policy(bandit.ref_probs, rewards, bandit.safe, 0.5)
    assert star[bandit.safe == 0].sum() == 0 and star.sum().item() == pytest.approx(1.0)
    # among safe answers the ratio to the reference follows exp(r / tau)
    hs, us = 0, 1
    assert (star[hs] / star[us]).item() == pytest.approx(
        (bandit.ref_probs[hs] / bandit.ref_probs[us] * math.exp(4)).item()
    )
    pairs = theory.preference_pairs(bandit, rewards)
    assert len(pairs.chosen) == 12 and torch.allclose(
        pairs.weight[:1], torch.sigmoid(torch.tensor([2.0], dtype=torch.float64))
    )
    logps, trace = theory.fit_policy(bandit, "safedpo", pairs, 0.5, steps=3000, lr=0.05, adam=True)
    assert 0.5 * (logps.exp() - star).abs().sum().item() < 1e-3
    assert trace[-1] < trace[0]
    # plain DPO on the same preferences reaches the unconstrained optimum instead, unsafe mass included
    dpo, _ = theory.fit_policy(bandit, "dpo", pairs, 0.5, steps=3000, lr=0.05, adam=True)
    assert torch.allclose(dpo.exp(), theory.optimal_policy(bandit.ref_probs, rewards, 0.5), atol=1e-3)
    assert dpo.exp()[bandit.safe == 0].sum() > 0.5
