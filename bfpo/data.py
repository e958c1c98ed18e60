"""Preference data labelled on two factors: which response is more helpful, and is each one safe.

Every loader returns a ``datasets.Dataset`` with one pairwise schema (:data:`PAIR_COLUMNS`):

    prompt         str   the conversation up to the response
    chosen         str   the MORE HELPFUL response (BFPO's y_hw)
    rejected       str   the less helpful response (y_hl)
    chosen_safe    bool  I_safe(y_hw)
    rejected_safe  bool  I_safe(y_hl)
    source         str   where the pair comes from

Each loader takes a hub id (pinned to the revision the paper used), a local file in the hub's
record format, or an already-loaded ``datasets.Dataset``. Every record is validated; a bad one
raises :class:`DataError` naming the file, the line and the field. Real data sets do contain a few
broken records (an empty final turn in HH-RLHF, for instance): pass ``skip_invalid=True`` to drop
them, which logs each skipped line and its reason; nothing is ever dropped silently.

The record layer (schema, field checks, ``save`` / ``load``) lives in :mod:`bfpo.records`; its
names are available here too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import datasets

from bfpo.io import data_file, data_folder  # noqa: F401  (re-exported for notebooks)
from bfpo.records import (  # noqa: F401  (the record layer, re-exported: bfpo.data is the one import)
    DIALOGUE_FEATURES,
    LABEL_COMBINATIONS,
    MESSAGES_FEATURE,
    PAIR_COLUMNS,
    PAIR_FEATURES,
    RECORD_CHECKS,
    SFT_FEATURES,
    DataError,
    HubUnavailable,
    Skipped,
    _choice,
    _collect,
    _flag,
    _pairs,
    _records,
    _text,
    check_records,
    dialogue,
    hub_dataset,
    label_combination,
    label_counts,
    load,
    pair_record,
    point_record,
    read_jsonl,
    save,
    sft_record,
    validate_pairs,
)

log = logging.getLogger(__name__)

# Hub ids and the revisions the paper's code pins (None: the paper's code does not pin one).
PKU_SAFERLHF = ("PKU-Alignment/PKU-SafeRLHF", "ff7ba91063016c78a225b0f74e1c0860bb18230f")
HH_RLHF = ("Anthropic/hh-rlhf", None)
ULTRAFEEDBACK = ("HuggingFaceH4/ultrafeedback_binarized", None)

ASSISTANT_TAG = "\n\nAssistant:"


# ---------------------------------------------------------------------------------------------
# PKU-SafeRLHF
# ---------------------------------------------------------------------------------------------


def _pku_record(where, line, r):
    prompt = _text(where, line, r, "prompt")
    responses = [_text(where, line, r, "response_0"), _text(where, line, r, "response_1")]
    safe = [_flag(where, line, r, "is_response_0_safe"), _flag(where, line, r, "is_response_1_safe")]
    better = _choice(where, line, r, "better_response_id", {0, 1})
    safer = _choice(where, line, r, "safer_response_id", {0, 1})
    return prompt, responses, safe, better, safer


def _pair(prompt: str, responses, safe, chosen, rejected, source: str) -> dict:
    """A record of the pair schema from indexable ``responses`` and ``safe`` labels."""
    return {
        "prompt": prompt,
        "chosen": responses[chosen],
        "rejected": responses[rejected],
        "chosen_safe": safe[chosen],
        "rejected_safe": safe[rejected],
        "source": source,
    }


def pku_saferlhf_pairs(
    path_or_dataset=PKU_SAFERLHF[0], split: str = "train", *, skip_invalid: bool = False, skipped: list | None = None
) -> datasets.Dataset:
    """PKU-SafeRLHF as BFPO pairs: chosen = ``response[better_response_id]``, safety = ``is_response_{0,1}_safe``.

    ``path_or_dataset``: the hub id (loaded at the paper's pinned revision), a local jsonl in the
    hub's record format (e.g. ``data_file("pku_saferlhf_alpaca7b_test_16.jsonl")``), or a
    loaded Dataset. ``safer_response_id`` is validated but only the SFT view uses it.
    """
    where, rows = _records(path_or_dataset, PKU_SAFERLHF, split)

    def convert(where, line, r):
        prompt, responses, safe, better, _ = _pku_record(where, line, r)
        return _pair(prompt, responses, safe, better, 1 - better, "pku_saferlhf")

    return _pairs(_collect(where, rows, convert, skip_invalid, skipped))


def pku_saferlhf_sft(
    path_or_dataset=PKU_SAFERLHF[0], split: str = "train", *, skip_invalid: bool = False, skipped: list | None = None
) -> datasets.Dataset:
    """PKU-SafeRLHF as SFT demonstrations: the safer response (``safer_response_id``) as the target.

    The paper mixes these (20%) into UltraChat for the SFT of Mistral-7B.
    """
    where, rows = _records(path_or_dataset, PKU_SAFERLHF, split)

    def convert(where, line, r):
        prompt, responses, _, _, safer = _pku_record(where, line, r)
        return {"prompt": prompt, "response": responses[safer], "source": "pku_saferlhf_sft"}

    return datasets.Dataset.from_list(_collect(where, rows, convert, skip_invalid, skipped), features=SFT_FEATURES)


def pku_saferlhf_cost_pairs(
    path_or_dataset=PKU_SAFERLHF[0], split: str = "train", *, skip_invalid: bool = False, skipped: list | None = None
) -> datasets.Dataset:
    """PKU-SafeRLHF as Safe RLHF's cost-model pairs: ``chosen`` is the MORE HARMFUL response,
    ``response[1 - safer_response_id]``, on every pair (safe/safe and unsafe/unsafe included), as the
    official Safe RLHF code pairs them; the safety labels feed the cost model's sign term. Train the
    cost model on these with ``harm_order: given`` (:class:`bfpo.safe_rlhf.ScoreConfig`)."""
    where, rows = _records(path_or_dataset, PKU_SAFERLHF, split)

    def convert(where, line, r):
        prompt, responses, safe, _, safer = _pku_record(where, line, r)
        return _pair(prompt, responses, safe, 1 - safer, safer, "pku_saferlhf_cost")

    return _pairs(_collect(where, rows, convert, skip_invalid, skipped))


def red_team_json_pairs(path, *, skip_invalid: bool = False, skipped: list | None = None) -> datasets.Dataset:
    """The official BFPO red-teaming file (``data/zephyr-7b-beta_beaver_redteaming.json``: one record
    per prompt with ``modeloutput1``/``modeloutput2``, ``better_modelout`` (1 or 2) and
    ``is_modelout{1,2}_safe``) as BFPO pairs: chosen = the better output, as ``src/alignment/data.py``
    reads it. A JSON array or JSON Lines."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (the official red-teaming file is not redistributed)")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(str(path), e.lineno, None, f"not valid JSON ({e.msg})") from None
        rows = enumerate(records, start=1)
    else:
        rows = read_jsonl(path)

    def convert(where, line, r):
        if not isinstance(r, dict):
            raise DataError(where, line, None, f"expected a JSON object, got {type(r).__name__}")
        prompt = _text(where, line, r, "prompt")
        better = _choice(where, line, r, "better_modelout", {1, 2})
        worse = 3 - better
        outputs = {k: _text(where, line, r, f"modeloutput{k}") for k in (1, 2)}
        safe = {k: _flag(where, line, r, f"is_modelout{k}_safe") for k in (1, 2)}
        return _pair(prompt, outputs, safe, better, worse, "red_team")

    return _pairs(_collect(str(path), rows, convert, skip_invalid, skipped))


# ---------------------------------------------------------------------------------------------
# Anthropic HH-RLHF
# ---------------------------------------------------------------------------------------------


def split_dialogue(text: str) -> tuple[str, str]:
    """``(prompt, final assistant turn)``: the prompt keeps every turn up to and including the last
    ``"\\n\\nAssistant:"`` tag; the response is the text after it, stripped of surrounding spaces."""
    cut = text.rfind(ASSISTANT_TAG)
    if cut < 0:
        raise ValueError("no '\\n\\nAssistant:' turn")
    return text[: cut + len(ASSISTANT_TAG)], text[cut + len(ASSISTANT_TAG) :].strip()


HH_SUBSETS = ("harmless-base", "helpful-base")


def hh_rlhf_pairs(
    path_or_dataset=HH_RLHF[0],
    subset: str = "harmless-base",
    split: str = "train",
    *,
    skip_invalid: bool = False,
    skipped: list | None = None,
) -> datasets.Dataset:
    """Anthropic HH-RLHF as BFPO pairs; each dialogue is split into the prompt and the final assistant turn.

    HH-RLHF has one relative label per pair and no per-response safety label, so:

    * ``helpful-base``: crowdworkers picked the more helpful reply in benign conversations, so
      chosen is the more helpful one and both are labelled safe (BFPO target +0.5, the IPO target).
    * ``harmless-base``: crowdworkers picked the less harmful reply to red-teaming prompts. We label
      the picked one safe and the other unsafe. The pair then has target g(1, 0) = +1 in that order;
      since g(0, 1) = -g(1, 0), the BFPO loss is the same whichever of the two is more helpful, so
      the missing helpfulness label does not matter. What is an approximation is turning a relative
      judgement into absolute labels: some pairs are both safe or both unsafe.
    """
    if subset not in HH_SUBSETS:
        raise ValueError(f"subset must be one of {HH_SUBSETS}, got {subset!r}")
    if isinstance(path_or_dataset, str) and path_or_dataset == HH_RLHF[0]:
        loaded = hub_dataset(HH_RLHF[0], HH_RLHF[1], split, data_dir=subset)
        path_or_dataset = loaded
    where, rows = _records(path_or_dataset, HH_RLHF, split)
    harmless = subset == "harmless-base"

    def convert(where, line, r):
        dialogues = {}
        for field in ("chosen", "rejected"):
            text = _text(where, line, r, field)
            try:
                dialogues[field] = split_dialogue(text)
            except ValueError as e:
                raise DataError(where, line, field, str(e)) from None
            if not dialogues[field][1]:
                raise DataError(where, line, field, "empty final assistant turn")
        if dialogues["chosen"][0] != dialogues["rejected"][0]:
            raise DataError(where, line, "rejected", "its dialogue before the final turn differs from chosen's")
        return {
            "prompt": dialogues["chosen"][0],
            "chosen": dialogues["chosen"][1],
            "rejected": dialogues["rejected"][1],
            "chosen_safe": True,
            "rejected_safe": not harmless,
            "source": f"hh_rlhf_{subset.replace('-', '_')}",
        }

    return _pairs(_collect(where, rows, convert, skip_invalid, skipped))


# ---------------------------------------------------------------------------------------------
# The helpful-only buffer
# ---------------------------------------------------------------------------------------------


def _final_reply(where, line, r, field) -> str:
    """A response given as text or as a chat message list (UltraFeedback, whose last message is the reply)."""
    if field not in r:
        raise DataError(where, line, field, "missing")
    value = r[field]
    if isinstance(value, str):
        return _text(where, line, r, field)
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        last = value[-1]
        if last.get("role") != "assistant":
            raise DataError(where, line, field, "the last message is not the assistant's")
        content = last.get("content")
        if not isinstance(content, str) or not content.strip():
            raise DataError(where, line, field, "the assistant's message is empty")
        return content
    raise DataError(where, line, field, f"expected a string or a list of chat messages, got {type(value).__name__}")


def helpful_buffer_pairs(
    path_or_dataset=ULTRAFEEDBACK[0],
    split: str = "train_prefs",
    *,
    source: str = "helpful_buffer",
    skip_invalid: bool = False,
    skipped: list | None = None,
) -> datasets.Dataset:
    """Helpful-only pairs (UltraFeedback-binarized in the paper), labelled safe/safe.

    Records need ``prompt``, ``chosen`` and ``rejected``; responses may be text or chat message
    lists (UltraFeedback's format, whose last message is the assistant's reply). BFPO mixes these
    into every step so that helpfulness is not forgotten; with both labels safe their target is
    IPO's, +0.5 / tau.
    """
    where, rows = _records(path_or_dataset, ULTRAFEEDBACK, split)

    def convert(where, line, r):
        prompt = _text(where, line, r, "prompt")
        chosen = _final_reply(where, line, r, "chosen")
        rejected = _final_reply(where, line, r, "rejected")
        return {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "chosen_safe": True,
            "rejected_safe": True,
            "source": source,
        }

    return _pairs(_collect(where, rows, convert, skip_invalid, skipped))


# ---------------------------------------------------------------------------------------------
# SFT data of the paper: UltraChat plus PKU-SafeRLHF safer responses
# ---------------------------------------------------------------------------------------------

ULTRACHAT = ("HuggingFaceH4/ultrachat_200k", None)


def ultrachat_sft(
    path_or_dataset=ULTRACHAT[0],
    split: str = "train_sft",
    *,
    turns: str = "all",
    skip_invalid: bool = False,
    skipped: list | None = None,
) -> datasets.Dataset:
    """UltraChat as SFT examples. ``turns="all"`` (the official SFT) keeps every turn of each dialogue
    in ``messages``, trained with ``sft_loss: all``; ``turns="first"`` keeps the first exchange only
    (the user's first turn as ``prompt``, the reply as ``response``), for a response-only loss.

    Records need ``messages``: ``{"role", "content"}`` turns, user and assistant alternating (the
    format of ``HuggingFaceH4/ultrachat_200k``).
    """
    if turns not in ("all", "first"):
        raise ValueError(f"ultrachat_sft: turns: expected 'all' or 'first', got {turns!r}")
    where, rows = _records(path_or_dataset, ULTRACHAT, split)

    def convert(where, line, r):
        if "messages" not in r:
            raise DataError(where, line, "messages", "missing")
        chat = dialogue(where, line, r["messages"])
        chat = [m for m in chat if m["role"] != "system"]
        out = {"prompt": chat[0]["content"], "response": chat[1]["content"], "source": "ultrachat"}
        return out | {"messages": chat} if turns == "all" else out

    features = DIALOGUE_FEATURES if turns == "all" else SFT_FEATURES
    return datasets.Dataset.from_list(_collect(where, rows, convert, skip_invalid, skipped), features=features)


def with_messages(ds: datasets.Dataset) -> datasets.Dataset:
    """``ds`` with a ``messages`` column (the one exchange ``prompt`` -> ``response`` where it has none),
    so single-turn SFT data concatenate with whole dialogues."""
    if "messages" in ds.column_names:
        return ds
    chat = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
        for p, r in zip(ds["prompt"], ds["response"], strict=True)
    ]
    return ds.add_column("messages", chat, feature=MESSAGES_FEATURE)


def official_mix(parts: list[tuple[datasets.Dataset, float]], seed: int = 42) -> datasets.Dataset:
    """The official BFPO recipe's data mixer (alignment-handbook ``mix_datasets``): from each part
    the FIRST ``int(share * N)`` rows in the source's own order (cut before any shuffling), all parts
    concatenated, then shuffled with ``seed`` 42. ``[(ultrachat, 1.0), (pku_sft, 0.2)]`` is the SFT
    mix of ``mix_sft.yaml``; ``[(pku_pairs, 0.2)]`` the BFPO data of ``balance_bfpo.yaml``."""
    if not parts:
        raise ValueError("official_mix: no parts")
    cut = []
    for ds, share in parts:
        if not 0 < share <= 1:
            raise ValueError(f"official_mix: share must lie in (0, 1], got {share}")
        cut.append(ds.select(range(int(share * len(ds)))))
    if any("messages" in ds.column_names for ds in cut):  # whole dialogues beside single exchanges
        cut = [with_messages(ds) for ds in cut]
    return datasets.concatenate_datasets(cut).shuffle(seed=seed)


def sft_mix(general: datasets.Dataset, safety: datasets.Dataset, safety_share: float = 0.2, seed: int = 0):
    """The paper's SFT mix: ``general`` plus enough ``safety`` examples to make ``safety_share`` of the
    total (20% PKU-SafeRLHF safer responses in the paper), shuffled."""
    if not 0 <= safety_share < 1:
        raise ValueError(f"safety_share: must lie in [0, 1), got {safety_share}")
    wanted = round(len(general) * safety_share / (1 - safety_share))
    if wanted > len(safety):
        raise ValueError(f"safety_share {safety_share} needs {wanted} safety examples, only {len(safety)} given")
    mixed = datasets.concatenate_datasets([general, safety.shuffle(seed=seed).select(range(wanted))])
    return mixed.shuffle(seed=seed)


# ---------------------------------------------------------------------------------------------
# Red-teaming data: a model's own generations, labelled by a judge
# ---------------------------------------------------------------------------------------------

Judge = Callable[[str, str], tuple[float, bool]]
"""``judge(prompt, response) -> (helpfulness score, is_safe)``."""


def red_team_pairs(
    records: Iterable[dict], judge: Judge, *, where: str = "red-team generations", source: str = "red_team"
) -> datasets.Dataset:
    """BFPO pairs from a model's own generations on harmful prompts, labelled by ``judge``.

    Each record has ``prompt`` and ``responses`` (two or more generations; every two consecutive
    ones form a pair). The judge scores helpfulness and safety; chosen is the more helpful one.
    On a helpfulness tie the safe one is chosen (and if both agree on safety too, the first):
    a tie carries no helpfulness information, and with one safe and one unsafe response the BFPO
    target is the same in either order.
    """
    rows = []
    for line, r in enumerate(records, start=1):
        prompt = _text(where, line, r, "prompt")
        responses = r.get("responses")
        if not isinstance(responses, list) or len(responses) < 2:
            raise DataError(where, line, "responses", "expected a list of at least two generations")
        for k in range(0, len(responses) - 1, 2):
            pair = []
            for j in (k, k + 1):
                text = responses[j]
                if not isinstance(text, str) or not text.strip():
                    raise DataError(where, line, f"responses[{j}]", "empty or not text")
                helpfulness, safe = judge(prompt, text)
                pair.append((float(helpfulness), bool(safe), text))
            pair.sort(key=lambda p: (p[0], p[1]), reverse=True)
            (_, chosen_safe, chosen), (_, rejected_safe, rejected) = pair
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "chosen_safe": chosen_safe,
                    "rejected_safe": rejected_safe,
                    "source": source,
                }
            )
    if not rows:
        raise DataError(where, None, None, "no records")
    return _pairs(rows)
