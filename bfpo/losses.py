"""Preference and reward-model losses of BFPO, DPO, IPO, SafeDPO, ULMA and Safe RLHF.

Every loss is a pure function. Inputs are per-sequence log-probabilities **summed over
response tokens** (shape ``[B]``) unless a docstring says otherwise; outputs are
**per-example** losses (shape ``[B]``), never reduced, so the caller chooses how to
weight and average them.

Notation (as in the BFPO paper): ``h_pi`` is the log-ratio difference

    h_pi(y_hw, y_hl) = [log pi(y_hw) - log pi(y_hl)] - [log pi_ref(y_hw) - log pi_ref(y_hl)]

and ``beta`` is the KL strength (the BFPO paper calls it ``tau``; its code calls it beta).

``get(name)`` returns a loss by name from the registry ``LOSSES``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- checks


def _as_tensor(name: str, value, like: Tensor | None = None) -> Tensor:
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value, dtype=like.dtype if like is not None else None)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name}: cannot be read as a tensor ({err})") from None
    return value


def _check_logps(**tensors: Tensor) -> None:
    """1-D, same shape, floating point and finite: else a ValueError naming the argument."""
    shape = None
    first = None
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 1:
            raise ValueError(f"{name}: expected shape [B], got {list(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {t.dtype}")
        if shape is None:
            shape, first = t.shape, name
        elif t.shape != shape:
            raise ValueError(f"{name}: shape {list(t.shape)} does not match {first} {list(shape)}")
        if not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).nonzero().flatten()[:5].tolist()
            raise ValueError(f"{name}: non-finite values at index {bad}")


def _check_labels(name: str, labels, like: Tensor, binary: bool = True) -> Tensor:
    """Labels as a float tensor of ``like``'s shape; binary labels in {0, 1}, else in [0, 1]."""
    labels = _as_tensor(name, labels)
    if labels.shape != like.shape:
        raise ValueError(f"{name}: shape {list(labels.shape)} does not match [B] = {list(like.shape)}")
    labels = labels.to(device=like.device, dtype=like.dtype)
    if not torch.isfinite(labels).all():
        raise ValueError(f"{name}: non-finite labels")
    if binary:
        bad = ((labels != 0) & (labels != 1)).nonzero().flatten()
        domain = "{0, 1}"
    else:
        bad = ((labels < 0) | (labels > 1)).nonzero().flatten()
        domain = "[0, 1]"
    if len(bad):
        i = bad[0].item()
        raise ValueError(f"{name}: label {labels[i].item()} at index {i} is outside {domain}")
    return labels


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: must be > 0, got {value}")


def log_ratio_difference(
    chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor
) -> Tensor:
    """h_pi = (log pi(y_hw) - log pi(y_hl)) - (log pi_ref(y_hw) - log pi_ref(y_hl)), shape [B]."""
    _check_logps(
        chosen_logps=chosen_logps,
        rejected_logps=rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    return (chosen_logps - rejected_logps) - (ref_chosen_logps - ref_rejected_logps)


# ----------------------------------------------------------------------------- BFPO


def bfpo_constants(b1: float = 3.0) -> tuple[float, float]:
    """(B1, B3) with B3 = 1 / (B1 - 1), as in the BFPO code (paper, Appendix B.4).

    With the bilinear reward R(y) = (I_safe(y) - alpha) * (h(y) + c) and pairwise helpfulness
    h(y_hw) - h(y_hl) = 1, the reward difference is (1 + c) I_safe(y_hw) - c I_safe(y_hl) - alpha.
    Matching B3 * B1 = 1 + c and B3 = c gives B1 = (1 + c) / c, i.e. B3 = c = 1 / (B1 - 1).
    B1 = 3 is c = 1/2.
    """
    if not b1 > 1:
        raise ValueError(f"b1: must be > 1 so that B3 = 1/(B1 - 1) > 0, got {b1}")
    return b1, 1.0 / (b1 - 1.0)


def _bfpo_target(chosen_safe: Tensor, rejected_safe: Tensor, alpha: float, b1: float) -> Tensor:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: must lie in (0, 1), got {alpha}")
    b1, b3 = bfpo_constants(b1)
    return b3 * (b1 * chosen_safe - rejected_safe) - alpha  # g = B3 (B1 I_safe(y_hw) - I_safe(y_hl)) - B2, B2 = alpha


def bfpo_target(chosen_safe, rejected_safe, alpha: float = 0.5, b1: float = 3.0) -> Tensor:
    """The bi-factorial target g(y_hw, y_hl) = B3 * (B1 * I_safe(y_hw) - I_safe(y_hl)) - B2.

    ``chosen`` (y_hw) is the more helpful response; B2 = alpha. With the defaults:

        safe(y_hw), safe(y_hl):  (1, 1) -> +0.5   (1, 0) -> +1.0
                               (0, 1) -> -1.0   (0, 0) -> -0.5

    which orders helpful-safe > unhelpful-safe > unhelpful-unsafe > helpful-unsafe.
    """
    like = _as_tensor("chosen_safe", chosen_safe)
    if not like.is_floating_point():
        like = like.to(torch.get_default_dtype())
    chosen_safe = _check_labels("chosen_safe", chosen_safe, like)
    rejected_safe = _check_labels("rejected_safe", rejected_safe, like)
    return _bfpo_target(chosen_safe, rejected_safe, alpha, b1)


def bfpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_safe,
    rejected_safe,
    beta: float,
    alpha: float = 0.5,
    b1: float = 3.0,
) -> Tensor:
    """BFPO's supervised loss (paper, Eq. of the supervised objective):

        L = ( h_pi(y_hw, y_hl) - g(y_hw, y_hl) / beta )^2,   shape [B]

    ``chosen`` is the more helpful response y_hw; ``chosen_safe``/``rejected_safe`` are 0/1
    (or bool) safety labels; ``g`` is :func:`bfpo_target`. When both responses are safe,
    g = 1/2 and the loss equals :func:`ipo_loss`.
    """
    _check_positive("beta", beta)
    h_pi = log_ratio_difference(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen_safe = _check_labels("chosen_safe", chosen_safe, h_pi)
    rejected_safe = _check_labels("rejected_safe", rejected_safe, h_pi)
    g = _bfpo_target(chosen_safe, rejected_safe, alpha, b1)
    return (h_pi - g / beta) ** 2  # L_BFPO = (h_pi - g / tau)^2, tau = beta


# ----------------------------------------------------------------------------- DPO / IPO


def dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """DPO (Rafailov et al. 2023, Eq. 7), with conservative label smoothing eps:

        L = -(1 - eps) * log sigma(beta * h_pi) - eps * log sigma(-beta * h_pi)

    eps = 0 is plain DPO; this is TRL's ``loss_type="sigmoid"``.
    """
    _check_positive("beta", beta)
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing: must lie in [0, 0.5), got {label_smoothing}")
    h_pi = log_ratio_difference(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    # L_DPO = -(1 - eps) log sigma(beta h_pi) - eps log sigma(-beta h_pi)
    return -(1 - label_smoothing) * F.logsigmoid(beta * h_pi) - label_smoothing * F.logsigmoid(-beta * h_pi)


def ipo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """IPO (Azar et al. 2023, Eq. 17) on **summed** log-probs:

        L = ( h_pi - 1 / (2 beta) )^2

    TRL's ``loss_type="ipo"`` first averages log-probs over tokens (length-normalised), so
    for the same beta its ``h_pi`` is smaller by about the response length and its numbers
    differ; pass mean log-probs here to get TRL's form.
    """
    _check_positive("beta", beta)
    h_pi = log_ratio_difference(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (h_pi - 1.0 / (2.0 * beta)) ** 2  # L_IPO = (h_pi - 1 / (2 beta))^2


def safedpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_safe,
    rejected_safe,
    beta: float,
    safety_margin: float = 2.0,
) -> Tensor:
    """SafeDPO (Kim et al., ICLR 2026, arXiv 2505.20065, the SafeDPO objective): DPO on the
    safety-transformed pair, with a safety margin Delta where the pair's safety labels differ.

    ``chosen`` is the more helpful response y_w; h_w, h_l are the harm indicators (1 - safe). The
    transform swaps a pair whose helpful response is unsafe and the other safe, so the safe one wins:
    (y_tw, y_tl) = (y_l, y_w) if h_w > h_l else (y_w, y_l). Then

        L = -log sigma( beta * h_pi(y_tw, y_tl) - (h_tl - h_tw) * Delta ),   shape [B]

    with h_pi(y_tw, y_tl) = -h_pi(y_w, y_l) for a swapped pair. (h_tl - h_tw) is 1 when the two
    labels differ (the transformed winner is the safe one) and 0 otherwise.
    """
    _check_positive("beta", beta)
    _check_positive("safety_margin", safety_margin)
    h_pi = log_ratio_difference(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen_safe = _check_labels("chosen_safe", chosen_safe, h_pi)
    rejected_safe = _check_labels("rejected_safe", rejected_safe, h_pi)
    swap = (1 - chosen_safe) * rejected_safe  # h_w > h_l: the helpful response is the unsafe one
    h_t = torch.where(swap.bool(), -h_pi, h_pi)  # h_pi(y_tw, y_tl)
    differ = (chosen_safe - rejected_safe).abs()  # h_tl - h_tw after the transform: 1 or 0
    return -F.logsigmoid(beta * h_t - differ * safety_margin)  # -log sigma(beta h_t - (h_tl - h_tw) Delta)


# ----------------------------------------------------------------------------- ULMA / SFT


def pointwise_dpo_loss(
    logps: Tensor,
    ref_logps: Tensor,
    labels,
    beta: float,
    log_z: float = 0.0,
    label_type: str = "binary",
) -> Tensor:
    """Point-wise DPO (ULMA paper, Sec. 3) on single responses with labels z.

    With u = beta * (log pi(y) - log pi_ref(y)) and c = beta * log Z (about 0 in practice):

        binary z in {0, 1}:      L = -[ z log sigma(u + c) + (1 - z) log sigma(-(u + c)) ]
        continuous z in [0, 1]:  L = ( z - u - c )^2
    """
    _check_positive("beta", beta)
    _check_logps(logps=logps, ref_logps=ref_logps)
    if label_type not in ("binary", "continuous"):
        raise ValueError(f"label_type: must be 'binary' or 'continuous', got {label_type!r}")
    z = _check_labels("labels", labels, logps, binary=label_type == "binary")
    u = beta * (logps - ref_logps) + beta * log_z  # u + c = beta log(pi / pi_ref) + beta log Z
    if label_type == "binary":
        return -(z * F.logsigmoid(u) + (1 - z) * F.logsigmoid(-u))  # -[z log s(u) + (1 - z) log s(-u)]
    return (z - u) ** 2  # (z - u)^2


def sft_loss(logps: Tensor, num_tokens: Tensor | None = None) -> Tensor:
    """Negative log-likelihood of the target response: -log pi(y), or per token when
    ``num_tokens`` (shape [B]) is given: -log pi(y) / |y|."""
    _check_logps(logps=logps)
    if num_tokens is None:
        return -logps
    num_tokens = _as_tensor("num_tokens", num_tokens).to(logps)
    if num_tokens.shape != logps.shape:
        raise ValueError(f"num_tokens: shape {list(num_tokens.shape)} does not match logps {list(logps.shape)}")
    if (num_tokens <= 0).any():
        raise ValueError("num_tokens: every response needs at least one token")
    return -logps / num_tokens


def ulma_loss(logps: Tensor, ref_logps: Tensor, labels, beta: float) -> Tensor:
    """ULMA (Cai et al. 2023): positive samples as demonstrations, negatives point-wise.

        z = 1:  L = -log pi(y)                      (plain SFT: no reference, no beta)
        z = 0:  L = -log sigma(-beta * (log pi(y) - log pi_ref(y)))

    The official code feeds token-averaged log-probs with beta = 0.1: pass mean log-probs
    to match it.
    """
    _check_positive("beta", beta)
    _check_logps(logps=logps, ref_logps=ref_logps)
    z = _check_labels("labels", labels, logps)
    negative = -F.logsigmoid(-beta * (logps - ref_logps))  # z = 0: -log sigma(-beta log(pi / pi_ref))
    return z * (-logps) + (1 - z) * negative  # z = 1: -log pi(y)


def ulma_weights(labels: Tensor, n_positive: int, n_negative: int) -> Tensor:
    """How the official ULMA code reduces its per-example losses over a batch: the SFT term is
    averaged over the positives and the point-wise term over the negatives, separately, then added:

        L_batch = (1 / n_pos) * sum_{z=1} L_i + (1 / n_neg) * sum_{z=0} L_i

    (a class absent from the batch adds nothing). Returns the weight of each example, so that
    ``(weights * per_example).sum()`` is ``L_batch``; ``n_positive`` and ``n_negative`` count the
    whole (global) batch, of which ``labels`` may be a part. A label >= 0.5 counts as positive.
    """
    positive = labels >= 0.5
    w_pos = 1.0 / n_positive if n_positive else 0.0
    w_neg = 1.0 / n_negative if n_negative else 0.0
    return torch.where(positive, torch.full_like(labels, w_pos), torch.full_like(labels, w_neg))


# ----------------------------------------------------------------------------- Safe RLHF


def reward_model_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, regularization: float = 0.001) -> Tensor:
    """Safe RLHF reward model: Bradley-Terry plus a score regulariser.

    L = -log sigma(R(y_hw) - R(y_hl)) + reg * (R(y_hw)^2 + R(y_hl)^2) / 2
    """
    _check_logps(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    reg = regularization * (chosen_rewards.square() + rejected_rewards.square()) / 2  # reg (R_w^2 + R_l^2) / 2
    return -F.logsigmoid(chosen_rewards - rejected_rewards) + reg  # -log sigma(R(y_hw) - R(y_hl))


def cost_model_loss(
    harmful_costs: Tensor,
    harmless_costs: Tensor,
    harmful_safe,
    harmless_safe,
    regularization: float = 0.001,
) -> Tensor:
    """Safe RLHF cost model (cost > 0 means unsafe): Bradley-Terry plus the sign term.

    ``harmful`` is the more harmful response of the pair; s(y) = +1 if y is unsafe, -1 if safe:

        L = -log sigma(C(y_harmful) - C(y_harmless))
            - log sigma(s(y_harmful) C(y_harmful)) - log sigma(s(y_harmless) C(y_harmless))
            + reg * (C(y_harmful)^2 + C(y_harmless)^2) / 2

    The sign terms push unsafe responses above 0 and safe ones below 0.
    """
    _check_logps(harmful_costs=harmful_costs, harmless_costs=harmless_costs)
    harmful_sign = 1 - 2 * _check_labels("harmful_safe", harmful_safe, harmful_costs)
    harmless_sign = 1 - 2 * _check_labels("harmless_safe", harmless_safe, harmless_costs)
    ranking = -F.logsigmoid(harmful_costs - harmless_costs)  # -log sigma(C(y_harmful) - C(y_harmless))
    # -log sigma(s(y) C(y)) for both responses, s = +1 unsafe / -1 safe
    sign = -F.logsigmoid(harmful_sign * harmful_costs) - F.logsigmoid(harmless_sign * harmless_costs)
    reg = regularization * (harmful_costs.square() + harmless_costs.square()) / 2
    return ranking + sign + reg


# ----------------------------------------------------------------------------- registry

LOSSES: dict[str, Callable[..., Tensor]] = {
    "bfpo": bfpo_loss,
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "safedpo": safedpo_loss,
    "pointwise_dpo": pointwise_dpo_loss,
    "ulma": ulma_loss,
    "sft": sft_loss,
    "reward_model": reward_model_loss,
    "cost_model": cost_model_loss,
}


def get(name: str) -> Callable[..., Tensor]:
    """The loss function registered under ``name``."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}") from None
