"""Log-probabilities of responses in a padded batch: the one computation every loss, the reference
pass and PPO share (:mod:`bfpo.packing` computes the same without the padding).

    [(prompt_ids, response_ids)] -> input_ids, attention_mask, response_mask [N, T]
    -> log pi(y | x) summed over the response tokens [N]
"""

from __future__ import annotations

import torch


def collate(sequences: list[tuple[list[int], list[int]]], pad_id: int, device):
    """``[(prompt_ids, response_ids)]`` -> input_ids, attention_mask, response_mask, all [N, T], made
    on ``device`` in one transfer each (right padding)."""
    width = max(len(p) + len(r) for p, r in sequences)
    pads = [width - len(p) - len(r) for p, r in sequences]
    input_ids = [p + r + [pad_id] * n for (p, r), n in zip(sequences, pads, strict=True)]
    attention = [[1] * (len(p) + len(r)) + [0] * n for (p, r), n in zip(sequences, pads, strict=True)]
    response = [[False] * len(p) + [True] * len(r) + [False] * n for (p, r), n in zip(sequences, pads, strict=True)]
    return (
        torch.tensor(input_ids, dtype=torch.long, device=device),
        torch.tensor(attention, dtype=torch.long, device=device),
        torch.tensor(response, dtype=torch.bool, device=device),
    )


def sequence_logps(model, input_ids, attention_mask, response_mask):
    """Summed log-probs of the response tokens, and their counts: ([N], [N]).

    Position t predicts token t+1, so logits at t are scored against ids at t+1 and the mask is
    shifted the same way; prompt and padding contribute nothing. The LM head runs only from the
    earliest response token on (``logits_to_keep``), which skips the shared prompt prefix.
    """
    T = input_ids.shape[1]
    first = int(response_mask.float().argmax(-1).min())  # earliest response position (>= 1: prompts hold BOS)
    keep = T - first + 1  # logits for positions first-1 .. T-1
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits
    logits = logits[:, :-1].float()  # [N, T-first, V], predicting tokens first .. T-1
    targets = input_ids[:, first:]  # [N, T-first]
    mask = response_mask[:, first:]  # [N, T-first]
    return (token_logps(logits, targets) * mask).sum(-1), mask.sum(-1)


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(x_t) = logit[x_t] - logsumexp(logit) per position: logits [N, T, V], targets [N, T] -> [N, T]
    (no [N, T, V] log-softmax is kept)."""
    return torch.gather(logits, 2, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
