"""One trainer on ``accelerate`` for SFT and every pairwise preference loss of :mod:`bfpo.losses`.

    python -m bfpo.train --config configs/paper_bfpo.yaml
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m bfpo.train --config ...

How a step works (global batch G = per_device_batch_size x processes x gradient_accumulation_steps):

* the step's examples are fixed by (seed, step) alone. With ``buffer_mode: share`` a share
  ``buffer_ratio`` of the G examples comes from the helpful-only buffer, the rest from the training
  pairs, shuffled together. With ``buffer_mode: add`` (the official BFPO code) the step takes G
  training pairs AND G buffer pairs, each micro-batch ``per_device_batch_size`` of each, and the
  loss is mean(training losses) + mean(buffer losses). Rank r takes micro-batch slices, so
  1 process and 2 processes see the same global batch;
* chosen and rejected go through the model in ONE forward pass ([2b, T]); log-probs are summed
  over response tokens only (prompt and padding masked);
* reference log-probs are computed once before training (with the start model, sharded across
  processes) and cached on disk, keyed by the model's weights and the tokenized data;
* the loss of each micro-batch is sum(per-example losses) / G (x processes, since DDP averages
  gradients), so the gradient is the mean over the global batch however it is split.

Checkpoints (model, optimizer, scheduler, random states) are written every ``save_every`` steps
with ``accelerator.save_state`` into ``checkpoints/step-NNNNNN`` (:mod:`bfpo.checkpoints`: atomic,
sha256 manifest, the newest ``keep_checkpoints`` kept); a re-run with the same config resumes from
the newest intact one and ends where an uninterrupted run ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from bfpo import checkpoints, compute, configs, losses, models
from bfpo import data as bdata
from bfpo.errors import BadInput, run_cli
from bfpo.io import atomic_path, write_json

log = logging.getLogger("bfpo.train")

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything a run needs; YAML files hold the same keys."""

    model: str  # start (and reference) model: local folder or hub id
    output_dir: str
    train_data: str  # a folder written by bfpo.data.save, or a .jsonl in the pair (or SFT) schema
    mode: str = "preference"  # "preference" (pairs), "pointwise" (single responses with a label z) or "sft"
    loss: str = "bfpo"  # a loss of PAIR_LOSSES (preference mode) or POINT_LOSSES (pointwise mode)
    revision: str | None = None  # hub revision of `model`
    buffer_data: str | None = None  # helpful-only pairs mixed into every step (BFPO's buffer)
    buffer_ratio: float = 0.5  # buffer_mode "share": share of each global batch taken from the buffer
    buffer_mode: str = "share"  # "share" a global batch with the buffer, or "add" an equal buffer batch (official)
    max_train_examples: int | None = None  # use only the first N training examples
    beta: float = 0.1  # KL strength (the BFPO paper's tau)
    alpha: float = 0.5  # BFPO's B2
    b1: float = 3.0  # BFPO's B1
    label_smoothing: float = 0.0  # DPO only
    label_type: str = "binary"  # point-wise DPO: "binary" z in {0, 1} or "continuous" z in [0, 1]
    length_normalize: bool = False  # point-wise losses on token-averaged log-probs (the official ULMA code)
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    num_epochs: float = 1.0
    max_steps: int | None = None  # overrides num_epochs
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 128
    max_prompt_length: int = 64
    trainable: list[str] | None = None  # name patterns of trained parameters (paper: ["down_proj"])
    mixed_precision: str = "auto"  # "auto" (bf16 where supported), "no", "bf16"
    gradient_checkpointing: bool = False
    seed: int = 0
    save_every: int = 0  # steps between checkpoints; 0: none until the end
    snapshot_every: int = 0  # steps between kept model snapshots with the FLOPs so far (curves); 0: none
    log_every: int = 1
    ref_cache_dir: str | None = None  # default: <output_dir>/ref_cache
    reference_batch_size: int = 64  # pairs per reference forward pass (no grad: can exceed the training batch)
    num_threads: int | None = None  # torch CPU threads per process
    progress: bool = True
    chat_template: str | None = None  # "zephyr" (the official recipe) or a Jinja template; None: the tokenizer's
    system_prompt: str | None = None  # with a chat template: a system turn first ("" = empty, as the official data)
    sft_loss: str = "response"  # SFT: the loss on the "response" tokens, or on "all" tokens (the official SFT)
    packing: bool = False  # SFT with sft_loss "all": pack examples into max_length sequences (the official SFT)
    keep_checkpoints: int = 2  # checkpoints kept (newest first); a damaged one falls back to the one before
    start_over: bool = False  # when no intact checkpoint is left: train from step 0 (else stop and say so)

    def __post_init__(self):
        if self.mode not in ("preference", "pointwise", "sft"):
            raise ValueError(f"mode: expected 'preference', 'pointwise' or 'sft', got {self.mode!r}")
        registry = {"preference": PAIR_LOSSES, "pointwise": POINT_LOSSES}.get(self.mode)
        if registry is not None and self.loss not in registry:
            losses.get(self.loss)  # an unknown name gets the registry's error listing every loss
            raise ValueError(f"loss {self.loss!r} does not fit mode {self.mode!r}; it takes {sorted(registry)}")
        if self.label_type not in ("binary", "continuous"):
            raise ValueError(f"label_type: expected 'binary' or 'continuous', got {self.label_type!r}")
        if not 0.0 <= self.buffer_ratio < 1.0:
            raise ValueError(f"buffer_ratio: must lie in [0, 1), got {self.buffer_ratio}")
        if self.sft_loss not in ("response", "all"):
            raise ValueError(f"sft_loss: expected 'response' or 'all', got {self.sft_loss!r}")
        if self.packing and not (self.mode == "sft" and self.sft_loss == "all"):
            raise ValueError("packing: only SFT with sft_loss 'all' packs sequences (a packed sequence has no prompt)")
        if self.sft_loss == "all" and self.mode != "sft":
            raise ValueError(f"sft_loss: 'all' is for mode 'sft', not {self.mode!r}")
        if self.buffer_mode not in ("share", "add"):
            raise ValueError(f"buffer_mode: expected 'share' or 'add', got {self.buffer_mode!r}")
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "max_length", "max_prompt_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ValueError(f"mixed_precision: expected 'auto', 'no' or 'bf16', got {self.mixed_precision!r}")
        self.adam_betas = tuple(self.adam_betas)
        configs.check_ranges(
            self,
            positive=("beta", "learning_rate", "num_epochs", "max_grad_norm", "b1"),
            at_least_one=("reference_batch_size", "log_every", "keep_checkpoints", "max_steps", "max_train_examples")
            + ("num_threads",),
            non_negative=("save_every", "snapshot_every"),
            unit=("warmup_ratio", "weight_decay"),
        )
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing: must lie in [0, 0.5), got {self.label_smoothing}")
        if self.b1 == 1.0:
            raise ValueError("b1: must differ from 1 (BFPO's B3 = 1 / (B1 - 1))")
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(f"adam_betas: each must lie in [0, 1), got {list(self.adam_betas)}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler: expected one of {', '.join(LR_SCHEDULERS)}, got {self.lr_scheduler!r}")
        if self.buffer_data is not None and self.mode != "preference":
            raise ValueError(f"buffer_data: only the preference mode mixes in a buffer, not mode {self.mode!r}")
        if self.label_smoothing and not (self.mode == "preference" and self.loss == "dpo"):
            raise ValueError(f"label_smoothing: only the DPO loss takes it, not {self.loss!r}")

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> TrainConfig:
        """Every key checked (type, range, combination); errors are ConfigError naming ``where`` and the key."""
        return configs.build(cls, values, where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
        return configs.from_yaml(cls, path, overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


# ---------------------------------------------------------------------------------------------
# Pairwise losses: how the trainer calls each one
# ---------------------------------------------------------------------------------------------


def _bfpo(b, cfg):
    return losses.bfpo_loss(*b.logps4, b.chosen_safe, b.rejected_safe, beta=cfg.beta, alpha=cfg.alpha, b1=cfg.b1)


def _dpo(b, cfg):
    return losses.dpo_loss(*b.logps4, beta=cfg.beta, label_smoothing=cfg.label_smoothing)


def _ipo(b, cfg):
    return losses.ipo_loss(*b.logps4, beta=cfg.beta)


PAIR_LOSSES = {"bfpo": _bfpo, "dpo": _dpo, "ipo": _ipo}
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


# ---------------------------------------------------------------------------------------------
# Tokenizing and log-probs
# ---------------------------------------------------------------------------------------------


def load_examples(path: str, mode: str, where: str) -> list[dict]:
    """Examples for ``mode`` from a saved Dataset folder or a jsonl file, every record checked in
    Python before any Arrow conversion (:func:`bfpo.data.check_records`); each keeps its ``line``."""
    p = Path(path)
    if p.is_dir():
        rows = enumerate(bdata.load(p).to_list(), start=1)
        return bdata.check_records(rows, mode, f"{path} (saved dataset; line = row)")
    if p.is_file():
        return bdata.check_records(bdata.read_jsonl(p), mode, str(path))
    raise FileNotFoundError(f"{where}: {path} is neither a saved dataset folder nor a file")


def encode_prompt(tokenizer, prompt: str, max_prompt_length: int, system: str | None = None) -> list[int]:
    ids = tokenizer(models.format_prompt(prompt, tokenizer, system), add_special_tokens=False).input_ids
    if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    return ids[-max_prompt_length:]  # keep the end of a long prompt, as TRL does


def encode_response(tokenizer, response: str, budget: int) -> list[int]:
    """The response's ids and EOS, at most ``budget``. After a chat template's generation prompt (which
    ends the assistant tag with a newline) the text follows directly; after ours, after a space."""
    lead = "" if getattr(tokenizer, "chat_template", None) else " "
    ids = tokenizer(lead + response.strip(), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return ids[: max(budget, 0)]


def encode_dialogue(tokenizer, messages: list[dict], system: str | None = None) -> list[int]:
    """A whole chat as the official SFT trains on it (sft_loss "all"). With a chat template: BOS, the
    rendered dialogue (a ``system`` turn first when given), and EOS, as TRL's packing dataset joins
    texts. Without one: BOS, then each exchange as :func:`encode_prompt` and :func:`encode_response`
    write it (so a one-exchange dialogue is exactly prompt + response)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    if getattr(tokenizer, "chat_template", None):
        chat = ([{"role": "system", "content": system}] if system is not None else []) + messages
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        return bos + ids[len(bos) if ids[: len(bos)] == bos else 0 :] + [tokenizer.eos_token_id]
    turns = [m for m in messages if m["role"] != "system"]
    ids = list(bos)
    for user, reply in zip(turns[::2], turns[1::2], strict=True):
        ids += tokenizer(models.format_prompt(user["content"]), add_special_tokens=False).input_ids
        ids += encode_response(tokenizer, reply["content"], 10**9)
    return ids


def tokenize(examples: list[dict], tokenizer, cfg: TrainConfig, mode: str) -> tuple[list[dict], list[tuple]]:
    """Token ids per example, and the examples dropped because a response was truncated away entirely
    (the prompt filled ``max_length``), as ``(line, field)``: ``line`` is the example's ``"line"`` key
    (set by :func:`load_examples`) or its 1-based position."""
    out, dropped = [], []
    # packed examples are kept whole: the chunks of max_length are cut from their concatenation
    keep_whole = cfg.packing and mode == "sft"
    max_prompt, max_total = (10**9, 10**9) if keep_whole else (cfg.max_prompt_length, cfg.max_length)
    for k, ex in enumerate(examples):
        prompt_ids = encode_prompt(tokenizer, ex["prompt"], max_prompt, cfg.system_prompt)
        budget = max_total - len(prompt_ids)
        line = ex.get("line", k + 1)
        chat = ex.get("messages")
        if mode == "sft" and cfg.sft_loss == "all" and (chat is not None or getattr(tokenizer, "chat_template", None)):
            whole = encode_dialogue(tokenizer, chat or _exchange(ex), cfg.system_prompt)[:max_total]
            out.append({"prompt": whole[:1], "responses": [whole[1:]], "label": 1.0})
            continue
        if mode in ("sft", "pointwise"):
            resp = encode_response(tokenizer, ex["response"], budget)
            if not resp:
                dropped.append((line, "response"))
                continue
            if mode == "sft" and cfg.sft_loss == "all":  # every token after the first is a target
                whole = prompt_ids + resp
                out.append({"prompt": whole[:1], "responses": [whole[1:]], "label": 1.0})
                continue
            out.append({"prompt": prompt_ids, "responses": [resp], "label": float(ex.get("label", 1.0))})
            continue
        chosen = encode_response(tokenizer, ex["chosen"], budget)
        rejected = encode_response(tokenizer, ex["rejected"], budget)
        if not chosen or not rejected:
            dropped.append((line, "chosen" if not chosen else "rejected"))
            continue
        out.append(
            {
                "prompt": prompt_ids,
                "responses": [chosen, rejected],
                "safe": [float(ex["chosen_safe"]), float(ex["rejected_safe"])],
            }
        )
    if mode == "sft" and cfg.packing:
        out = pack(out, cfg.max_length)
    return out, dropped


def check_dialogues(examples: list[dict], cfg: TrainConfig) -> None:
    """Whole dialogues (``messages`` of several exchanges) are trained on every token (sft_loss "all");
    any other loss would see only their first exchange, so it is refused, naming the record."""
    if cfg.mode == "sft" and cfg.sft_loss == "all":
        return
    for k, ex in enumerate(examples):
        turns = [m for m in ex.get("messages") or () if m["role"] != "system"]
        if len(turns) > 2:
            raise bdata.DataError(
                cfg.train_data, ex.get("line", k + 1), "messages", f"a dialogue of {len(turns)} turns needs mode "
                "'sft' with sft_loss 'all' (the official SFT); for a response-only loss keep its first exchange "
                "(ultrachat_sft(turns='first'))"
            )


def _exchange(ex: dict) -> list[dict]:
    return [{"role": "user", "content": ex["prompt"]}, {"role": "assistant", "content": ex["response"]}]


def pack(items: list[dict], length: int) -> list[dict]:
    """Sequences packed into chunks of ``length`` tokens, as the official SFT (TRL's constant-length
    packing): every example's ids (each ending in EOS) are concatenated in order and cut into full
    chunks; the last, partial chunk is dropped, and attention crosses example boundaries."""
    stream = [t for it in items for t in it["prompt"] + it["responses"][0]]
    chunks = [stream[i : i + length] for i in range(0, len(stream) - length + 1, length)]
    return [{"prompt": c[:1], "responses": [c[1:]], "label": 1.0} for c in chunks]


def describe_dropped(path: str, dropped: list[tuple], cfg: TrainConfig, what: str = "training example(s)") -> str:
    """One line naming the file and the first records whose response was truncated away."""
    shown = ", ".join(f"line {line} field {field!r}" for line, field in dropped[:5])
    more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
    return (
        f"{path}: skipped {len(dropped)} {what} whose response was truncated away (the prompt, cut to "
        f"max_prompt_length {cfg.max_prompt_length}, fills max_length {cfg.max_length}): {shown}{more}"
    )


def collate(sequences: list[tuple[list[int], list[int]]], pad_id: int):
    """``[(prompt_ids, response_ids)]`` -> input_ids, attention_mask, response_mask, all [N, T]."""
    width = max(len(p) + len(r) for p, r in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    response = torch.zeros((len(sequences), width), dtype=torch.bool)
    for i, (p, r) in enumerate(sequences):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(p + r)
        attention[i, :n] = 1
        response[i, len(p) : n] = True
    return input_ids, attention, response


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
    # log p(x_t) = logit[x_t] - logsumexp(logits): no [N, T, V] log-softmax is kept
    token_logps = torch.gather(logits, 2, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def micro_batch_sequences(items: list[dict]) -> list[tuple[list[int], list[int]]]:
    """All chosen first, then all rejected: one concatenated forward pass for the pair batch."""
    n = len(items[0]["responses"])
    return [(it["prompt"], it["responses"][k]) for k in range(n) for it in items]


# ---------------------------------------------------------------------------------------------
# The schedule of examples: fixed by (seed, step), independent of the number of processes
# ---------------------------------------------------------------------------------------------


class StepSchedule:
    """Which example ids make up global step ``s``; ids >= n_main index the buffer.

    ``mode="share"``: ``global_batch`` ids, ``buffer_ratio`` of them from the buffer, shuffled
    together. ``mode="add"``: ``global_batch`` training ids and as many buffer ids, laid out so that
    each chunk of ``2 * micro`` ids (one micro-batch) holds ``micro`` of each.
    """

    def __init__(
        self,
        n_main: int,
        n_buffer: int,
        global_batch: int,
        buffer_ratio: float,
        seed: int,
        mode: str = "share",
        micro: int | None = None,
    ):
        self.n_main, self.n_buffer, self.seed, self.mode = n_main, n_buffer, seed, mode
        if mode == "add" and n_buffer:
            self.from_main, self.from_buffer = global_batch, global_batch
            self.micro = micro or global_batch
            if global_batch % self.micro:
                raise ValueError(f"micro-batch {self.micro} does not divide the global batch {global_batch}")
        else:
            self.from_buffer = round(global_batch * buffer_ratio) if n_buffer else 0
            self.from_main = global_batch - self.from_buffer
        if self.from_main < 1:
            raise ValueError("buffer_ratio leaves no room for training pairs in a global batch")
        self._perms: dict[tuple[str, int], list[int]] = {}

    def _stream(self, name: str, n: int, start: int, count: int) -> list[int]:
        out = []
        for pos in range(start, start + count):
            epoch, i = divmod(pos, n)
            key = (name, epoch)
            if key not in self._perms:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 2 + (name == "buffer"))
                self._perms[key] = torch.randperm(n, generator=g).tolist()
                self._perms.pop((name, epoch - 2), None)
            out.append(self._perms[key][i])
        return out

    def steps_per_epoch(self) -> float:
        return self.n_main / self.from_main

    def ids(self, step: int) -> list[int]:
        ids = self._stream("main", self.n_main, step * self.from_main, self.from_main)
        if self.from_buffer and self.mode == "add" and self.n_buffer:
            stream = self._stream("buffer", self.n_buffer, step * self.from_buffer, self.from_buffer)
            buf = [self.n_main + b for b in stream]
            m = self.micro
            return [i for c in range(0, len(ids), m) for i in ids[c : c + m] + buf[c : c + m]]
        if self.from_buffer:
            buf = self._stream("buffer", self.n_buffer, step * self.from_buffer, self.from_buffer)
            ids += [self.n_main + b for b in buf]
            g = torch.Generator().manual_seed(self.seed * 7919 + step)
            ids = [ids[k] for k in torch.randperm(len(ids), generator=g).tolist()]
        return ids


# ---------------------------------------------------------------------------------------------
# Reference log-probs, cached on disk
# ---------------------------------------------------------------------------------------------


def model_fingerprint(name_or_path: str, revision: str | None) -> str:
    """sha256 of a local model's weight files, else the hub id and revision."""
    p = Path(name_or_path)
    h = hashlib.sha256()
    files = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")) if p.is_dir() else []
    if not files:
        h.update(f"{name_or_path}@{revision}".encode())
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def data_fingerprint(items: list[dict]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it["prompt"], it["responses"]]).encode())
    return h.hexdigest()


@torch.inference_mode()
def reference_logps(model, items, batch_size, accelerator, pad_id, desc="reference log-probs") -> torch.Tensor:
    """Log-probs [len(items), n_responses] under ``model``; each process takes every world-th item.

    Items are visited longest first, so that each batch pads to similar lengths (no grad is kept,
    so batches can be several times the training batch).
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    n = len(items)
    per_rank = math.ceil(n / world)
    mine = [min(rank + world * k, n - 1) for k in range(per_rank)]  # padded with the last item
    longest = [len(items[i]["prompt"]) + max(map(len, items[i]["responses"])) for i in mine]
    order = sorted(range(per_rank), key=lambda k: -longest[k])
    n_resp = len(items[0]["responses"])
    out = torch.zeros(per_rank, n_resp)
    was_training = model.training
    model.eval()
    bar = tqdm(range(0, per_rank, batch_size), desc=desc, disable=not accelerator.is_main_process, leave=False)
    for start in bar:
        ks = order[start : start + batch_size]
        chunk = [items[mine[k]] for k in ks]
        ids, attn, resp = (t.to(accelerator.device) for t in collate(micro_batch_sequences(chunk), pad_id))
        logps, _ = sequence_logps(model, ids, attn, resp)
        out[ks] = logps.view(n_resp, len(chunk)).T.float().cpu()
    gathered = accelerator.gather(out.to(accelerator.device)).cpu().view(world, per_rank, n_resp)
    full = torch.zeros(n, n_resp)
    for r in range(world):
        idx = [r + world * k for k in range(per_rank) if r + world * k < n]
        full[idx] = gathered[r, : len(idx)]
    model.train(was_training)
    return full


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


def check_inputs(cfg: TrainConfig, where: str = "config") -> None:
    """The files and models ``cfg`` names exist (or the model looks like a hub id); raises ConfigError."""
    configs.require_model(cfg.model, where, "model")
    configs.require_path(cfg.train_data, where, "train_data", "saved dataset folder or .jsonl file")
    configs.require_path(cfg.buffer_data, where, "buffer_data", "saved dataset folder or .jsonl file")
    if Path(cfg.output_dir).is_file():
        raise configs.ConfigError(where, "output_dir", f"{cfg.output_dir} is a file, not a folder")


def _mixed_precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return cfg.mixed_precision


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as configured; returns the summary also written to ``train_summary.json``."""
    from accelerate import Accelerator
    from transformers import get_scheduler

    check_inputs(cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    done = completed(out, cfg)
    if done is not None:
        log.info("%s already holds a finished run of this config; nothing to do", out)
        return done
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg))
    main = accelerator.is_main_process
    world = accelerator.num_processes
    # --- data: every record checked before anything else (cheap, and a bad file stops here)
    examples = load_examples(cfg.train_data, cfg.mode, "train_data")
    if cfg.max_train_examples:
        examples = examples[: cfg.max_train_examples]
    check_dialogues(examples, cfg)
    buffer = load_examples(cfg.buffer_data, "preference", "buffer_data") if cfg.buffer_data else None
    torch.manual_seed(cfg.seed)

    tokenizer = models.load_tokenizer(cfg.model, cfg.revision)
    if cfg.chat_template:
        models.set_chat_template(tokenizer, cfg.chat_template)
    model = models.load_model(cfg.model, cfg.revision)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    trainable, total = models.select_trainable(model, cfg.trainable)

    items, dropped = tokenize(examples, tokenizer, cfg, cfg.mode)
    n_main = len(items)
    n_buffer, dropped_buffer = 0, []
    if buffer is not None:
        buffer_items, dropped_buffer = tokenize(buffer, tokenizer, cfg, "preference")
        items += buffer_items
        n_buffer = len(buffer_items)
    for path, what, lost in ((cfg.train_data, "training", dropped), (cfg.buffer_data, "buffer", dropped_buffer)):
        if lost:
            log.warning("%s", describe_dropped(path, lost, cfg, f"{what} example(s)"))
    if not n_main:
        raise BadInput(f"{cfg.train_data}: no training example left after truncation to max_length {cfg.max_length}")

    global_batch = cfg.per_device_batch_size * world * cfg.gradient_accumulation_steps
    if n_buffer and cfg.buffer_mode == "share" and not float(global_batch * cfg.buffer_ratio).is_integer():
        raise configs.ConfigError(
            "config",
            "buffer_ratio",
            f"{cfg.buffer_ratio} x the global batch {global_batch} (per_device_batch_size {cfg.per_device_batch_size}"
            f" x {world} process(es) x gradient_accumulation_steps {cfg.gradient_accumulation_steps}) is not a "
            "whole number of buffer pairs",
        )
    schedule = StepSchedule(
        n_main, n_buffer, global_batch, cfg.buffer_ratio, cfg.seed, cfg.buffer_mode, cfg.per_device_batch_size
    )
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.num_epochs * schedule.steps_per_epoch()))

    # --- the output folder: touched only now, after every input has been read and checked
    if main:
        out.mkdir(parents=True, exist_ok=True)
        saved = out / "config.json"
        if saved.is_file() and not _same_run(json.loads(saved.read_text()), cfg):
            # another config ran here: its checkpoint, metrics and results must not be resumed or kept
            log.warning("%s held a run of another config; starting afresh", out)
            for stale in ("checkpoints", "snapshots", "model", "ranks"):
                shutil.rmtree(out / stale, ignore_errors=True)
            for stale in ("train_summary.json", "metrics.jsonl"):
                (out / stale).unlink(missing_ok=True)
        write_json(saved, {**cfg.to_dict(), "trainer_version": TRAINER_VERSION})
    accelerator.wait_for_everyone()
    # which checkpoint to resume (a damaged one falls back to the previous); known before the expensive work
    resume, damaged = checkpoints.latest_intact(out, cfg.start_over)
    accelerator.wait_for_everyone()
    if main:
        checkpoints.discard(damaged)

    # --- reference log-probs (the start model is the reference)
    ref = None
    ref_tokens = 0  # counted even when cached: the method needs that pass
    if cfg.mode != "sft":
        ref_tokens = sum(len(it["prompt"]) * len(it["responses"]) + sum(map(len, it["responses"])) for it in items)
        cache_dir = Path(cfg.ref_cache_dir or out / "ref_cache")
        key = hashlib.sha256(
            (model_fingerprint(cfg.model, cfg.revision) + data_fingerprint(items)).encode()
        ).hexdigest()[:24]
        cache = cache_dir / f"ref_logps_{key}.pt"
        if cache.is_file():
            ref = torch.load(cache)
        else:
            model.to(accelerator.device)
            ref = reference_logps(model, items, cfg.reference_batch_size, accelerator, tokenizer.pad_token_id)
            if main:
                with atomic_path(cache) as tmp:
                    torch.save(ref, tmp)
        if ref.shape != (len(items), len(items[0]["responses"])):
            raise ValueError(f"{cache}: cached reference log-probs do not match the data; delete the file")

    # --- optimisation
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=cfg.adam_betas, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    model.train()

    metrics_path = out / "metrics.jsonl"
    start_step, train_tokens = 0, 0
    if resume is not None:
        ckpt, manifest = resume
        accelerator.load_state(str(ckpt))
        start_step, train_tokens = manifest["step"], manifest["state"]["train_tokens"]
        if main:
            log.info("resuming from %s at step %d", ckpt, start_step)
            _truncate_metrics(metrics_path, start_step)
    elif main and metrics_path.exists():
        metrics_path.unlink()

    pad_id = tokenizer.pad_token_id
    per_dev = cfg.per_device_batch_size
    # examples per micro-batch: per_dev, or per_dev training + per_dev buffer pairs in buffer_mode "add"
    chunk = per_dev * (2 if n_buffer and cfg.buffer_mode == "add" else 1)
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        desc=f"{cfg.mode} ({cfg.loss if cfg.mode != 'sft' else 'nll'})",
        disable=not (main and cfg.progress),
    )
    last = {}
    t_start = time.perf_counter()
    for step in range(start_step, total_steps):
        t0 = time.perf_counter()
        ids = schedule.ids(step)
        if cfg.mode == "sft":
            global_tokens = sum(len(items[i]["responses"][0]) for i in ids)
        if cfg.loss == "ulma" and cfg.mode == "pointwise":  # the class sizes of this global batch
            n_pos = sum(items[i]["label"] >= 0.5 for i in ids)
        stats = defaultdict(list)
        tokens = 0
        for m in range(cfg.gradient_accumulation_steps):
            lo = (m * world + accelerator.process_index) * chunk
            mb = [items[i] for i in ids[lo : lo + chunk]]
            input_ids, attn, resp = (t.to(accelerator.device) for t in collate(micro_batch_sequences(mb), pad_id))
            tokens += int(attn.sum())
            sync = m == cfg.gradient_accumulation_steps - 1
            with nullcontext() if sync else accelerator.no_sync(model), accelerator.autocast():
                logps, n_tok = sequence_logps(model, input_ids, attn, resp)
                if cfg.mode == "sft":
                    per_example = -logps
                    loss = per_example.sum() / global_tokens * world
                elif cfg.mode == "pointwise":
                    mb_ids = torch.tensor(ids[lo : lo + chunk])
                    scale = n_tok.clamp(min=1).to(logps) if cfg.length_normalize else torch.ones_like(logps)
                    point = PointBatch(
                        logps / scale,
                        ref[mb_ids, 0].to(logps) / scale,
                        torch.tensor([it["label"] for it in mb]).to(logps),
                        n_tok,
                    )
                    per_example = POINT_LOSSES[cfg.loss](point, cfg)
                    if cfg.loss == "ulma":  # official ULMA: mean over positives + mean over negatives
                        weights = losses.ulma_weights(point.labels, n_pos, len(ids) - n_pos)
                        per_example = per_example * weights * len(ids)  # so that its mean is the batch loss
                    loss = per_example.sum() / global_batch * world
                else:
                    b = len(mb)
                    mb_ids = torch.tensor(ids[lo : lo + chunk])
                    batch = PairBatch(
                        logps[:b],
                        logps[b:],
                        ref[mb_ids, 0].to(logps),
                        ref[mb_ids, 1].to(logps),
                        torch.tensor([it["safe"][0] for it in mb]),
                        torch.tensor([it["safe"][1] for it in mb]),
                        n_tok[:b],
                        n_tok[b:],
                    )
                    per_example = PAIR_LOSSES[cfg.loss](batch, cfg)
                    loss = per_example.sum() / global_batch * world
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss at step {step} (micro-batch {m}); lower the learning rate or check the data"
                    )
                accelerator.backward(loss)
            # logged so that its mean over the step is the objective (sum of losses / G)
            stats["loss"].append(per_example.detach() * (len(ids) / global_batch))
            if cfg.mode == "preference":
                stats["h"].append(
                    (
                        batch.chosen_logps - batch.rejected_logps - batch.ref_chosen_logps + batch.ref_rejected_logps
                    ).detach()
                )
                stats["d_chosen"].append((batch.chosen_logps - batch.ref_chosen_logps).detach())
                stats["d_rejected"].append((batch.rejected_logps - batch.ref_rejected_logps).detach())
                stats["combo"].append(batch.chosen_safe * 2 + batch.rejected_safe)
            elif cfg.mode == "pointwise":
                stats["d"].append((point.logps - point.ref_logps).detach())
                stats["z"].append(point.labels.detach())
            else:
                stats["tokens"].append(n_tok.float())
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        gathered = {k: accelerator.gather(torch.cat(v).to(accelerator.device)).cpu() for k, v in stats.items()}
        tokens = int(accelerator.gather(torch.tensor([tokens], device=accelerator.device)).sum())
        train_tokens += tokens
        record = _step_metrics(
            step + 1, gathered, cfg, scheduler.get_last_lr()[0], grad_norm, tokens, time.perf_counter() - t0
        )
        last = record
        if main and ((step + 1) % cfg.log_every == 0 or step + 1 == total_steps):
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4g}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total_steps:
            _save_checkpoint(accelerator, out, step + 1, train_tokens, cfg.keep_checkpoints)
        if main and cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0 and step + 1 < total_steps:
            checkpoints.save_snapshot(
                out,
                step + 1,
                lambda path: models.save(accelerator.unwrap_model(model), tokenizer, path),
                {"flops": _flops(total, trainable, ref_tokens, train_tokens)},
            )
    bar.close()

    # each process leaves a note, so a run can show that every rank took part
    write_json(
        out / "ranks" / f"rank{accelerator.process_index}.json",
        {"rank": accelerator.process_index, "world_size": world, "pid": os.getpid(), "steps": total_steps - start_step},
    )
    accelerator.wait_for_everyone()
    if main:
        models.save(accelerator.unwrap_model(model), tokenizer, out / "model")
    summary = {
        "steps": total_steps,
        "resumed_from": start_step,
        "processes": world,
        "global_batch": global_batch,
        "train_examples": n_main,
        "buffer_examples": n_buffer,
        "skipped_truncated": len(dropped) + len(dropped_buffer),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "seconds": time.perf_counter() - t_start,
        "tokens": {"reference": ref_tokens, "train": train_tokens},
        "flops": _flops(total, trainable, ref_tokens, train_tokens),
        "final": last,
        "mixed_precision": _mixed_precision(cfg),
    }
    if main:
        write_json(out / "train_summary.json", summary)  # marks the run complete
        checkpoints.clear(out)  # the final model supersedes them
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _flops(n_params: int, n_trainable: int, ref_tokens: int, train_tokens: int) -> dict[str, float]:
    """Reference pass (forward) and the steps (forward + backward) of this run; see :mod:`bfpo.compute`."""
    counter = compute.FlopCounter()
    if ref_tokens:
        counter.forward("reference", n_params, ref_tokens)
    counter.train("train", n_params, train_tokens, n_trainable)
    return counter.as_dict()


TRAINER_VERSION = 3
"""Bumped when the trainer computes something else for the same config (2: ULMA's per-class
reduction; 3: no space before a response after a chat template), so that a finished or checkpointed
run of an older trainer is not reused."""


def _same_run(saved: dict, cfg: TrainConfig) -> bool:
    """A saved ``config.json`` is of the same run: same config (runtime keys aside), same trainer version."""
    saved = dict(saved)
    return saved.pop("trainer_version", 1) == TRAINER_VERSION and configs.same_run(saved, cfg)


def completed(output_dir: str | os.PathLike, cfg: TrainConfig) -> dict | None:
    """The summary of a finished run of the same config in ``output_dir``, else None."""
    out = Path(output_dir)
    summary, config = out / "train_summary.json", out / "config.json"
    if not (summary.is_file() and config.is_file() and (out / "model" / "config.json").is_file()):
        return None
    if not _same_run(json.loads(config.read_text()), cfg):
        return None
    return json.loads(summary.read_text())


def _step_metrics(step, g, cfg, lr, grad_norm, tokens, seconds) -> dict:
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
    if "h" in g:
        h = g["h"]
        record["margin"] = float(cfg.beta * h.mean())  # implicit reward margin beta * h
        record["accuracy"] = float((h > 0).float().mean())
        record["chosen_logp_change"] = float(g["d_chosen"].mean())
        record["rejected_logp_change"] = float(g["d_rejected"].mean())
        for code, name in ((3, "safe>safe"), (2, "safe>unsafe"), (1, "unsafe>safe"), (0, "unsafe>unsafe")):
            sel = g["combo"] == code
            if sel.any():
                record[f"margin/{name}"] = float(cfg.beta * h[sel].mean())
                record[f"accuracy/{name}"] = float((h[sel] > 0).float().mean())
    return record


def _save_checkpoint(accelerator, out: Path, step: int, train_tokens: int, keep: int) -> None:
    """Save the training state of every process as checkpoint ``step`` (see :mod:`bfpo.checkpoints`)."""
    tmp = checkpoints.staging(out, step, create=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoints.commit(out, tmp, step, {"train_tokens": train_tokens}, keep)
    accelerator.wait_for_everyone()


def _truncate_metrics(path: Path, step: int, key: str = "step") -> None:
    """Drop the records a resumed run will write again (those after ``step``)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)[key] <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def read_metrics(output_dir: str | os.PathLike) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# ---------------------------------------------------------------------------------------------
# Launching from Python (notebooks): a config file and `accelerate launch` in a subprocess
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on now (for the processes' rendezvous), chosen by the OS."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    cfg: TrainConfig, num_processes: int = 1, accelerate_config: str | None = None, port: int | None = None
) -> dict:
    """Run ``cfg`` in ``num_processes`` processes with ``accelerate launch`` and return the summary.

    Without GPUs the processes run on the CPU (gloo, ``ACCELERATE_USE_CPU=1``), one torch thread
    each. The config is written to ``<output_dir>/launch_config.yaml``. On failure the error names
    the command and shows the end of its output.
    """
    import subprocess

    check_inputs(cfg)  # bad input stops here, in the caller's process, with the same one line
    out = Path(cfg.output_dir)
    done = completed(out, cfg)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "launch_config.yaml"
    with atomic_path(config_file) as tmp:
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate if accelerate.exists() else "accelerate"), "launch"]
    env = dict(os.environ)
    if accelerate_config:
        cmd += ["--config_file", accelerate_config]
    else:
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if num_processes > 1:
            port = port or free_port()  # a fixed port can still be held by a run that was killed
            cmd += ["--multi_gpu", "--num_processes", str(num_processes), "--main_process_port", str(port)]
        else:
            cmd += ["--num_processes", "1"]
        if not torch.cuda.is_available():
            env |= {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd += ["-m", "bfpo.train", "--config", str(config_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    (out / "launch.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        said = [line for line in proc.stderr.splitlines() if line.startswith("bfpo.train: error: ")]
        if said:  # bad input found by the training process: pass its one line on
            raise BadInput(said[0].removeprefix("bfpo.train: error: "))
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        log_file = out / "launch.log"
        raise RuntimeError(f"training failed (exit {proc.returncode}; log {log_file}): {' '.join(cmd)}\n{tail}")
    return json.loads((out / "train_summary.json").read_text())


def ranks_seen(output_dir: str | os.PathLike) -> list[int]:
    """The ranks that left a note in ``output_dir/ranks`` (each process of a run writes one)."""
    return sorted(json.loads(p.read_text())["rank"] for p in (Path(output_dir) / "ranks").glob("rank*.json"))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bfpo.train",
        description="Train with SFT or a pairwise preference loss (BFPO, DPO, IPO) on one or many processes. "
        "Launch with `accelerate launch [--multi_gpu --num_processes N] -m bfpo.train ...` for several; "
        "set ACCELERATE_USE_CPU=1 for CPU processes (gloo). A re-run resumes from the newest intact checkpoint "
        "in <output_dir>/checkpoints (save_every, keep_checkpoints).",
        epilog="Config keys (YAML): " + ", ".join(f.name for f in dataclasses.fields(TrainConfig)),
    )
    parser.add_argument("--config", required=True, help="YAML file of TrainConfig keys")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=configs.parse_override,
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set max_steps=10",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or BFPO_DEBUG=1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def work():
        cfg = TrainConfig.from_yaml(args.config, dict(args.overrides))
        summary = train(cfg)
        if summary and int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps({k: v for k, v in summary.items() if k != "final"}))

    return run_cli("bfpo.train", work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
