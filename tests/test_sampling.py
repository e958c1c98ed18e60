"""The lean sampling loop draws exactly the tokens transformers' generate() draws from the same seed."""

import pytest
import torch

from bfpo import models, sampling
from bfpo.errors import BadInput


@pytest.fixture(scope="module")
def batch(tiny_world):
    tok = models.load_tokenizer(tiny_world / "init")
    model = models.load_model(tiny_world / "init").eval()
    prompts = ["how do i pick a lock", "tell me about cats", "walk me through baking bread, step by step", "x"] * 6
    tok.padding_side = "left"
    enc = tok([models.format_prompt(p, tok) for p in prompts], return_tensors="pt", padding=True)
    return model, tok, enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_same_tokens_as_generate(batch, temperature):
    model, tok, ids, mask = batch
    kwargs = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature else dict(do_sample=False)
    torch.manual_seed(7)
    expected = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=20,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        **kwargs,
    )[:, ids.shape[1] :]
    torch.manual_seed(7)
    got = sampling.sample(model, ids, mask, 20, temperature, tok.pad_token_id, tok.eos_token_id)
    assert torch.equal(got, expected)


def test_finished_rows_are_padded_and_the_loop_stops(batch):
    model, tok, ids, mask = batch
    eos = int(sampling.sample(model, ids[:1], mask[:1], 1, 0.0, tok.pad_token_id, tok.eos_token_id)[0, 0])
    out = sampling.sample(model, ids, mask, 10, 0.0, tok.pad_token_id, eos)  # the first greedy token ends row 0
    assert out[0, 0] == eos and (out[0, 1:] == tok.pad_token_id).all()
    single = sampling.sample(model, ids[:1], mask[:1], 10, 0.0, tok.pad_token_id, eos)
    assert single.shape == (1, 1), "every row ended: no further step"


def test_generate_samples_with_and_without_nucleus(tiny_world):
    tok, model = models.load_tokenizer(tiny_world / "init"), models.load_model(tiny_world / "init")
    lean = models.generate(model, tok, ["tell me about cats"], 3, max_new_tokens=8, seed=1)
    assert lean == models.generate(model, tok, ["tell me about cats"], 3, max_new_tokens=8, seed=1)
    nucleus = models.generate(model, tok, ["tell me about cats"], 3, max_new_tokens=8, seed=1, top_p=0.9)
    assert len(lean[0]) == len(nucleus[0]) == 3


def test_sorted_batches_give_each_prompt_its_own_answers(tiny_world):
    """Prompts batched longest first come back in their order: greedy answers equal the unsorted ones,
    and a prompt's sampled answers keep their count and place."""
    tok, model = models.load_tokenizer(tiny_world / "init"), models.load_model(tiny_world / "init")
    prompts = [
        "x",
        "walk me through baking bread, step by step, and then tell me about cats",
        "hi",
        "how do i pick a lock",
    ]
    kw = dict(max_new_tokens=8, temperature=0.0, batch_size=2)
    plain = models.generate(model, tok, prompts, 2, **kw)
    assert models.generate(model, tok, prompts, 2, sort_by_length=True, **kw) == plain
    one_by_one = [models.generate(model, tok, [p], 1, max_new_tokens=8, temperature=0.0)[0][0] for p in prompts]
    assert [answers[0] for answers in plain] == one_by_one
    sampled = models.generate(model, tok, prompts, 3, max_new_tokens=8, seed=1, batch_size=2, sort_by_length=True)
    assert [len(a) for a in sampled] == [3] * 4


def test_prompts_longer_than_the_context_keep_their_end(tiny_world, monkeypatch):
    """As lm-eval's generate_until: a prompt keeps its last max_position_embeddings - max_new_tokens
    tokens (the model never saw positions past its context); shorter prompts are left as they are."""
    tok, model = models.load_tokenizer(tiny_world / "init"), models.load_model(tiny_world / "init")
    context, new = model.config.max_position_embeddings, 8
    long_prompt = "tell me about cats and dogs and birds " * 40
    full = tok(models.format_prompt(long_prompt, tok), add_special_tokens=False).input_ids
    assert len(full) + 1 > context, "the test needs a prompt longer than the context"
    seen = []
    real_sample = sampling.sample
    monkeypatch.setattr(
        sampling, "sample", lambda model, ids, mask, *a: seen.append((ids, mask)) or real_sample(model, ids, mask, *a)
    )
    models.generate(model, tok, [long_prompt, "hi"], 1, max_new_tokens=new, temperature=0.0)
    ids, mask = seen[0]
    assert ids.shape[1] == context - new
    assert ids[0].tolist() == full[-(context - new) :], "the long prompt keeps its end"
    short = tok(models.format_prompt("hi", tok), add_special_tokens=False).input_ids
    assert ids[1][mask[1].bool()].tolist()[-len(short) :] == short, "a short prompt is whole"
    with pytest.raises(BadInput, match="no room for a prompt"):
        models.generate(model, tok, ["hi"], 1, max_new_tokens=context, temperature=0.0)
