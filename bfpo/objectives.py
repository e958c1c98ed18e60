"""How the trainer reads each loss on a micro-batch, and what it logs of it.

A micro-batch of pairs becomes a :class:`PairBatch` (TRL's names: ``chosen_logps`` for y_hw, the
more helpful response, ``rejected_logps`` for y_hl, and ``ref_*`` for the reference model), a
point-wise one a :class:`PointBatch`; :data:`PAIR_LOSSES` and :data:`POINT_LOSSES` map a config's
``loss`` to the function of :mod:`bfpo.losses` that turns it into per-example losses [b].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bfpo import labels, losses


def _bfpo(b, cfg):
    return losses.bfpo_loss(*b.logps4, b.chosen_safe, b.rejected_safe, beta=cfg.beta, alpha=cfg.alpha, b1=cfg.b1)


def _dpo(b, cfg):
    return losses.dpo_loss(*b.logps4, beta=cfg.beta, label_smoothing=cfg.label_smoothing)


def _ipo(b, cfg):
    return losses.ipo_loss(*b.logps4, beta=cfg.beta)


def _safedpo(b, cfg):
    return losses.safedpo_loss(
        *b.logps4, b.chosen_safe, b.rejected_safe, beta=cfg.beta, safety_margin=cfg.safety_margin
    )


PAIR_LOSSES = {"bfpo": _bfpo, "dpo": _dpo, "ipo": _ipo, "safedpo": _safedpo}
"""Loss name -> ``f(batch, config) -> per-example losses [b]``. Baselines add theirs here."""


def _pointwise_dpo(b, cfg):
    return losses.pointwise_dpo_loss(b.logps, b.ref_logps, b.labels, beta=cfg.beta, label_type=cfg.label_type)


def _ulma(b, cfg):
    return losses.ulma_loss(b.logps, b.ref_logps, b.labels, beta=cfg.beta)


POINT_LOSSES = {"pointwise_dpo": _pointwise_dpo, "ulma": _ulma}
"""Point-wise losses (ULMA paper): ``f(PointBatch, config) -> per-example losses [b]``."""


@dataclass
class PairBatch:
    chosen_logps: torch.Tensor  # [b]
    rejected_logps: torch.Tensor  # [b]
    ref_chosen_logps: torch.Tensor  # [b]
    ref_rejected_logps: torch.Tensor  # [b]
    chosen_safe: torch.Tensor  # [b] float 0/1
    rejected_safe: torch.Tensor  # [b]
    chosen_tokens: torch.Tensor  # [b] response lengths
    rejected_tokens: torch.Tensor  # [b]

    @property
    def logps4(self):
        return self.chosen_logps, self.rejected_logps, self.ref_chosen_logps, self.ref_rejected_logps


@dataclass
class PointBatch:
    logps: torch.Tensor  # [b] summed (or, with length_normalize, token-averaged) response log-probs
    ref_logps: torch.Tensor  # [b]
    labels: torch.Tensor  # [b] z: 1 good, 0 bad (or a score in [0, 1])
    tokens: torch.Tensor  # [b] response lengths


def logged(cfg, batch, n_tok) -> dict[str, torch.Tensor]:
    """What a micro-batch adds to the step's metrics (see :func:`_step_metrics`)."""
    if cfg.mode == "preference":
        # h_pi = (log pi(y_hw) - log pi_ref(y_hw)) - (log pi(y_hl) - log pi_ref(y_hl)), the log-ratio margin
        h = batch.chosen_logps - batch.rejected_logps - batch.ref_chosen_logps + batch.ref_rejected_logps
        return {
            "h_pi": h.detach(),
            "d_chosen": (batch.chosen_logps - batch.ref_chosen_logps).detach(),
            "d_rejected": (batch.rejected_logps - batch.ref_rejected_logps).detach(),
            "chosen_logps": batch.chosen_logps.detach(),
            "rejected_logps": batch.rejected_logps.detach(),
            "combo": labels.code(batch.chosen_safe, batch.rejected_safe),
        }
    if cfg.mode == "pointwise":
        return {"d": (batch.logps - batch.ref_logps).detach(), "z": batch.labels.detach()}
    return {"tokens": n_tok.float()}


def step_metrics(step, g, cfg, lr, grad_norm, tokens, seconds) -> dict:
    record = {
        "step": step,
        "loss": float(g["loss"].mean()),
        "lr": lr,
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / max(seconds, 1e-9),
    }
    if grad_norm is not None:
        record["grad_norm"] = float(grad_norm)
    if "d" in g:  # point-wise: how far each class moved from the reference
        for sel, name in ((g["z"] >= 0.5, "positive"), (g["z"] < 0.5, "negative")):
            if sel.any():
                record[f"logp_change/{name}"] = float(g["d"][sel].mean())
    if "h_pi" in g:
        # TRL's names: the implicit rewards beta * (log pi(y) - log pi_ref(y)), their margin
        # beta * h_pi, the share with h_pi > 0, and the policy's summed log-probs
        h = g["h_pi"]
        record["rewards/chosen"] = float(cfg.beta * g["d_chosen"].mean())
        record["rewards/rejected"] = float(cfg.beta * g["d_rejected"].mean())
        record["rewards/margins"] = float(cfg.beta * h.mean())
        record["rewards/accuracies"] = float((h > 0).float().mean())
        record["logps/chosen"] = float(g["chosen_logps"].mean())
        record["logps/rejected"] = float(g["rejected_logps"].mean())
        record["chosen_logp_change"] = float(g["d_chosen"].mean())
        record["rejected_logp_change"] = float(g["d_rejected"].mean())
        # BFPO's view: the margin and accuracy within each safety combination of the pair
        for name in labels.COMBINATIONS:
            sel = g["combo"] == labels.code(*labels.SAFETY[name])
            if sel.any():
                record[f"margin/{name}"] = float(cfg.beta * h[sel].mean())
                record[f"accuracy/{name}"] = float((h[sel] > 0).float().mean())
    return record
