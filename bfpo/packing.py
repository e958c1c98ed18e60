"""Padding-free forward passes: several sequences share a row, each attending only to itself.

A micro-batch of N (prompt, response) sequences padded to the longest spends the padding's share of
every matmul on nothing (about a quarter on SafeHelp pairs). Here the sequences are placed into
rows of ``capacity`` tokens, longest first, each into the first row with room (first-fit
decreasing). Position ids restart at 0 for every sequence; given position ids and no attention
mask, ``transformers`` reads the restarts as sequence boundaries and builds a block-diagonal causal
mask, so a token attends only to the earlier tokens of its own sequence: the same log-probs as the
padded pass, with fewer rows. Within a row, attention still costs capacity^2, as in a padded row.

    input_ids, position_ids [R, C]; for each response token: its row, the column that predicts it
    (the one before it) and its sequence -> log p summed per sequence [N]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bfpo.sequences import collate, sequence_logps, token_logps


@dataclass
class Packed:
    input_ids: torch.Tensor  # [R, C]
    position_ids: torch.Tensor  # [R, C]: 0, 1, ... within each sequence (and within the padding at a row's end)
    rows: torch.Tensor  # [M] row of each scored (response) token
    cols: torch.Tensor  # [M] column of the position that predicts it
    targets: torch.Tensor  # [M] the token
    seq: torch.Tensor  # [M] which sequence it belongs to
    n: int  # sequences
    tokens: int  # real (non-padding) tokens


def rows_for(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: sequence indices per row, each row's lengths summing to <= capacity
    (a sequence longer than ``capacity`` gets a row of its own)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        for r, left in enumerate(room):
            if lengths[i] <= left:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def pack(sequences: list[tuple[list[int], list[int]]], capacity: int, pad_id: int) -> Packed:
    """``[(prompt_ids, response_ids)]`` into rows of ``capacity`` tokens (widened to the longest
    sequence if needed), with what :func:`packed_logps` scores."""
    lengths = [len(p) + len(r) for p, r in sequences]
    width = max(capacity, max(lengths))
    layout = rows_for(lengths, width)
    ids = torch.full((len(layout), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(layout), width), dtype=torch.long)
    rows, cols, targets, seq = [], [], [], []
    for r, members in enumerate(layout):
        at = 0
        for i in members:
            p, resp = sequences[i]
            n = len(p) + len(resp)
            ids[r, at : at + n] = torch.tensor(p + resp)
            pos[r, at : at + n] = torch.arange(n)
            start = at + len(p)  # first response token; predicted from the column before it
            rows += [r] * len(resp)
            cols += range(start - 1, at + n - 1)
            targets += resp
            seq += [i] * len(resp)
            at += n
        if at < width:  # the padding is a sequence of its own: nothing real attends to it
            pos[r, at:] = torch.arange(width - at)
    as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return Packed(ids, pos, as_long(rows), as_long(cols), as_long(targets), as_long(seq), len(sequences), sum(lengths))


def packed_logps(model, packed: Packed, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and response lengths per sequence ([N], [N]), as
    :func:`bfpo.sequences.sequence_logps` gives them for the padded batch; computed on ``device``
    (default: where ``packed`` is)."""
    device = device or packed.input_ids.device
    ids, positions = packed.input_ids.to(device), packed.position_ids.to(device)
    # no cache: with one, transformers would not read the position ids as sequence boundaries
    logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits  # [R, C, V]
    picked = logits[packed.rows.to(device), packed.cols.to(device)].float()  # [M, V]
    per_token = token_logps(picked.unsqueeze(0), packed.targets.to(device).unsqueeze(0)).squeeze(0)  # [M]
    seq = packed.seq.to(device)
    sums = torch.zeros(packed.n, dtype=per_token.dtype, device=device).index_add(0, seq, per_token)
    counts = torch.bincount(seq, minlength=packed.n)
    return sums, counts


def batch_logps(model, sequences: list[tuple[list[int], list[int]]], pad_id: int, device, padding_free: bool):
    """Summed response log-probs [N], response lengths [N] and the real tokens of one forward pass
    over ``sequences``: padded to the longest (:func:`bfpo.sequences.sequence_logps`), or packed into
    rows as wide as the longest (:func:`packed_logps`), which gives the same log-probs with fewer rows."""
    if padding_free:
        packed = pack(sequences, 0, pad_id)  # capacity: the longest sequence
        logps, n_tok = packed_logps(model, packed, device)
        return logps, n_tok, packed.tokens
    input_ids, attn, resp = (t.to(device) for t in collate(sequences, pad_id))
    logps, n_tok = sequence_logps(model, input_ids, attn, resp)
    return logps, n_tok, int(attn.sum())
