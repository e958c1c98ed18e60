"""BFPO's theory on a finite bandit: one prompt, a handful of responses, exact answers.

The path checked here (BFPO paper, Sec. 3 and Appendix B):

1. the bilinear joint objective  max_pi E_{y~pi}[R(y)] - tau * KL(pi || pi_ref),
   with R(y) = (I_safe(y) - alpha) * (h(y) + c)            -> :func:`bilinear_reward`
2. its closed-form optimum  pi*(y) = pi_ref(y) exp(R(y) / tau) / Z   -> :func:`optimal_policy`
3. the implicit reward  tau * log(pi*(y) / pi_ref(y)) = R(y) - tau log Z, so for any pair
   h_{pi*}(y_hw, y_hl) = (R(y_hw) - R(y_hl)) / tau = g(y_hw, y_hl) / tau  -> ``losses.bfpo_target``
4. the supervised loss (h_pi - g / tau)^2, minimised by gradient descent over a softmax
   policy, reaches pi*                                         -> :func:`fit_policy`

and beside it SafeDPO's (arXiv 2505.20065): the safety-constrained objective
max_pi E[r(y)] - tau KL(pi || pi_ref) subject to pi(y) = 0 for every unsafe y has the optimum
pi*_safe(y) = pi_ref(y) exp(r(y) / tau) I_safe(y) / Z          -> :func:`safe_optimal_policy`
which the SafeDPO loss on Bradley-Terry preferences of r reaches    -> :func:`preference_pairs`

Everything runs in float64 on tensors of shape [K] (K responses).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bfpo import losses

Tensor = torch.Tensor
DTYPE = torch.float64

# The four quadrants, in the global order BFPO should produce (best first).
QUADRANTS = ("helpful-safe", "unhelpful-safe", "unhelpful-unsafe", "helpful-unsafe")


@dataclass(frozen=True)
class Bandit:
    """One prompt with K candidate responses, their labels and a reference policy."""

    names: tuple[str, ...]
    helpful: Tensor  # [K] helpfulness h(y) in [0, 1]
    safe: Tensor  # [K] I_safe(y) in {0, 1}
    ref_probs: Tensor  # [K] pi_ref(y), sums to 1

    @property
    def ref_logps(self) -> Tensor:
        return self.ref_probs.log()


def quadrant_bandit(ref_probs=(0.3, 0.2, 0.1, 0.4)) -> Bandit:
    """Four responses, one per quadrant, in the order of :data:`QUADRANTS`.

    The default reference is a compliant SFT model: it puts the most mass on the
    helpful-but-unsafe answer, more than on the refusal (unhelpful-safe).
    """
    ref = torch.tensor(ref_probs, dtype=DTYPE)
    if ref.shape != (4,) or (ref <= 0).any() or abs(ref.sum().item() - 1) > 1e-9:
        raise ValueError(f"ref_probs: need 4 positive probabilities summing to 1, got {ref_probs}")
    return Bandit(
        names=QUADRANTS,
        helpful=torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=DTYPE),
        safe=torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=DTYPE),
        ref_probs=ref,
    )


def bilinear_reward(helpful: Tensor, safe: Tensor, alpha: float = 0.5, c: float = 0.5) -> Tensor:
    """R(y) = (I_safe(y) - alpha) * (h(y) + c): a safety factor times a helpfulness factor.

    Safe responses get a positive factor (1 - alpha), unsafe ones a negative factor (-alpha):
    more helpfulness raises the reward of a safe answer and lowers that of an unsafe one.
    """
    return (safe - alpha) * (helpful + c)


def c_from_b1(b1: float) -> float:
    """c = B3 = 1 / (B1 - 1): the helpfulness offset that the constant B1 encodes."""
    return losses.bfpo_constants(b1)[1]


def rlhf_objective(logits: Tensor, rewards: Tensor, ref_logps: Tensor, tau: float) -> Tensor:
    """J(pi) = E_{y~pi}[R(y)] - tau * KL(pi || pi_ref) for pi = softmax(logits)."""
    logps = torch.log_softmax(logits, dim=-1)
    probs = logps.exp()
    return (probs * rewards).sum() - tau * (probs * (logps - ref_logps)).sum()


def optimal_policy(ref_probs: Tensor, rewards: Tensor, tau: float) -> Tensor:
    """pi*(y) = pi_ref(y) exp(R(y) / tau) / Z, the maximiser of :func:`rlhf_objective`."""
    return torch.softmax(ref_probs.log() + rewards / tau, dim=-1)


def safe_optimal_policy(ref_probs: Tensor, rewards: Tensor, safe: Tensor, tau: float) -> Tensor:
    """pi*_safe(y) = pi_ref(y) exp(r(y) / tau) I_safe(y) / Z: the optimum of the KL-regularised objective
    with the reward r_c(y) = r(y) for a safe y and -inf for an unsafe one (SafeDPO, arXiv 2505.20065)."""
    logits = ref_probs.log() + rewards / tau
    return torch.softmax(logits.masked_fill(safe == 0, float("-inf")), dim=-1)


def maximise_objective(bandit: Bandit, rewards: Tensor, tau: float, steps: int = 3000, lr: float = 0.1) -> Tensor:
    """Maximise J(pi) directly by gradient ascent on softmax logits (no closed form used)."""
    logits = bandit.ref_logps.clone().requires_grad_()
    opt = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (-rlhf_objective(logits, rewards, bandit.ref_logps, tau)).backward()
        opt.step()
    return torch.softmax(logits.detach(), dim=-1)


def implicit_reward(logps: Tensor, ref_logps: Tensor, tau: float) -> Tensor:
    """tau * log(pi(y) / pi_ref(y)): the reward a policy implies, up to an additive constant.

    Centred to mean zero so that rewards of different policies can be compared.
    """
    r = tau * (logps - ref_logps)
    return r - r.mean()


# ----------------------------------------------------------------------------- labelled pairs


@dataclass(frozen=True)
class Pairs:
    """Index pairs (chosen, rejected) into a bandit, with both responses' safety labels."""

    chosen: Tensor  # [P] long
    rejected: Tensor  # [P] long
    chosen_safe: Tensor  # [P]
    rejected_safe: Tensor  # [P]
    weight: Tensor | None = None  # [P] how often the pair is seen with this order (None: equally)


def helpfulness_pairs(bandit: Bandit) -> Pairs:
    """Every pair whose helpfulness differs; chosen = the more helpful response (y_hw)."""
    idx = [
        (i, j)
        for i in range(len(bandit.names))
        for j in range(len(bandit.names))
        if bandit.helpful[i] > bandit.helpful[j]
    ]
    return _pairs(bandit, idx)


def safety_pairs(bandit: Bandit) -> Pairs:
    """Every pair whose safety differs; chosen = the safe response (safety labels only)."""
    idx = [
        (i, j) for i in range(len(bandit.names)) for j in range(len(bandit.names)) if bandit.safe[i] > bandit.safe[j]
    ]
    return _pairs(bandit, idx)


def preference_pairs(bandit: Bandit, rewards: Tensor) -> Pairs:
    """Every ordered pair (i, j), i != j, weighted by the Bradley-Terry probability that a labeller
    prefers y_i: p(y_i > y_j) = sigma(r_i - r_j). A weighted mean over these pairs is the population
    loss of a preference data set whose helpfulness labels come from the reward ``rewards`` [K]."""
    idx = [(i, j) for i in range(len(bandit.names)) for j in range(len(bandit.names)) if i != j]
    pairs = _pairs(bandit, idx)
    weight = torch.sigmoid(rewards[pairs.chosen] - rewards[pairs.rejected])  # p(y_i > y_j) = sigma(r_i - r_j)
    return Pairs(pairs.chosen, pairs.rejected, pairs.chosen_safe, pairs.rejected_safe, weight)


def _pairs(bandit: Bandit, idx: list[tuple[int, int]]) -> Pairs:
    chosen = torch.tensor([i for i, _ in idx])
    rejected = torch.tensor([j for _, j in idx])
    return Pairs(chosen, rejected, bandit.safe[chosen], bandit.safe[rejected])


def pair_loss(name: str, logps: Tensor, ref_logps: Tensor, pairs: Pairs, tau: float, **kwargs) -> Tensor:
    """Mean (weighted by ``pairs.weight``) of a pairwise loss of the registry over ``pairs`` for a
    policy with ``logps`` [K]."""
    args = dict(
        chosen_logps=logps[pairs.chosen],
        rejected_logps=logps[pairs.rejected],
        ref_chosen_logps=ref_logps[pairs.chosen],
        ref_rejected_logps=ref_logps[pairs.rejected],
        beta=tau,
    )
    if name in ("bfpo", "safedpo"):
        args.update(chosen_safe=pairs.chosen_safe, rejected_safe=pairs.rejected_safe)
    per_pair = losses.get(name)(**args, **kwargs)
    if pairs.weight is None:
        return per_pair.mean()
    return (pairs.weight * per_pair).sum() / pairs.weight.sum()


def fit_policy(
    bandit: Bandit,
    name: str,
    pairs: Pairs,
    tau: float,
    steps: int = 3000,
    lr: float = 0.05,
    adam: bool = False,
    **kwargs,
) -> tuple[Tensor, list[float]]:
    """Gradient descent (SGD, or Adam with ``adam``) on a pairwise loss over softmax logits, from pi_ref.

    Returns the final log-probs [K] and the loss after every step.
    """
    logits = bandit.ref_logps.clone().requires_grad_()
    opt = (torch.optim.Adam if adam else torch.optim.SGD)([logits], lr=lr)
    trace = []
    for _ in range(steps):
        opt.zero_grad()
        loss = pair_loss(name, torch.log_softmax(logits, -1), bandit.ref_logps, pairs, tau, **kwargs)
        loss.backward()
        opt.step()
        trace.append(loss.item())
    return torch.log_softmax(logits.detach(), -1), trace


def ranking(scores: Tensor, names: tuple[str, ...]) -> list[str]:
    """Names ordered from the highest score to the lowest."""
    return [names[i] for i in torch.argsort(scores, descending=True).tolist()]
