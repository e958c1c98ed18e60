"""Experiment trackers (TensorBoard, W&B, Trackio, MLflow) through accelerate's tracker API.

A config's ``report_to`` names them, as in TRL and transformers; every step's metrics, the
same records as ``metrics.jsonl``, go to each. The trainer hands the trackers to its
``Accelerator`` (``log_with``, ``init_trackers``, ``log``); PPO-Lagrangian, which runs without
one, starts the same accelerate tracker classes itself. Local trackers write under
``<output_dir>/trackers/<run name>``:

    tensorboard --logdir runs/<study>/<run>/trackers

The tracker packages are an optional extra: ``pip install -e ".[trackers]"``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}
"""``report_to`` name -> the package it needs."""


def names(report_to: str | list[str] | None) -> list[str]:
    """``report_to`` as a list of tracker names: ``"none"`` (or None, or []) is none; a string may
    list several, comma-separated (``"tensorboard,wandb"``). Each name must be a known tracker whose
    package is installed, else ``ValueError("report_to: ...")`` (a config names its file with it)."""
    if report_to is None or report_to == "none":
        return []
    listed = [n.strip() for n in report_to.split(",")] if isinstance(report_to, str) else list(report_to)
    for name in listed:
        if name not in TRACKERS:
            raise ValueError(f"report_to: unknown tracker {name!r}; expected 'none' or some of {sorted(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ValueError(
                f"report_to: the tracker {name!r} is not installed; pip install {TRACKERS[name]}"
                " (or the extra: pip install -e '.[trackers]')"
            )
    return listed


def hparams(config: dict) -> dict:
    """A config as trackers take hyperparameters: scalars kept, lists and None written as text."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in config.items()}


def make(report_to: list[str], output_dir: str | Path, run_name: str) -> list:
    """accelerate tracker objects for ``report_to`` (not yet started); local ones log under
    ``<output_dir>/trackers``."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    report_to = names(report_to)
    logging_dir = Path(output_dir) / "trackers"
    made = []
    for name in report_to:
        cls = LOGGER_TYPE_TO_CLASS[name]
        made.append(cls(run_name, str(logging_dir)) if cls.requires_logging_directory else cls(run_name))
    return made


def resume_at(trackers: list, step: int) -> None:
    """A run resumed at ``step`` logs that step and the ones after it again: TensorBoard drops what
    it holds from ``step`` on (``purge_step``), as ``metrics.jsonl`` is cut there."""
    for tracker in trackers:
        if tracker.name == "tensorboard":
            tracker.init_kwargs["purge_step"] = step


class Trackers:
    """Started trackers for a loop without an ``Accelerator`` (PPO-Lagrangian): ``log`` then ``finish``."""

    def __init__(self, report_to: list[str], output_dir: str | Path, run_name: str, config: dict, start: int = 0):
        self.trackers = make(report_to, output_dir, run_name)
        if start:
            resume_at(self.trackers, start + 1)
        for tracker in self.trackers:
            tracker.start()
            tracker.store_init_configuration(hparams(config))

    def log(self, values: dict, step: int) -> None:
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


def read_tensorboard(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``folder``: ``tag -> [(step, value)]``, by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted({p.parent for p in Path(folder).rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(values) for tag, values in found.items()}
