"""The fast paths give the plain path's numbers: padding-free rows (log-probs, gradients, losses),
torch.compile and the fused AdamW (losses)."""

import pytest
import torch

from bfpo import models, packing, sequences


def _sequences(tiny_world, n=12):
    tok = models.load_tokenizer(tiny_world / "init")
    enc = sequences.Encoding(max_length=64, max_prompt_length=32)
    pairs = sequences.load_examples(str(tiny_world / "pairs"), "preference", "pairs")[:n]
    items, _ = sequences.tokenize(pairs, tok, enc, "preference")
    return sequences.micro_batch_sequences(items), tok.pad_token_id


def test_packed_row_restarts_positions_and_holds_every_token(tiny_world):
    seqs, _ = _sequences(tiny_world)
    packed = packing.pack(seqs)
    assert packed.input_ids.shape == (1, sum(len(p) + len(r) for p, r in seqs)), "one row, no padding"
    assert packed.tokens == packed.input_ids.shape[1] and packed.lengths == [len(p) + len(r) for p, r in seqs]
    assert len(packed.targets) == sum(len(r) for _, r in seqs)
    # a scored token sits right after the column that predicts it, in the same sequence
    assert torch.equal(packed.input_ids[0, packed.cols + 1], packed.targets)
    assert (packed.position_ids[0, packed.cols + 1] == packed.position_ids[0, packed.cols] + 1).all()


def test_layout_puts_each_sequence_in_a_row_of_its_own():
    lay = packing.Layout.of([3, 1, 2], "sdpa", "cpu")
    assert lay.width == 3 and lay.slot.tolist() == [0, 1, 2, 3, 6, 7]
    assert lay.causal_mask(torch.float32, "cpu")[0, 0].ne(0).tolist() == [
        [False, True, True],
        [False, False, True],
        [False, False, False],
    ]


@pytest.mark.parametrize("inner", ["sdpa", "eager", None])
def test_packed_logps_and_gradients_equal_the_padded_ones(tiny_world, inner, monkeypatch):
    """Whichever kernel attends within the re-padded rows (eager on a CPU, SDPA on a GPU), or none
    (as for FlashAttention: the row goes to the model as it is, and ``transformers`` reads the
    sequence boundaries from the position ids)."""
    seqs, pad = _sequences(tiny_world)
    model = models.load_model(tiny_world / "init")
    monkeypatch.setattr(packing, "inner_kernel", lambda own, device: inner)
    grads = {}
    for padding_free in (False, True):
        model.zero_grad()
        logps, n_tok, real = packing.batch_logps(model, seqs, pad, "cpu", padding_free)
        logps.sum().backward()
        grads[padding_free] = (logps.detach(), n_tok, real, [p.grad.clone() for p in model.parameters()])
    (a, na, ra, ga), (b, nb, rb, gb) = grads[False], grads[True]
    assert torch.allclose(a, b, atol=1e-4) and torch.equal(na, nb)
    assert rb == ra, "a packed row holds the padded batch's real tokens, no more"
    assert all(torch.allclose(x, y, atol=1e-4, rtol=1e-3) for x, y in zip(ga, gb, strict=True))
    assert model.config._attn_implementation == "sdpa", "the model's own kernel is back after the pass"


def test_inner_kernel_per_device():
    assert packing.inner_kernel("sdpa", "cpu") == "eager"
    assert packing.inner_kernel("sdpa", "cuda") == "sdpa"
    assert packing.inner_kernel("flash_attention_2", "cuda") is None, "FlashAttention reads packed rows itself"


@pytest.mark.parametrize("checkpointing", [False, True])
def test_padding_free_training_gives_the_padded_losses(train_variants, checkpointing):
    """Also with activation checkpointing, whose backward runs the forward again."""
    runs = train_variants(
        {"padded": {"padding_free": False}, "packed": {"padding_free": True}}, gradient_checkpointing=checkpointing
    )
    (l1, s1), (l2, s2) = runs["padded"], runs["packed"]
    assert s1["tokens"] == s2["tokens"]
    assert l1 == pytest.approx(l2, rel=1e-4, abs=1e-4)


def test_packed_backward_under_checkpointing_needs_the_layout(tiny_world):
    """Outside :func:`packing.varlen` the recomputed forward would attend across sequences: refused."""
    seqs, _ = _sequences(tiny_world, n=4)
    model = models.load_model(tiny_world / "init")
    model.gradient_checkpointing_enable()
    model.train()
    with pytest.raises(RuntimeError, match="activation checkpointing"):
        packing.packed_logps(model, packing.pack(seqs))
    with packing.varlen(model, packing.lengths(seqs), "cpu"):
        logps, _ = packing.packed_logps(model, packing.pack(seqs))
        logps.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
def test_compiled_model_and_fused_optimizer_track_the_eager_run(train_variants):
    """torch.compile (about a minute of compiling on 2 cores) and the fused AdamW change the numbers
    at float level only: the losses agree to 1e-2 (relative) over 4 steps."""
    runs = train_variants({"eager": {}, "fast": {"compile": True, "fused_optimizer": True}}, buffer_data=None)
    assert runs["fast"][0] == pytest.approx(runs["eager"][0], rel=1e-2, abs=1e-2)
