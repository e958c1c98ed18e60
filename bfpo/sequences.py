"""Sequences for training: records -> token ids (prompt, responses), collated batches, summed
response log-probs, and the reference model's log-probs, cached on disk.

An example becomes ``{"prompt": ids, "responses": [ids, ...], ...}``: one response for SFT and
point-wise examples, chosen then rejected for a pair. Chosen and rejected go through the model in
one forward pass ([2b, T]); a sequence's log-prob is

    log pi(y | x) = sum_{t in y} log softmax(logits_{t-1})[y_t]        (prompt and padding masked)

which every loss of :mod:`bfpo.losses` takes as ``chosen_logps`` / ``rejected_logps``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bfpo import data as bdata
from bfpo import models
from bfpo.logps import collate, sequence_logps, token_logps  # noqa: F401  (re-exported: the trainer's interface)
from bfpo.packing import batch_logps


@dataclass(frozen=True)
class Encoding:
    """How examples are cut and rendered into ids (a :class:`~bfpo.train.TrainConfig` has the same
    fields, so either may be passed to :func:`tokenize`)."""

    max_length: int = 128  # the TrainConfig defaults
    max_prompt_length: int = 64
    system_prompt: str | None = None
    sft_loss: str = "response"
    packing: bool = False
    train_data: str = "data"  # named in messages


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


def tokenize(examples: list[dict], tokenizer, cfg: Encoding, mode: str) -> tuple[list[dict], list[tuple]]:
    """Token ids per example, and the examples dropped because a response was truncated away entirely
    (the prompt filled ``max_length``), as ``(line, field)``: ``line`` is the example's ``"line"`` key
    (set by :func:`load_examples`) or its 1-based position."""
    out, dropped = [], []
    # packed examples are kept whole: the chunks of max_length are cut from their concatenation
    keep_whole = cfg.packing and mode == "sft"
    max_prompt, max_total = (10**9, 10**9) if keep_whole else (cfg.max_prompt_length, cfg.max_length)
    for k, ex in enumerate(examples):
        chat = ex.get("messages")
        if mode == "sft" and cfg.sft_loss == "all" and (chat is not None or getattr(tokenizer, "chat_template", None)):
            whole = encode_dialogue(tokenizer, chat or _exchange(ex), cfg.system_prompt)[:max_total]
            out.append({"prompt": whole[:1], "responses": [whole[1:]], "label": 1.0})
            continue
        prompt_ids = encode_prompt(tokenizer, ex["prompt"], max_prompt, cfg.system_prompt)
        budget = max_total - len(prompt_ids)
        line = ex.get("line", k + 1)
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
        out = pack_constant_length(out, cfg.max_length)
    return out, dropped


def check_dialogues(examples: list[dict], cfg) -> None:
    """Whole dialogues (``messages`` of several exchanges) are trained on every token (sft_loss "all");
    any other loss would see only their first exchange, so it is refused, naming the record. ``cfg``
    is the run's :class:`~bfpo.train_config.TrainConfig` (its ``mode``, ``sft_loss`` and ``train_data``)."""
    if cfg.mode == "sft" and cfg.sft_loss == "all":
        return
    for k, ex in enumerate(examples):
        turns = [m for m in ex.get("messages") or () if m["role"] != "system"]
        if len(turns) > 2:
            raise bdata.DataError(
                cfg.train_data,
                ex.get("line", k + 1),
                "messages",
                f"a dialogue of {len(turns)} turns needs mode "
                "'sft' with sft_loss 'all' (the official SFT); for a response-only loss keep its first exchange "
                "(ultrachat_sft(turns='first'))",
            )


def _exchange(ex: dict) -> list[dict]:
    return [{"role": "user", "content": ex["prompt"]}, {"role": "assistant", "content": ex["response"]}]


def pack_constant_length(items: list[dict], length: int) -> list[dict]:
    """Sequences packed into chunks of ``length`` tokens, as the official SFT (TRL's constant-length
    packing): every example's ids (each ending in EOS) are concatenated in order and cut into full
    chunks; the last, partial chunk is dropped, and attention crosses example boundaries."""
    stream = [t for it in items for t in it["prompt"] + it["responses"][0]]
    chunks = [stream[i : i + length] for i in range(0, len(stream) - length + 1, length)]
    return [{"prompt": c[:1], "responses": [c[1:]], "label": 1.0} for c in chunks]


def describe_dropped(path: str, dropped: list[tuple], cfg: Encoding, what: str = "training example(s)") -> str:
    """One line naming the file and the first records whose response was truncated away."""
    shown = ", ".join(f"line {line} field {field!r}" for line, field in dropped[:5])
    more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
    return (
        f"{path}: skipped {len(dropped)} {what} whose response was truncated away (the prompt, cut to "
        f"max_prompt_length {cfg.max_prompt_length}, fills max_length {cfg.max_length}): {shown}{more}"
    )


def micro_batch_sequences(items: list[dict]) -> list[tuple[list[int], list[int]]]:
    """All chosen first, then all rejected: one concatenated forward pass for the pair batch."""
    n = len(items[0]["responses"])
    return [(it["prompt"], it["responses"][k]) for k in range(n) for it in items]


# --- reference log-probs, cached on disk -------------------------------------------------------


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
def reference_logps(
    model, items, batch_size, accelerator, pad_id, desc="reference log-probs", padding_free: bool = False
) -> torch.Tensor:
    """Log-probs [len(items), n_responses] under ``model``; each process takes every world-th item.

    Items are visited longest first, so that each batch pads to similar lengths (no grad is kept,
    so batches can be several times the training batch); ``padding_free`` packs them instead
    (:mod:`bfpo.packing`).
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    n = len(items)
    per_rank = math.ceil(n / world)
    mine = [min(rank + world * k, n - 1) for k in range(per_rank)]  # padded with the last item
    longest = [len(items[i]["prompt"]) + max(map(len, items[i]["responses"])) for i in mine]
    order = sorted(range(per_rank), key=lambda k: -longest[k])
    n_resp = len(items[0]["responses"])
    out = torch.zeros(per_rank, n_resp, device=accelerator.device)
    was_training = model.training
    model.eval()
    bar = tqdm(range(0, per_rank, batch_size), desc=desc, disable=not accelerator.is_main_process, leave=False)
    for start in bar:
        ks = order[start : start + batch_size]
        chunk = [items[mine[k]] for k in ks]
        logps, _, _ = batch_logps(model, micro_batch_sequences(chunk), pad_id, accelerator.device, padding_free)
        out[ks] = logps.view(n_resp, len(chunk)).T.float()
    gathered = accelerator.gather(out).cpu().view(world, per_rank, n_resp)
    full = torch.zeros(n, n_resp, device="cpu")  # what the cache keeps; the run moves it to its device once
    for r in range(world):
        idx = [r + world * k for k in range(per_rank) if r + world * k < n]
        full[idx] = gathered[r, : len(idx)]
    model.train(was_training)
    return full


# --- the schedule of examples: fixed by (seed, step), independent of the number of processes ---


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
