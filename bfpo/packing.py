"""Padding-free forward passes: every sequence of a micro-batch in one row, each attending only to itself.

A micro-batch of N (prompt, response) sequences padded to the longest spends the padding's share of
every matmul on nothing (about a quarter on SafeHelp pairs). Here the N sequences are laid end to
end in a single row of T = sum of their lengths, so the projections, the MLPs and the norms run on
the real tokens only. Position ids restart at 0 for every sequence (rotary embeddings as in the
padded pass). Attention is the one place where sequences must stay apart: :func:`varlen_attention`
(a ``transformers`` attention function, active only inside :func:`varlen`) copies each
sequence's queries, keys and values into a row of its own, runs a causal kernel (eager attention on
a CPU, the model's own elsewhere: :func:`inner_kernel`) on those [N, H, S, D] rows and copies the
real positions back, so attention costs what it costs padded and nothing more. The LM head runs only on
the positions that predict a response token. The result: the padded pass's log-probs and gradients
within float tolerance, on fewer FLOPs (the same idea as FlashAttention's ``varlen`` kernels, which
GPUs run without the copies).

    input_ids, position_ids [1, T]; for each response token: the column that predicts it (the
    one before it), the token and its sequence -> log p summed per sequence [N]
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from bfpo.logps import collate, sequence_logps, token_logps

VARLEN = "bfpo_varlen"  # the attention implementation's name while a packed row goes through the model


@dataclass
class Packed:
    input_ids: torch.Tensor  # [1, T]: the sequences end to end
    position_ids: torch.Tensor  # [1, T]: 0, 1, ... within each sequence
    cols: torch.Tensor  # [M] for each scored (response) token: the column that predicts it
    targets: torch.Tensor  # [M] the token
    seq: torch.Tensor  # [M] which sequence it belongs to
    lengths: list[int]  # [N] tokens of each sequence
    n: int  # sequences
    tokens: int  # real tokens (= T: a packed row has no padding)


@dataclass
class Layout:
    """Where the packed row's tokens go when each sequence gets a row of its own: token t of the
    row is slot ``slot[t]`` of the flattened [N, S] grid (S the longest sequence)."""

    slot: torch.Tensor  # [T]
    lengths: list[int]
    n: int
    width: int
    inner: str  # the attention kernel run on the [N, H, S, D] rows ("eager", "sdpa", ...: inner_kernel)
    masks: dict = field(default_factory=dict)  # eager attention's additive causal mask, per dtype

    @classmethod
    def of(cls, lengths: list[int], inner: str, device) -> Layout:
        width = max(lengths)
        slot = torch.cat([torch.arange(n, device=device) + i * width for i, n in enumerate(lengths)])
        return cls(slot, list(lengths), len(lengths), width, inner)

    def causal_mask(self, dtype, device) -> torch.Tensor:
        """[1, 1, S, S]: 0 on and below the diagonal, the dtype's lowest value above it."""
        if dtype not in self.masks:
            full = torch.full((self.width, self.width), torch.finfo(dtype).min, dtype=dtype, device=device)
            self.masks[dtype] = full.triu(1)[None, None]
        return self.masks[dtype]


_LAYOUT: Layout | None = None  # set by :func:`varlen` for one packed forward (and, in training, its backward)


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Causal attention within each sequence of a packed row: query [1, H, T, D], key and value
    [1, Hkv, T, D] -> ([1, T, H, D], None), the shape ``transformers``' kernels return.

    Each sequence's positions are copied into a zero-padded row of its own ([N, H, S, D]); padding
    sits after the real tokens, so causal attention keeps it out of every real position; the
    padding's outputs are dropped. ``index_copy`` and ``index_select`` are each other's backward:
    no scatter-add on the way back."""
    lay = _LAYOUT
    if lay is None:
        raise RuntimeError(f"the {VARLEN!r} attention runs only inside bfpo.packing.varlen")

    def to_rows(x):  # [1, h, T, D] -> [N, h, S, D]
        _, h, _, d = x.shape
        flat = x[0].transpose(0, 1)  # [T, h, D]
        grid = flat.new_zeros(lay.n * lay.width, h, d).index_copy(0, lay.slot, flat)
        return grid.view(lay.n, lay.width, h, d).transpose(1, 2)

    q, k, v = to_rows(query), to_rows(key), to_rows(value)
    if lay.inner == "eager":  # an additive causal mask
        mask = lay.causal_mask(q.dtype, q.device)
        out, _ = _eager(type(module))(module, q, k, v, mask, scaling=scaling, dropout=dropout)
    else:
        kernel = ALL_ATTENTION_FUNCTIONS[lay.inner]
        out, _ = kernel(module, q, k, v, None, scaling=scaling, dropout=dropout, is_causal=True)
    # out: [N, S, H, D] -> the real positions, in the row's order: [1, T, H, D]
    return out.reshape(lay.n * lay.width, *out.shape[2:]).index_select(0, lay.slot).unsqueeze(0), None


@functools.cache
def _eager(attention_class):
    """The eager attention of the attention module's model family (it takes an additive mask), or
    Llama's; looked up once per class, not on every layer's call."""
    import importlib

    from transformers.models.llama.modeling_llama import eager_attention_forward

    family = importlib.import_module(attention_class.__module__)
    return getattr(family, "eager_attention_forward", eager_attention_forward)


AttentionInterface.register(VARLEN, varlen_attention)


def inner_kernel(model_kernel: str, device) -> str | None:
    """The kernel :func:`varlen_attention` runs on the re-padded rows: on a CPU eager attention (``bmm``
    + softmax: on SafeHelp's short rows 5 % faster than SDPA's flash kernel in fp32 and far faster in
    bf16, whose SDPA backward is slow; see :mod:`bfpo.precision`), elsewhere the model's own kernel.
    None for FlashAttention kernels, which take a packed row as it is (``transformers`` reads the
    sequence boundaries from the position ids)."""
    if model_kernel.startswith("flash"):
        return None
    return "eager" if torch.device(device).type == "cpu" else model_kernel


@contextmanager
def varlen(model, lengths: list[int], device):
    """Inside: ``model``'s attention is :func:`varlen_attention` over a row of sequences of
    ``lengths``; outside, the model's own kernel, untouched (so its saved config never names ours).

    With activation checkpointing the backward pass runs the forward again, so forward and backward
    must both sit inside (``bfpo.train`` does that for every micro-batch); :func:`packed_logps`
    inside an outer ``varlen`` over the same lengths reuses it."""
    global _LAYOUT
    config = _unwrapped(model).config
    own = config._attn_implementation
    if own == VARLEN:  # already inside, e.g. the trainer's forward-and-backward context
        if _LAYOUT is None or _LAYOUT.lengths != list(lengths):
            raise RuntimeError("a packed forward pass inside another one over different sequences")
        yield
        return
    inner = inner_kernel(own, device)
    if inner is None:
        yield
        return
    _LAYOUT, config._attn_implementation = Layout.of(lengths, inner, device), VARLEN
    try:
        yield
    finally:
        _LAYOUT, config._attn_implementation = None, own


def lengths(sequences: list[tuple[list[int], list[int]]]) -> list[int]:
    """Tokens of each ``(prompt_ids, response_ids)`` sequence: what :func:`varlen` lays out."""
    return [len(p) + len(r) for p, r in sequences]


def _unwrapped(model):
    """The model inside DDP's or DeepSpeed's wrapper (``.module``); accelerate's
    ``extract_model_from_parallel`` does the same at about 1.5 ms a call."""
    while hasattr(model, "module"):
        model = model.module
    return model


def pack(sequences: list[tuple[list[int], list[int]]], device="cpu") -> Packed:
    """``[(prompt_ids, response_ids)]`` end to end in one row, with what :func:`packed_logps` scores,
    made on ``device``."""
    sizes = lengths(sequences)
    ids, pos, cols, targets, seq = [], [], [], [], []
    at = 0
    for i, (p, resp) in enumerate(sequences):
        n = len(p) + len(resp)
        ids += p + resp
        pos += range(n)
        cols += range(at + len(p) - 1, at + n - 1)  # each response token is predicted by the column before it
        targets += resp
        seq += [i] * len(resp)
        at += n
    as_long = lambda v: torch.tensor(v, dtype=torch.long, device=device)  # noqa: E731
    row = lambda v: as_long(v).unsqueeze(0)  # noqa: E731
    return Packed(row(ids), row(pos), as_long(cols), as_long(targets), as_long(seq), sizes, len(sizes), at)


def packed_logps(model, packed: Packed, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and response lengths per sequence ([N], [N]), as
    :func:`bfpo.logps.sequence_logps` gives them for the padded batch; computed on ``device``
    (default: where ``packed`` is)."""
    device = device or packed.input_ids.device
    base = _unwrapped(model)
    own = base.config._attn_implementation
    # outside a layout (the trainer's is already set): walking the modules for checkpointing only then
    if own != VARLEN and torch.is_grad_enabled() and inner_kernel(own, device):
        if getattr(base, "is_activation_checkpointing", False):
            raise RuntimeError(
                "activation checkpointing runs the forward again in the backward pass: call packed_logps and "
                "backward inside bfpo.packing.varlen(model, packed.lengths, device)"
            )
    ids, positions, cols = packed.input_ids.to(device), packed.position_ids.to(device), packed.cols.to(device)
    with varlen(model, packed.lengths, device):
        # the LM head only where a response token is predicted: [1, M, V]
        logits = model(input_ids=ids, position_ids=positions, use_cache=False, logits_to_keep=cols).logits
    per_token = token_logps(logits.float(), packed.targets.to(device).unsqueeze(0)).squeeze(0)  # [M]
    seq = packed.seq.to(device)
    sums = torch.zeros(packed.n, dtype=per_token.dtype, device=device).index_add(0, seq, per_token)
    counts = torch.bincount(seq, minlength=packed.n)
    return sums, counts


def batch_logps(model, sequences: list[tuple[list[int], list[int]]], pad_id: int, device, padding_free: bool):
    """Summed response log-probs [N], response lengths [N] and the real tokens of one forward pass
    over ``sequences``: padded to the longest (:func:`bfpo.logps.sequence_logps`), or packed into
    one row (:func:`packed_logps`), which gives the same log-probs on fewer FLOPs."""
    if padding_free:
        packed = pack(sequences, device)
        logps, n_tok = packed_logps(model, packed, device)
        return logps, n_tok, packed.tokens
    input_ids, attn, resp = collate(sequences, pad_id, device)
    logps, n_tok = sequence_logps(model, input_ids, attn, resp)
    return logps, n_tok, int(attn.sum())
