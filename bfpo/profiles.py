"""One settings file per profile: ``bfpo/settings/<profile>.yaml``.

Each holds every setting a profile's run reads, in one section per stage:

    theory       notebook 01 (the finite bandit)
    labeling     notebook 02 (the data sets and the SafeHelp world's size)
    training     notebook 03 (SFT then BFPO; the paper profile names its recipe's config files; ``real``:
                 the real chat model's code path at toy size, bfpo.real_check)
    study        notebook 04 (bfpo.study.StudyProfile and its Budget; null where the study does not run)
    evaluation   notebook 05 (bfpo.evaluation.suite)

:func:`load` reads a profile's file (or any copy of it: ``--settings FILE``) and checks it: every
section there, no unknown key, each value of the type its default has. A run's notebooks read their
settings from the file and from the config objects built from it, never from literals in the
notebooks; ``python -m bfpo.notebooks --profile P --plan`` prints them resolved.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bfpo.errors import BadInput

NAMES = ("smoke", "cpu", "gpu", "paper")
FOLDER = "bfpo/settings"  # package data: an installed wheel holds the files too (pyproject.toml)

_TRAIN_RUN = {"learning_rate": float, "warmup_ratio": float, "global_batch": int, "steps": int}
_BFPO_RUN = {"learning_rate": float, "beta": float, "alpha": float, "b1": float, "buffer_ratio": float}
_REAL_RUN = {  # bfpo.real_check: the real chat model's code path at toy size
    "model": str,
    "pairs": int,
    "steps": int,
    "global_batch": int,
    "learning_rate": float,
    "beta": float,
    "max_length": int,
    "trainable": str,
    "mixed_precision": str,
    "prompts": int,
    "max_new_tokens": int,
}
SECTIONS = {
    "theory": {"tau": float, "alpha": float, "b1": float, "steps": int, "lr": float},
    "labeling": {
        "hub": bool,
        "safehelp_pairs": int,
        "safehelp_buffer": int,
        "safehelp_sft": int,
        "safehelp_eval_pairs": int,
    },
    "training": {
        "processes": int,
        "sft": dict,
        "bfpo": dict,
        "eval_samples": int,
        "sft_config": str,
        "bfpo_config": str,
        "accelerate_config": str,
        "real": dict,
    },
    "study": None,  # checked by bfpo.study.StudyProfile.from_settings
    "evaluation": {
        "limit_mc": int,
        "limit_generative": int,
        "safehelp_samples": int,
        "judge": str,
        "parallel": int,
    },
}
"""Each section's keys and the type of each value (None: checked where the section is read)."""
SUB_RUNS = {"sft": _TRAIN_RUN, "bfpo": {**_TRAIN_RUN, **_BFPO_RUN}, "real": _REAL_RUN}


def path(profile: str) -> Path:
    """The settings file of ``profile`` in this checkout."""
    if profile not in NAMES:
        raise BadInput(f"profile: expected one of {', '.join(NAMES)}, got {profile!r}")
    return Path(__file__).parent / "settings" / f"{profile}.yaml"


def load(profile: str, settings_file: str | Path | None = None) -> dict:
    """The checked settings of ``profile``: from ``settings_file`` when given, else its file here."""
    file = Path(settings_file) if settings_file else path(profile)
    if not file.is_file():
        raise BadInput(f"--settings: {file}: no such file (a profile's settings: {FOLDER}/<profile>.yaml)")
    try:
        settings = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise BadInput(f"{file}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(settings, dict):
        raise BadInput(f"{file}: expected the sections {', '.join(SECTIONS)}")
    missing, unknown = sorted(set(SECTIONS) - set(settings)), sorted(set(settings) - set(SECTIONS))
    if missing or unknown:
        problem = f"missing section(s) {missing}" if missing else f"unknown section(s) {unknown}"
        raise BadInput(f"{file}: {problem}; a profile's settings have {', '.join(SECTIONS)}")
    for section, keys in SECTIONS.items():
        if keys is not None:
            _check(settings[section], keys, f"{file}: {section}")
    for run, keys in SUB_RUNS.items():
        if run in settings["training"]:
            _check(settings["training"][run], keys, f"{file}: training.{run}")
    return settings


def _check(values, keys: dict, where: str) -> None:
    if not isinstance(values, dict):
        raise BadInput(f"{where}: expected keys {', '.join(keys)}, got {values!r}")
    for key, value in values.items():
        if key not in keys:
            raise BadInput(f"{where}: unknown key {key!r} (known: {', '.join(keys)})")
        kind = keys[key]
        ok = value is None or isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or (kind in (int, float) and isinstance(value, bool)):
            raise BadInput(f"{where}: {key}: expected {kind.__name__}, got {value!r}")


def format_settings(profile: str, settings: dict, source: str | Path) -> str:
    """The resolved settings of a profile, as ``--plan`` prints them."""
    body = yaml.safe_dump(settings, sort_keys=False, default_flow_style=None, width=110)
    return f"# profile {profile}: resolved settings from {source}\n{body}"
