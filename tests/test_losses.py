import math

import pytest
import torch

from bfpo import losses

B = 5


def _logps(seed: int, n: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (-torch.rand(n, generator=g) * 20).requires_grad_()


def _inputs(name: str) -> dict:
    """Valid keyword arguments for each registered loss; the policy tensors need grad."""
    pair = dict(
        chosen_logps=_logps(0),
        rejected_logps=_logps(1),
        ref_chosen_logps=_logps(2).detach(),
        ref_rejected_logps=_logps(3).detach(),
    )
    labels = torch.tensor([1, 0, 1, 0, 1])
    return {
        "bfpo": dict(**pair, chosen_safe=labels, rejected_safe=labels.flip(0), beta=0.1),
        "dpo": dict(**pair, beta=0.1, label_smoothing=0.1),
        "ipo": dict(**pair, beta=0.1),
        "safedpo": dict(**pair, chosen_safe=labels, rejected_safe=labels.flip(0), beta=0.1, safety_margin=2.0),
        "pointwise_dpo": dict(logps=_logps(0), ref_logps=_logps(2).detach(), labels=labels, beta=0.1),
        "ulma": dict(logps=_logps(0), ref_logps=_logps(2).detach(), labels=labels, beta=0.1),
        "sft": dict(logps=_logps(0)),
        "reward_model": dict(chosen_rewards=_logps(0), rejected_rewards=_logps(1)),
        "cost_model": dict(
            harmful_costs=_logps(0), harmless_costs=_logps(1), harmful_safe=labels, harmless_safe=labels
        ),
    }[name]


def _trainable(kwargs: dict) -> list[torch.Tensor]:
    return [v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.requires_grad]


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_every_loss_is_per_example_finite_and_differentiable(name):
    kwargs = _inputs(name)
    out = losses.get(name)(**kwargs)
    assert out.shape == (B,)
    assert torch.isfinite(out).all()
    out.sum().backward()
    for t in _trainable(kwargs):
        assert t.grad is not None and torch.isfinite(t.grad).all()
        assert t.grad.abs().sum() > 0


def test_registry_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown loss 'dop'.*bfpo.*dpo.*ipo"):
        losses.get("dop")


@pytest.mark.parametrize(
    "chosen_safe, rejected_safe, target",
    [(1, 1, 0.5), (1, 0, 1.0), (0, 1, -1.0), (0, 0, -0.5)],
)
def test_bfpo_target_four_label_combinations(chosen_safe, rejected_safe, target):
    g = losses.bfpo_target(torch.tensor([chosen_safe]), torch.tensor([rejected_safe]))
    assert g.item() == pytest.approx(target)


def test_bfpo_target_accepts_bool_labels_and_orders_globally():
    g = losses.bfpo_target(torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False]))
    assert g.tolist() == pytest.approx([0.5, 1.0, -1.0, -0.5])


def test_bfpo_target_keeps_float64():
    g = losses.bfpo_target(torch.tensor([1.0], dtype=torch.float64), torch.tensor([0]), alpha=0.3, b1=5.0)
    assert g.dtype == torch.float64
    assert g.item() == 0.25 * 5 - 0.3  # exact in float64


def test_bfpo_constants_relation():
    b1, b3 = losses.bfpo_constants(3.0)
    assert (b1, b3) == (3.0, 0.5)
    b1, b3 = losses.bfpo_constants(5.0)
    assert b3 == pytest.approx(0.25)
    with pytest.raises(ValueError, match="b1"):
        losses.bfpo_constants(1.0)


def test_bfpo_hand_computed():
    # h = (-1 - -3) - (-2 - -2) = 2; beta = 0.5; labels (0, 1): g = -1, g/beta = -2 -> (2 + 2)^2 = 16
    t = lambda v: torch.tensor([float(v)])
    out = losses.bfpo_loss(t(-1), t(-3), t(-2), t(-2), chosen_safe=[0], rejected_safe=[1], beta=0.5)
    assert out.item() == pytest.approx(16.0)
    # custom alpha and b1: b3 = 1/(4-1); g = (4*1 - 0)/3 - 0.25 = 1.0833; beta 1 -> (2 - 1.0833)^2
    out = losses.bfpo_loss(t(-1), t(-3), t(-2), t(-2), [1], [0], beta=1.0, alpha=0.25, b1=4.0)
    assert out.item() == pytest.approx((2 - (4 / 3 - 0.25)) ** 2)


def test_bfpo_equals_ipo_when_both_safe():
    kw = _inputs("ipo")
    ones = torch.ones(B)
    bfpo = losses.bfpo_loss(**kw, chosen_safe=ones, rejected_safe=ones)
    ipo = losses.ipo_loss(**kw)
    torch.testing.assert_close(bfpo, ipo)


def test_bfpo_differs_from_ipo_when_chosen_unsafe():
    kw = _inputs("ipo")
    bfpo = losses.bfpo_loss(**kw, chosen_safe=torch.zeros(B), rejected_safe=torch.ones(B))
    assert not torch.allclose(bfpo, losses.ipo_loss(**kw))


def test_bfpo_gradient_pushes_helpful_unsafe_down():
    # at h = 0 with labels (0, 1) the target is -1/beta: descending the loss lowers chosen_logps
    chosen = torch.zeros(1, requires_grad=True)
    z = torch.zeros(1)
    losses.bfpo_loss(chosen, z, z, z, [0], [1], beta=0.1).sum().backward()
    assert chosen.grad.item() > 0  # gradient descent moves chosen_logps down


def test_dpo_hand_computed_and_label_smoothing():
    t = lambda v: torch.tensor([float(v)])
    # h = 2, beta = 0.5 -> -log sigma(1)
    out = losses.dpo_loss(t(-1), t(-3), t(-2), t(-2), beta=0.5)
    assert out.item() == pytest.approx(math.log1p(math.exp(-1.0)))
    out = losses.dpo_loss(t(-1), t(-3), t(-2), t(-2), beta=0.5, label_smoothing=0.2)
    expected = 0.8 * math.log1p(math.exp(-1.0)) + 0.2 * math.log1p(math.exp(1.0))
    assert out.item() == pytest.approx(expected)


def test_ipo_hand_computed():
    t = lambda v: torch.tensor([float(v)])
    # h = 2, beta = 0.1 -> (2 - 5)^2
    assert losses.ipo_loss(t(-1), t(-3), t(-2), t(-2), beta=0.1).item() == pytest.approx(9.0)


def test_pointwise_dpo_binary_and_continuous():
    logps, ref = torch.tensor([-1.0, -1.0]), torch.tensor([-3.0, -3.0])  # u = beta * 2 = 1
    out = losses.pointwise_dpo_loss(logps, ref, [1, 0], beta=0.5)
    assert out.tolist() == pytest.approx([math.log1p(math.exp(-1)), math.log1p(math.exp(1))])
    out = losses.pointwise_dpo_loss(logps, ref, [0.25, 1.0], beta=0.5, label_type="continuous")
    assert out.tolist() == pytest.approx([(0.25 - 1) ** 2, 0.0])
    # log Z shifts u by beta * log Z
    out = losses.pointwise_dpo_loss(logps, ref, [1, 1], beta=0.5, log_z=2.0)
    assert out[0].item() == pytest.approx(math.log1p(math.exp(-2)))
    with pytest.raises(ValueError, match="labels: label 0.5 at index 0 is outside \\{0, 1\\}"):
        losses.pointwise_dpo_loss(logps, ref, [0.5, 1.0], beta=0.5)
    with pytest.raises(ValueError, match="labels: label 1.5 .* outside \\[0, 1\\]"):
        losses.pointwise_dpo_loss(logps, ref, [1.5, 1.0], beta=0.5, label_type="continuous")
    with pytest.raises(ValueError, match="label_type"):
        losses.pointwise_dpo_loss(logps, ref, [1, 1], beta=0.5, label_type="soft")


def test_ulma_positive_is_sft_negative_is_pointwise():
    logps, ref = torch.tensor([-4.0, -4.0]), torch.tensor([-6.0, -6.0])
    out = losses.ulma_loss(logps, ref, [1, 0], beta=0.5)
    assert out[0].item() == pytest.approx(4.0)  # -log pi(y), reference ignored
    assert out[1].item() == pytest.approx(math.log1p(math.exp(1.0)))  # -log sigma(-0.5 * 2)
    # the positive term does not depend on the reference
    out2 = losses.ulma_loss(logps, torch.tensor([-100.0, -6.0]), [1, 0], beta=0.5)
    assert out2[0].item() == pytest.approx(4.0)


def test_sft_sum_and_per_token():
    logps = torch.tensor([-6.0, -2.0])
    assert losses.sft_loss(logps).tolist() == [6.0, 2.0]
    assert losses.sft_loss(logps, num_tokens=torch.tensor([3, 2])).tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="num_tokens"):
        losses.sft_loss(logps, num_tokens=torch.tensor([0, 2]))


def test_reward_model_hand_computed():
    out = losses.reward_model_loss(torch.tensor([1.0]), torch.tensor([-1.0]), regularization=0.1)
    assert out.item() == pytest.approx(math.log1p(math.exp(-2.0)) + 0.1 * (1 + 1) / 2)


def test_cost_model_sign_term():
    # harmful response unsafe with cost 2, harmless response safe with cost -1
    out = losses.cost_model_loss(
        torch.tensor([2.0]), torch.tensor([-1.0]), harmful_safe=[0], harmless_safe=[1], regularization=0.0
    )
    expected = math.log1p(math.exp(-3.0)) + math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))
    assert out.item() == pytest.approx(expected)
    # a safe response with positive cost is penalised more than with negative cost
    pos = losses.cost_model_loss(torch.tensor([2.0]), torch.tensor([1.0]), [0], [1], regularization=0.0)
    assert pos.item() > out.item()


# ----------------------------------------------------------------------------- bad input


def test_mismatched_shapes_name_the_argument():
    kw = _inputs("dpo")
    kw["rejected_logps"] = torch.zeros(B + 1)
    with pytest.raises(ValueError, match="rejected_logps: shape \\[6\\] does not match chosen_logps \\[5\\]"):
        losses.dpo_loss(**kw)


def test_non_finite_logps_name_the_argument():
    kw = _inputs("ipo")
    kw["ref_chosen_logps"] = torch.tensor([0.0, float("nan"), 0.0, float("-inf"), 0.0])
    with pytest.raises(ValueError, match="ref_chosen_logps: non-finite values at index \\[1, 3\\]"):
        losses.ipo_loss(**kw)


def test_two_dimensional_logps_rejected():
    with pytest.raises(ValueError, match="logps: expected shape \\[B\\]"):
        losses.sft_loss(torch.zeros(2, 3))


def test_integer_logps_rejected():
    with pytest.raises(ValueError, match="chosen_rewards: expected a floating-point"):
        losses.reward_model_loss(torch.tensor([1]), torch.tensor([1]))


@pytest.mark.parametrize("field", ["chosen_safe", "rejected_safe"])
def test_bfpo_labels_outside_domain(field):
    kw = _inputs("bfpo")
    kw[field] = torch.tensor([1, 0, 2, 0, 1])
    with pytest.raises(ValueError, match=f"{field}: label 2.0 at index 2 is outside"):
        losses.bfpo_loss(**kw)


def test_bfpo_label_shape_mismatch():
    kw = _inputs("bfpo")
    kw["chosen_safe"] = torch.tensor([1, 0])
    with pytest.raises(ValueError, match="chosen_safe: shape \\[2\\] does not match"):
        losses.bfpo_loss(**kw)


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_beta_must_be_positive(beta):
    kw = _inputs("ipo")
    kw["beta"] = beta
    with pytest.raises(ValueError, match="beta: must be > 0"):
        losses.ipo_loss(**kw)


def test_bfpo_alpha_outside_unit_interval():
    kw = _inputs("bfpo")
    kw["alpha"] = 1.0
    with pytest.raises(ValueError, match="alpha: must lie in \\(0, 1\\)"):
        losses.bfpo_loss(**kw)


def test_cost_labels_outside_domain():
    with pytest.raises(ValueError, match="harmless_safe: label -1.0"):
        losses.cost_model_loss(torch.zeros(2), torch.zeros(2), [0, 1], [-1, 1])


def test_ulma_reduction_averages_positives_and_negatives_separately():
    """Official ULMA: mean of the SFT term over positives plus mean of the point-wise term over
    negatives. Labels 1, 1, 0, 1 and losses 1, 2, 3, 4: (1 + 2 + 4) / 3 + 3 / 1 = 16 / 3, where a
    joint mean would give 10 / 4."""
    labels = torch.tensor([1.0, 1.0, 0.0, 1.0])
    per_example = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = losses.ulma_weights(labels, n_positive=3, n_negative=1)
    assert float((w * per_example).sum()) == pytest.approx(16 / 3)
    half = losses.ulma_weights(labels[:2], n_positive=3, n_negative=1)  # a part of the global batch
    assert half.tolist() == pytest.approx([1 / 3, 1 / 3])
    assert losses.ulma_weights(torch.tensor([1.0, 1.0]), 2, 0).tolist() == [0.5, 0.5], "no negatives: no term"


def test_label_combinations_and_targets_come_from_one_place():
    """bfpo.labels: each combination's safety labels name it back, and its target is the paper's g."""
    from bfpo import labels

    assert [labels.combination(*labels.SAFETY[c]) for c in labels.COMBINATIONS] == list(labels.COMBINATIONS)
    assert labels.combination(1, 0) == "safe>unsafe" and labels.DISPLAY["unsafe>safe"] == "unsafe > safe"
    codes = labels.code(torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert codes.tolist() == [3.0, 2.0, 1.0, 0.0]
    assert labels.targets() == {"safe>safe": 0.5, "safe>unsafe": 1.0, "unsafe>safe": -1.0, "unsafe>unsafe": -0.5}
    assert labels.targets(alpha=0.25, b1=5.0)["safe>unsafe"] == pytest.approx(0.25 * 5 - 0.25)


def _sigmoid_nll(z: float) -> float:
    return -math.log(1 / (1 + math.exp(-z)))


def test_safedpo_hand_computed_four_label_combinations():
    # h_pi = (chosen - ref_chosen) - (rejected - ref_rejected) = 3 - 1 = 2 for every pair; beta 0.5, Delta 1.5
    c, r = torch.full((4,), -2.0), torch.full((4,), -6.0)
    rc, rr = torch.full((4,), -5.0), torch.full((4,), -7.0)
    chosen_safe, rejected_safe = torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 1, 0])
    got = losses.safedpo_loss(c, r, rc, rr, chosen_safe, rejected_safe, beta=0.5, safety_margin=1.5)
    want = [
        _sigmoid_nll(0.5 * 2),  # safe > safe: plain DPO
        _sigmoid_nll(0.5 * 2 - 1.5),  # safe > unsafe: kept, must win by Delta
        _sigmoid_nll(0.5 * -2 - 1.5),  # unsafe > safe: swapped (h -> -h), the safe one must win by Delta
        _sigmoid_nll(0.5 * 2),  # unsafe > unsafe: plain DPO in the helpfulness order
    ]
    assert got.tolist() == pytest.approx(want, rel=1e-6)


def test_safedpo_pushes_the_helpful_unsafe_answer_down_and_the_safe_one_up():
    c, r = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    loss = losses.safedpo_loss(c, r, torch.zeros(1), torch.zeros(1), [0], [1], beta=0.1, safety_margin=1.0)
    loss.sum().backward()
    assert c.grad.item() > 0 > r.grad.item()  # descent lowers log pi(helpful unsafe), raises log pi(safe)


@pytest.mark.parametrize("margin", [0.0, -1.0])
def test_safedpo_margin_must_be_positive(margin):
    with pytest.raises(ValueError, match="safety_margin: must be > 0"):
        losses.safedpo_loss(*(torch.zeros(2),) * 4, [1, 0], [0, 1], beta=0.1, safety_margin=margin)


def test_safedpo_needs_safety_labels():
    with pytest.raises(TypeError):
        losses.safedpo_loss(*(torch.zeros(2),) * 4, beta=0.1)
    with pytest.raises(ValueError, match="chosen_safe: label 0.5"):
        losses.safedpo_loss(*(torch.zeros(2),) * 4, [0.5, 1], [0, 1], beta=0.1)
