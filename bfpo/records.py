"""Records of the pair, SFT and point-wise schemas: reading them (with line numbers), checking each
field, and saving and loading data sets atomically. Every loader of :mod:`bfpo.data` and the trainer
read their records through here, so a bad record is always named the same way (file, line, field).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets

from bfpo import labels
from bfpo.errors import BadInput
from bfpo.io import atomic_dir

log = logging.getLogger(__name__)


PAIR_COLUMNS = ("prompt", "chosen", "rejected", "chosen_safe", "rejected_safe", "source")
PAIR_FEATURES = datasets.Features(
    {
        "prompt": datasets.Value("string"),
        "chosen": datasets.Value("string"),
        "rejected": datasets.Value("string"),
        "chosen_safe": datasets.Value("bool"),
        "rejected_safe": datasets.Value("bool"),
        "source": datasets.Value("string"),
    }
)
SFT_FEATURES = datasets.Features(
    {"prompt": datasets.Value("string"), "response": datasets.Value("string"), "source": datasets.Value("string")}
)
MESSAGES_FEATURE = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
DIALOGUE_FEATURES = datasets.Features({**SFT_FEATURES, "messages": MESSAGES_FEATURE})
"""SFT examples with the whole dialogue (``messages``); ``prompt``/``response`` hold its first exchange."""


class DataError(BadInput):
    """A record that does not fit its format: says which file, which line and which field."""

    def __init__(self, where: str, line: int | None, field: str | None, problem: str):
        self.where, self.line, self.field, self.problem = where, line, field, problem
        at = where + (f", line {line}" if line is not None else "") + (f", field {field!r}" if field else "")
        super().__init__(f"{at}: {problem}")


# ---------------------------------------------------------------------------------------------
# Reading records, with their line numbers
# ---------------------------------------------------------------------------------------------


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of a JSON Lines file (1-based lines)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(str(path), number, None, f"not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(str(path), number, None, f"expected a JSON object, got {type(record).__name__}")
            yield number, record


def _records(source, hub: tuple[str, str | None], split: str, name: str | None = None):
    """``(where, [(line, record), ...])`` from a local file, a loaded Dataset or a hub id."""
    if isinstance(source, datasets.Dataset):
        where = f"dataset {source.info.dataset_name or source.info.builder_name or '<in memory>'}"
        return where, ((i + 1, dict(r)) for i, r in enumerate(source))
    source = str(source)
    if Path(source).suffix in {".jsonl", ".json"} or Path(source).exists():
        return source, read_jsonl(source)
    if source != hub[0]:
        raise FileNotFoundError(f"{source}: neither a local .jsonl file nor the hub dataset {hub[0]}")
    loaded = hub_dataset(hub[0], hub[1], split, name=name)
    return f"{hub[0]}@{hub[1] or 'main'} [{split}]", ((i + 1, dict(r)) for i, r in enumerate(loaded))


class HubUnavailable(OSError):
    """A hub data set or model could not be fetched: the message names what to fetch."""


def hub_dataset(path: str, revision: str | None, split: str, **kwargs) -> datasets.Dataset:
    """``datasets.load_dataset`` with one clear error naming the data set, revision and split to
    fetch when the hub cannot be reached (or the id is wrong)."""
    try:
        return datasets.load_dataset(path, revision=revision, split=split, **kwargs)
    except Exception as e:  # offline, a wrong id or revision, an old cache: say what to fetch
        what = f"{path}@{revision or 'main'}" + (f" ({kwargs['data_dir']})" if kwargs.get("data_dir") else "")
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise HubUnavailable(
            f"cannot fetch the hub data set {what}, split {split!r} ({type(e).__name__}: {first}); fetch it where the "
            "hub is reachable (it is then cached), or pass a local file in the hub's format"
        ) from None


def _text(where, line, record, field) -> str:
    if field not in record:
        raise DataError(where, line, field, "missing")
    value = record[field]
    if not isinstance(value, str):
        raise DataError(where, line, field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(where, line, field, "empty text")
    return value


def _flag(where, line, record, field) -> bool:
    """A 0/1 label: true/false or the integers 0/1 (both accepted); anything else is an error."""
    if field not in record:
        raise DataError(where, line, field, "missing")
    value = record[field]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise DataError(where, line, field, f"expected true/false or 0/1, got {value!r}")


def _choice(where, line, record, field, allowed) -> int:
    if field not in record:
        raise DataError(where, line, field, "missing")
    value = record[field]
    if isinstance(value, bool) or value not in allowed:
        raise DataError(where, line, field, f"expected one of {sorted(allowed)}, got {value!r}")
    return value


@dataclass
class Skipped:
    where: str
    line: int
    reason: str


def _collect(where, rows, convert: Callable, skip_invalid: bool, skipped: list | None) -> list[dict]:
    out, seen = [], 0
    for line, record in rows:
        seen += 1
        try:
            out.append(convert(where, line, record))
        except DataError as e:
            if not skip_invalid:
                raise
            log.warning("skipped %s", e)
            if skipped is not None:
                skipped.append(Skipped(where, line, str(e)))
    if not seen:
        raise DataError(where, None, None, "no records (the file is empty)")
    if not out:
        raise DataError(where, None, None, f"no valid records (all {seen} skipped)")
    return out


def _pairs(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows, features=PAIR_FEATURES)


def pair_record(where, line, r) -> dict:
    """A record of the pair schema, checked field by field (0/1 labels become booleans)."""
    out = {f: _text(where, line, r, f) for f in ("prompt", "chosen", "rejected", "source")}
    return out | {f: _flag(where, line, r, f) for f in ("chosen_safe", "rejected_safe")}


def sft_record(where, line, r) -> dict:
    """A record of the SFT schema: ``prompt`` and ``response``, both non-empty text, and, where the
    record has one, the whole dialogue ``messages`` (checked by :func:`dialogue`)."""
    out = {f: _text(where, line, r, f) for f in ("prompt", "response")}
    if r.get("messages") is not None:
        out["messages"] = dialogue(where, line, r["messages"])
    return out


def dialogue(where, line, messages) -> list[dict]:
    """A chat as ``[{"role", "content"}]``: user and assistant turns alternating, from a user turn to an
    assistant turn (a system turn may come first), every content non-empty text."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise DataError(where, line, "messages", "expected a list of chat messages ({'role', 'content'})")
    turns = messages[1:] if messages and messages[0].get("role") == "system" else messages
    if len(turns) < 2 or len(turns) % 2:
        raise DataError(where, line, "messages", f"expected user/assistant exchanges, got {len(turns)} turn(s)")
    for k, m in enumerate(turns):
        want = "user" if k % 2 == 0 else "assistant"
        if m.get("role") != want:
            raise DataError(where, line, "messages", f"turn {k + 1}: expected role {want!r}, got {m.get('role')!r}")
        _text(where, line, m, "content")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def point_record(where, line, r) -> dict:
    """A point-wise record: ``prompt``, ``response`` and ``label`` z in [0, 1] (1 good, 0 bad)."""
    if "label" not in r:
        raise DataError(where, line, "label", "missing")
    z = r["label"]
    if isinstance(z, bool) or not isinstance(z, int | float) or not 0.0 <= z <= 1.0:
        raise DataError(where, line, "label", f"expected a number in [0, 1], got {z!r}")
    return sft_record(where, line, r) | {"label": float(z)}


RECORD_CHECKS = {"preference": pair_record, "sft": sft_record, "pointwise": point_record}
"""Training mode -> the check of one record (``where, line, record -> clean dict``)."""


def check_records(rows: Iterable[tuple[int, dict]], mode: str, where: str) -> list[dict]:
    """Every ``(line, record)`` checked for ``mode`` (see :data:`RECORD_CHECKS`), each keeping its
    ``line``; an empty source is an error saying so."""
    check = RECORD_CHECKS[mode]
    out = [check(where, line, r) | {"line": line} for line, r in rows]
    if not out:
        raise DataError(where, None, None, "no records (the file is empty)")
    return out


def validate_pairs(dataset: datasets.Dataset, where: str = "dataset") -> datasets.Dataset:
    """Check a Dataset already in the pair schema; returns it with only the schema's columns."""
    missing = [c for c in PAIR_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DataError(where, None, missing[0], f"missing column (the pair schema is {list(PAIR_COLUMNS)})")
    check_records(enumerate(dataset.select_columns(list(PAIR_COLUMNS)), start=1), "preference", where)
    return dataset.select_columns(list(PAIR_COLUMNS)).cast(PAIR_FEATURES)


# ---------------------------------------------------------------------------------------------
# Looking at labelled pairs
# ---------------------------------------------------------------------------------------------

LABEL_COMBINATIONS = {labels.SAFETY[c]: labels.DISPLAY[c] for c in labels.COMBINATIONS}
"""``(chosen_safe, rejected_safe)`` -> the name tables show (:mod:`bfpo.labels`); the chosen response
is always the more helpful one."""


def label_combination(chosen_safe: bool, rejected_safe: bool) -> str:
    return labels.DISPLAY[labels.combination(chosen_safe, rejected_safe)]


def label_counts(dataset: datasets.Dataset) -> dict[str, dict[str, int]]:
    """``{source: {label combination: count}}`` with all four combinations present."""
    counts: dict[str, dict[str, int]] = {}
    for s, c, r in zip(dataset["source"], dataset["chosen_safe"], dataset["rejected_safe"], strict=True):
        row = counts.setdefault(s, dict.fromkeys(LABEL_COMBINATIONS.values(), 0))
        row[label_combination(c, r)] += 1
    return counts


def save(dataset: datasets.Dataset, path: str | os.PathLike) -> Path:
    """Write ``dataset`` to the folder ``path`` atomically (a killed run leaves the old copy or none)."""
    quiet = not datasets.utils.are_progress_bars_disabled()
    if quiet:  # a bar per tiny save only clutters notebook output
        datasets.utils.disable_progress_bars()
    try:
        with atomic_dir(path) as tmp:
            dataset.save_to_disk(str(tmp))
    finally:
        if quiet:
            datasets.utils.enable_progress_bars()
    return Path(path)


def load(path: str | os.PathLike) -> datasets.Dataset:
    """A Dataset written by :func:`save` (e.g. by an earlier notebook), with an error naming the folder."""
    path = Path(path)
    if not (path / "dataset_info.json").is_file():
        raise FileNotFoundError(f"{path}: no saved dataset here (run the notebook that writes it first)")
    return datasets.load_from_disk(str(path))
