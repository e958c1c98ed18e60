"""Log-likelihoods of continuations, encoded and batched as lm-evaluation-harness 0.4 does."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from bfpo import models


@dataclass(frozen=True)
class Request:
    """Score ``continuation`` given ``context`` (lm-eval's loglikelihood request)."""

    context: str
    continuation: str


BOS_RULES = ("tokenizer", "none")
"""How a context starts, as lm-evaluation-harness encodes it for a causal LM:

* ``"tokenizer"`` (lm-eval >= 0.4.2, e.g. 0.4.13): the tokenizer's own default, so a Llama or
  Mistral tokenizer puts its BOS first and a GPT-2, Pythia or Qwen2 tokenizer puts nothing;
* ``"none"`` (lm-eval 0.4.1, the version the BFPO paper used): never a special token.

An empty context is the prefix token (BOS, else EOS) under both rules."""

ENCODING_VERSION = 2
"""Bumped when :func:`encode_request` changes (2: lm-eval's BOS rule instead of always a BOS)."""


def prefix_token_id(tokenizer) -> int:
    """lm-eval's ``prefix_token_id``: the BOS token, else the EOS token."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _encode(tokenizer, text: str, bos_rule: str) -> list[int]:
    """lm-eval's ``tok_encode``: the tokenizer's default special tokens (rule "tokenizer"), except
    for a text that already starts with the BOS text; none at all under rule "none"."""
    special = bos_rule == "tokenizer"
    if special and tokenizer.bos_token and text.startswith(tokenizer.bos_token):
        special = False
    return tokenizer(text, add_special_tokens=special).input_ids


def encode_request(tokenizer, req: Request, bos_rule: str = "tokenizer") -> tuple[list[int], list[int]]:
    """(context ids, continuation ids), split as lm-eval splits them: the whole string is encoded
    once and the context's tokens cut off, with trailing spaces of the context moved onto the
    continuation; whether a BOS starts the context follows ``bos_rule`` (see :data:`BOS_RULES`);
    an empty context becomes the prefix token."""
    if bos_rule not in BOS_RULES:
        raise ValueError(f"bos_rule: expected one of {BOS_RULES}, got {bos_rule!r}")
    context, continuation = req.context, req.continuation
    if context == "":
        cont = tokenizer(continuation, add_special_tokens=False).input_ids
        if not cont:
            raise ValueError(f"continuation {req.continuation!r} encodes to no token")
        prefix = prefix_token_id(tokenizer)
        return ([prefix], cont) if cont[0] != prefix else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = _encode(tokenizer, context + continuation, bos_rule)
    ctx = _encode(tokenizer, context, bos_rule)
    cont = whole[len(ctx) :]
    if not cont:
        raise ValueError(f"continuation {req.continuation!r} encodes to no token")
    if not ctx:  # a context of only spaces: lm-eval would condition on nothing; use the prefix token
        ctx = [prefix_token_id(tokenizer)]
    return ctx, cont


@torch.inference_mode()
def loglikelihoods(
    model,
    tokenizer,
    requests: list[Request],
    batch_size: int = 32,
    max_length: int | None = None,
    progress=True,
    bos_rule: str = "tokenizer",
) -> list[tuple[float, bool]]:
    """(summed log-prob of the continuation, whether greedy decoding would produce it) per request.

    Requests are scored longest first so each batch pads little; a sequence longer than
    ``max_length`` (default: the model's context) keeps its end, as lm-eval does.
    """
    max_length = max_length or models.context_length(model)
    encoded = [encode_request(tokenizer, r, bos_rule) for r in requests]
    order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[tuple[float, bool] | None] = [None] * len(encoded)
    model.eval()
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc="log-likelihoods", disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        seqs = [(encoded[i][0] + encoded[i][1])[-(max_length + 1) :] for i in idx]
        width = max(len(s) for s in seqs) - 1
        # inputs: all but the last token, right-padded, made on the model's device: [B, T]
        ids = torch.tensor([s[:-1] + [pad] * (width + 1 - len(s)) for s in seqs], dtype=torch.long, device=device)
        attn = torch.tensor([[1] * (len(s) - 1) + [0] * (width + 1 - len(s)) for s in seqs], device=device)
        logprobs = model(input_ids=ids, attention_mask=attn).logits.float().log_softmax(-1)  # [B, T, V]
        for row, (i, s) in enumerate(zip(idx, seqs, strict=True)):
            n_cont = min(len(encoded[i][1]), len(s) - 1)
            # the positions predicting the continuation tokens
            positions = torch.arange(len(s) - 1 - n_cont, len(s) - 1, device=device)
            targets = torch.tensor(s[-n_cont:], device=device)
            lp = logprobs[row, positions]  # [n_cont, V]
            out[i] = (float(lp.gather(1, targets[:, None]).sum()), bool((lp.argmax(-1) == targets).all()))
    return out  # type: ignore[return-value]
