"""The full test sets on the Hugging Face hub: where each file comes from, and how one hub record
becomes a record of the file's format."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bfpo import data as bdata
from bfpo.io import atomic_path


@dataclass(frozen=True)
class HubSource:
    """Where lm-eval 0.4 reads one of a task's files on the hub, and how one hub record becomes a
    record of the vendored file's format (a dict, or a list for a CSV file without a header), so
    one parser reads both. ``refs/convert/parquet`` is the hub's parquet export, for data sets
    that are loading scripts (which ``datasets`` no longer runs); lm-eval pins no revisions."""

    path: str
    name: str | None
    split: str
    to_local: Callable[[dict], dict | list]
    revision: str | None = None
    keep: Callable[[dict], bool] | None = None  # which records belong to the task (None: all of them)


def _arc_from_hub(r: dict) -> dict:  # allenai/ai2_arc: question, choices {text, label}, answerKey
    pairs = zip(r["choices"]["text"], r["choices"]["label"], strict=True)
    choices = [{"text": t, "label": lab} for t, lab in pairs]
    return {"id": r["id"], "question": {"stem": r["question"], "choices": choices}, "answerKey": r["answerKey"]}


def _mmlu_from_hub(r: dict) -> list:  # cais/mmlu: question, choices (4), answer (0-3)
    if len(r["choices"]) != 4:
        raise ValueError(f"expected 4 choices, got {len(r['choices'])}")
    return [r["question"], *r["choices"], "ABCD"[r["answer"]]]


def _truthfulqa_from_hub(r: dict) -> dict:  # mc1_targets / mc2_targets: {choices, labels}
    out = {"question": r["question"]}
    for key in ("mc1_targets", "mc2_targets"):
        answers = dict(zip(r[key]["choices"], r[key]["labels"], strict=True))
        if len(answers) != len(r[key]["choices"]):
            raise ValueError(f"{key} repeats an answer")
        out[key] = answers
    return out


def _crows_from_hub(r: dict) -> dict:
    return {k: r[k] for k in ("sent_more", "sent_less", "stereo_antistereo", "bias_type")}


def _columns(*names: str) -> Callable[[dict], dict]:
    return lambda r: {k: r[k] for k in names}


def _virtue_from_hub(r: dict) -> dict:  # the hub splits the file's "sentence [SEP] trait" in two
    return {"label": r["label"], "scenario": f"{r['scenario']} [SEP] {r['trait']}"}


def _ethics_hub(config: str, to_local) -> HubSource:
    return HubSource("EleutherAI/hendrycks_ethics", config, "test", to_local, "refs/convert/parquet")


def _bbq_hub(category: str) -> HubSource:
    name = category[0].upper() + category[1:]  # the hub's config names: Age, Disability_status, ...
    return HubSource("oskarvanderwal/bbq", name, "test", lambda r: dict(r), "refs/convert/parquet")


def task_paths(task, data_dir=None) -> list[Path]:
    """Where ``task``'s files are read: ``data_dir``, else $BFPO_DATA_DIR, else data/; a missing one
    is a FileNotFoundError saying what to do (:func:`missing_file`)."""
    if data_dir is None and not task.hub_only:
        return [bdata.data_file(f) for f in task.files]  # says which folder and variable
    paths = [(Path(data_dir) if data_dir is not None else bdata.data_folder()) / f for f in task.files]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(missing_file(task, p))
    return paths


def missing_file(task, path) -> str:
    """What to do when one of ``task``'s files is not there (a task with no vendored subset is
    read from the hub: say which data set to fetch)."""
    if task.hub_only:
        src = task.hub[task.files.index(Path(path).name)]
        return (
            f"task {task.name}: {path} not found; this task has no subset in data/: fetch its test set from the "
            f"hub with --hub-dir DIR (hub_dir=DIR), i.e. {src.path} {src.name or ''} split {src.split}"
        )
    return f"task {task.name}: data file {path} not found (set BFPO_DATA_DIR or pass data_dir)"


def fetch(jobs: dict[str, HubSource], out_dir, force: bool = False, progress: bool = True) -> Path:
    """Download each ``file: source`` of ``jobs`` into ``out_dir``, in the format and under the name
    the task's reader expects (so ``data_dir=out_dir`` scores it). Files already there are kept
    unless ``force``. Needs the hub (``datasets.load_dataset``); a record that does not convert is a
    :class:`~bfpo.data.DataError` naming the data set, the record and the field."""
    import datasets

    out = Path(out_dir)
    for file, src in tqdm(sorted(jobs.items()), desc="hub data", disable=not progress):
        target = out / file
        if target.is_file() and not force:
            continue
        where = f"hub:{src.path}/{src.name}/{src.split}@{src.revision or 'main'}"
        try:
            ds = datasets.load_dataset(src.path, src.name, split=src.split, revision=src.revision)
        except Exception as e:  # no hub, a wrong id, an old cache: say which data set
            raise OSError(f"{where} could not be loaded ({type(e).__name__}: {e})") from e
        labels = {c: f for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
        records = []
        for k, r in enumerate(ds, start=1):
            r = {c: labels[c].int2str(v) if c in labels and v is not None else v for c, v in r.items()}
            try:
                if src.keep is None or src.keep(r):
                    records.append(src.to_local(r))
            except KeyError as e:
                raise bdata.DataError(where, k, str(e.args[0]), "missing") from None
            except (TypeError, ValueError, IndexError) as e:
                raise bdata.DataError(where, k, None, str(e)) from None
        if not records:
            raise ValueError(f"{where} has no records")
        with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            if file.endswith(".jsonl"):
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            elif records and isinstance(records[0], dict):
                writer = csv.DictWriter(f, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)
            else:
                csv.writer(f).writerows(records)
    return out
