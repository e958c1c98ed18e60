"""Models and tokenizers: tiny Llamas built from a config for CPU work, any hub causal LM for paper scale."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from bfpo import adapters, sampling
from bfpo.errors import BadInput
from bfpo.io import atomic_dir

# The models of the paper (hub ids). The paper's code does not pin model revisions.
MISTRAL_7B = "mistralai/Mistral-7B-v0.1"  # SFT start of the public-data experiment
ZEPHYR_7B_BETA = "HuggingFaceH4/zephyr-7b-beta"  # start of the red-teaming experiment

PAD, BOS, EOS = "<pad>", "<s>", "</s>"

# How a prompt and a response become text for the tiny models (hub models use their chat template).
PROMPT_FORMAT = "user: {prompt}\nassistant:"


# The Zephyr chat template, as the official BFPO code sets it for Mistral-7B (its src/alignment/data.py
# DEFAULT_CHAT_TEMPLATE, the alignment-handbook's): <|system|>, <|user|>, <|assistant|> turns, each
# ended by EOS. Rendered by transformers with trim_blocks, so only the newlines inside the quotes stay.
ZEPHYR_CHAT_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
CHAT_TEMPLATES = {"zephyr": ZEPHYR_CHAT_TEMPLATE}
"""Chat templates by name (a config's ``chat_template`` may also be a Jinja template itself)."""


def set_chat_template(tokenizer, template: str) -> None:
    """Give ``tokenizer`` the chat template ``template`` (a name of :data:`CHAT_TEMPLATES` or Jinja);
    it is saved with the tokenizer, so generation and evaluation use it too."""
    tokenizer.chat_template = CHAT_TEMPLATES.get(template, template)


def format_prompt(prompt: str, tokenizer=None, system: str | None = None) -> str:
    """The text the model is conditioned on: the tokenizer's chat template if it has one (with a
    ``system`` turn first when given; the official BFPO data add an empty one), else ours."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": prompt}
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return PROMPT_FORMAT.format(prompt=prompt)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` with ``tokenizers``, wrapped for ``transformers``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # like a Llama tokenizer, it puts BOS first when asked for special tokens (the default); the
    # trainer and the generator encode without them and add the BOS themselves
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS)


def tiny_llama(
    tokenizer,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 256,
    max_position_embeddings: int = 128,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A small Llama (about 1M parameters with the defaults and 1,024 tokens), tied embeddings."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save(model, tokenizer, path: str | os.PathLike, card: str | None = None, state_dict: dict | None = None) -> Path:
    """``save_pretrained`` model and tokenizer into ``path`` atomically, with the model card ``card``
    (:func:`bfpo.cards.model_card`) as its ``README.md``; ``state_dict``: the weights to write
    instead of the model's own (a sharded model's, gathered)."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if card is not None:
            (Path(tmp) / "README.md").write_text(card, encoding="utf-8")
    return Path(path)


def _fetch_hint(name_or_path, revision) -> str:
    """For a hub id that is not a local folder: what to fetch."""
    if Path(str(name_or_path)).exists():
        return ""
    return f" (not a local folder: fetch the hub model {name_or_path}@{revision or 'main'} where the hub is reachable)"


def load_model(
    name_or_path: str | os.PathLike, revision: str | None = None, dtype: torch.dtype | None = None, device=None
):
    """Any causal LM by hub id (``revision`` pins it) or local folder, with an error that names it,
    on ``device`` (None: where transformers loads it, the CPU). A LoRA adapter folder
    (:mod:`bfpo.lora`) loads as its base model with the adapter merged in."""
    if adapters.is_adapter(name_or_path):
        model = adapters.load_merged(name_or_path, dtype)
        return model if device is None else model.to(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), revision=revision, dtype=dtype)
        return model if device is None else model.to(device)
    except (OSError, ValueError) as e:
        hint = _fetch_hint(name_or_path, revision)
        raise OSError(f"could not load a causal LM from {name_or_path!s}{hint}: {e}") from e


def load_tokenizer(name_or_path: str | os.PathLike, revision: str | None = None):
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), revision=revision)
    except (OSError, ValueError) as e:
        hint = _fetch_hint(name_or_path, revision)
        raise OSError(f"could not load a tokenizer from {name_or_path!s}{hint}: {e}") from e
    if tok.pad_token is None:  # Llama/Mistral tokenizers ship without one
        tok.pad_token = tok.eos_token
    return tok


def count_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def select_trainable(model, patterns: list[str] | None) -> tuple[int, int]:
    """Freeze every parameter whose name contains none of ``patterns`` (None: train all).

    The paper trains only the MLP ``down_proj`` weights. A pattern that matches nothing is an
    error listing the parameter names, so a typo never trains the wrong thing.
    """
    names = [n for n, _ in model.named_parameters()]
    if patterns:
        for pattern in patterns:
            if not any(pattern in n for n in names):
                examples = sorted({n.split(".")[-2] for n in names if "." in n})
                raise BadInput(f"trainable: pattern {pattern!r} matches no parameter; names contain e.g. {examples}")
    for name, p in model.named_parameters():
        p.requires_grad_(not patterns or any(pattern in name for pattern in patterns))
    return count_parameters(model)


def context_length(model) -> int:
    """The model's context in positions: ``max_position_embeddings``, else lm-eval's default 2048."""
    return getattr(model.config, "max_position_embeddings", None) or 2048


def prompt_room(model, max_new_tokens: int) -> int:
    """How many prompt tokens fit before ``max_new_tokens`` in the model's context
    (:func:`context_length`); a clear error when none do."""
    context = context_length(model)
    if max_new_tokens >= context:
        raise BadInput(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's context of {context} positions"
        )
    return context - max_new_tokens


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    samples_per_prompt: int = 1,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    top_p: float = 1.0,
    chat: bool = True,
    sort_by_length: bool = False,
) -> list[list[str]]:
    """``samples_per_prompt`` sampled responses per prompt (greedy when ``temperature`` is 0).

    Each prompt is a user turn (:func:`format_prompt`), or with ``chat=False`` the text to continue
    as it is (after a BOS), as lm-eval's generation tasks give it. Prompts are left-padded so that
    every row's generation starts at the same position. ``sort_by_length`` batches the prompts
    longest first, so that a batch pads to similar lengths (worth it when lengths vary and the
    prompts fill several batches); the answers come back in the prompts' order. Greedy answers are
    the same up to float-level effects of the padding; sampled ones are other draws from the same
    seed, since rows meet the random stream in another order.

    A prompt too long for the model's context to leave room for the answer keeps its last
    ``max_position_embeddings - max_new_tokens`` tokens, as lm-eval's ``generate_until`` truncates
    contexts (``left_truncate_len``; log-likelihoods keep their end too, :mod:`bfpo.evaluation.loglik`):
    positions past the context were never trained, and they cost the whole batch attention and cache.
    """
    if temperature < 0:
        raise ValueError(f"temperature: must be >= 0, got {temperature}")
    room = prompt_room(model, max_new_tokens)
    model.eval()
    torch.manual_seed(seed)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts = [format_prompt(p, tokenizer) if chat else p for p in prompts for _ in range(samples_per_prompt)]
    order = list(range(len(texts)))
    if sort_by_length:
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids] if texts else []
        order.sort(key=lambda i: -lengths[i])
        texts = [texts[i] for i in order]
    outputs = []
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            if tokenizer.bos_token_id is not None and not (chat and getattr(tokenizer, "chat_template", None)):
                # beside the tokenizer's CPU tensors; the three move to the model's device together below
                bos = torch.full((len(chunk), 1), tokenizer.bos_token_id, device="cpu")
                enc["input_ids"] = torch.cat([bos, enc["input_ids"]], 1)
                enc["attention_mask"] = torch.cat([torch.ones_like(bos), enc["attention_mask"]], 1)
            enc = {k: v[:, -room:].to(model.device) for k, v in enc.items()}  # [b, <= room]
            ids, mask = enc["input_ids"], enc["attention_mask"]
            pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
            if top_p >= 1.0:  # the lean loop: the same tokens as generate() draws, faster (bfpo.sampling)
                new = sampling.sample(model, ids, mask, max_new_tokens, temperature, pad, eos)
            else:
                nucleus = dict(do_sample=True, temperature=temperature, top_k=0, top_p=top_p)
                kwargs = nucleus if temperature > 0 else dict(do_sample=False)
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos, **kwargs)
                new = gen[:, ids.shape[1] :]
            outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    in_order = [""] * len(outputs)
    for i, out in zip(order, outputs, strict=True):
        in_order[i] = out
    return [
        [o.strip() for o in in_order[i : i + samples_per_prompt]] for i in range(0, len(in_order), samples_per_prompt)
    ]
