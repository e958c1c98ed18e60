"""Batched sampling with a KV cache, without ``generate``'s per-step machinery.

Each step is one forward of the new tokens [B, 1] against the cache, then one softmax and one
``torch.multinomial`` (or an argmax) for the whole batch: no logits processors, stopping criteria or
per-row Python. It makes the same calls in the same order as ``transformers``' ``generate`` does
with ``do_sample=True, top_k=0, top_p=1.0`` (or greedy): position ids from the attention mask,
logits of the last position only, a finished row gets the pad token, the loop stops when every row
has ended; so it draws the same tokens from the same seed (a test checks that), faster.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


@torch.inference_mode()
def sample(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    pad_token_id: int,
    eos_token_id: int,
) -> torch.Tensor:
    """New tokens [B, <= max_new_tokens] after left-padded prompts ``input_ids`` [B, P] (pad after
    a row's end), sampled at ``temperature`` (0: greedy)."""
    batch = input_ids.shape[0]
    cache = DynamicCache(config=model.config)
    unfinished = torch.ones(batch, dtype=torch.long, device=input_ids.device)
    tokens, step_ids, mask = [], input_ids, attention_mask
    past = 0
    for _ in range(max_new_tokens):
        positions = mask.long().cumsum(-1) - 1
        positions.masked_fill_(mask == 0, 1)
        width = step_ids.shape[1]
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=positions[:, -width:],
            past_key_values=cache,
            cache_position=torch.arange(past, past + width, device=input_ids.device),
            use_cache=True,
            logits_to_keep=1,
        )
        past += width
        scores = out.logits[:, -1, :].to(copy=True, dtype=torch.float32)  # [B, V]
        if temperature > 0:
            if temperature != 1.0:
                scores = scores / temperature
            nxt = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            nxt = scores.argmax(-1)
        nxt = nxt * unfinished + pad_token_id * (1 - unfinished)  # [B]
        tokens.append(nxt)
        unfinished = unfinished & (nxt != eos_token_id).long()
        if not unfinished.any():
            break
        step_ids = nxt[:, None]
        mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=-1)
    return torch.stack(tokens, dim=1)
