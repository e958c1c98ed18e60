"""Run the numbered notebooks in order with papermill.

    python -m bfpo.notebooks --profile smoke            # every notebook, minutes (CI)
    python -m bfpo.notebooks --profile cpu              # the definitive CPU study (figures/cpu)
    python -m bfpo.notebooks --profile smoke --only 01  # just notebook 01

Executed copies go to ``runs/<profile>/notebooks/`` (the sources in ``notebooks/`` stay
without outputs); figures go to ``figures/`` (``figures/cpu/`` for the cpu profile); each
notebook writes its results under ``runs/<profile>/``. On failure the run stops and names the
notebook and the failing cell.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from bfpo import configs, locks, profiles
from bfpo.errors import BadInput, run_cli
from bfpo.io import project_path, write_json

PROFILES = profiles.NAMES
FIGURES = {"smoke": "figures", "cpu": "figures/cpu", "gpu": "figures/gpu", "paper": "figures/paper"}
"""Where each profile's figures and RESULTS.md go by default (the committed smoke and cpu results stay apart)."""

BAD_INPUT_ERRORS = ("BadInput", "ConfigError", "DataError", "NoIntactCheckpoint", "FileNotFoundError")
"""Error names that, raised in a notebook, mean bad input (the runner exits 2 for them)."""


PROFILE_TAGS = {"safehelp": ("smoke", "cpu", "gpu"), "paper": ("paper",)}
"""Cells tagged ``safehelp`` run in the SafeHelp profiles only, cells tagged ``paper`` in the paper profile
only (notebook 04 keeps its paper recipe in one tagged section); untagged cells run in every profile."""


def profile_cells(nb_path, profile: str):
    """The notebook at ``nb_path`` without the cells tagged for other profiles (:data:`PROFILE_TAGS`)."""
    import nbformat

    nb = nbformat.read(str(nb_path), as_version=4)
    skip = {tag for tag, profiles in PROFILE_TAGS.items() if profile not in profiles}
    nb.cells = [c for c in nb.cells if not skip & set(c.metadata.get("tags", ()))]
    return nb


class NotebookFailed(RuntimeError):
    """A notebook raised: the one-line message names the notebook, the cell and the error."""


class NotebookBadInput(NotebookFailed, BadInput):
    """A notebook stopped on bad input (a config key, a data record, a missing file)."""


def discover(notebooks_dir: str | Path = "notebooks", only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order; ``only`` keeps those whose
    name starts with one of the given prefixes (``01``, ``01_theory``)."""
    folder = project_path(notebooks_dir)
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise BadInput(f"{folder}: no numbered notebooks (NN_*.ipynb) here")
    if only:
        unknown = [o for o in only if not any(p.name.startswith(o) for p in found)]
        if unknown:
            names = ", ".join(p.stem for p in found)
            raise BadInput(f"--only {', '.join(unknown)}: no such notebook; known: {names}")
        found = [p for p in found if any(p.name.startswith(o) for o in only)]
    return found


def run(
    profile: str = "smoke",
    only: list[str] | None = None,
    output_dir: str | Path | None = None,
    figures_dir: str | Path | None = None,
    notebooks_dir: str | Path = "notebooks",
    kernel_name: str = "python3",
    progress: bool = True,
    parameters: dict | None = None,
    allow_cpu: bool = False,
) -> dict[str, float]:
    """Execute the notebooks; return the seconds each took. Raises :class:`NotebookFailed`.

    ``parameters`` are passed to every notebook on top of profile, output_dir and figures_dir
    (e.g. shorter runs for a test). ``allow_cpu`` runs a GPU profile's code path on the CPU (its test,
    at toy size); without it a GPU profile on a machine without CUDA is refused.
    """
    if profile not in PROFILES:
        raise BadInput(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    from bfpo import study

    if profile in study.GPU_PROFILES and not allow_cpu:
        check_cuda(profile)
    out = project_path(output_dir or f"runs/{profile}")
    figures_dir = figures_dir or FIGURES[profile]
    params = dict(
        profile=profile, output_dir=str(out), figures_dir=str(project_path(figures_dir)), **(parameters or {})
    )
    from bfpo import profiles

    if params.get("settings_file"):  # a copy of the profile's settings file: every notebook reads it
        params["settings_file"] = str(Path(params["settings_file"]).resolve())
    profiles.load(profile, params.get("settings_file"))  # checked before any notebook runs
    notebooks = discover(notebooks_dir, only)
    check_study(profile, params)
    # one runner per results folder and per figures folder: a second one stops here, having written nothing
    figures = Path(params["figures_dir"])
    with (
        locks.hold(out, "python -m bfpo.notebooks"),
        locks.hold_if(figures.resolve() != out.resolve(), figures, "python -m bfpo.notebooks"),
    ):
        return _execute(notebooks, params, out, kernel_name, progress)


def check_cuda(profile: str) -> None:
    """A GPU profile needs a CUDA device: without one, one line that says what to do instead."""
    import torch

    from bfpo import devices

    if not torch.cuda.is_available():
        raise BadInput(
            f"--profile {profile}: this machine has no CUDA device ({devices.available()}); the {profile} profile "
            f"runs on one GPU (README, On a GPU). Here: --profile {profile} --plan prints its plan, --profile cpu "
            "runs the CPU study"
        )


def check_study(profile: str, params: dict) -> None:
    """Refuse a SafeHelp study configuration before any notebook runs (overlapping report and tuning
    seeds, a half with fewer than 2 seeds, a world too small for the declared test set): one line."""
    from bfpo import study

    if profile in study.PROFILES:
        keys = ("seeds", "tuning_seeds", "harmful_test_prompts")
        given = {k: params[k] for k in keys if params.get(k) is not None}
        study.profile_settings(profile, params.get("settings_file"), **given)


def _execute(notebooks: list[Path], params: dict, out: Path, kernel_name: str, progress: bool) -> dict[str, float]:
    """Execute ``notebooks`` in order into ``out/notebooks``; each one's tally of reused and re-run work
    (trainings, judgements, evaluations, from ``$BFPO_LEDGER``) is printed beside its time."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from bfpo import runs

    executed_dir = out / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    reuse: dict[str, dict] = {}
    bar = tqdm(notebooks, desc=f"notebooks ({params['profile']})", unit="nb", disable=not progress)
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        start = time.perf_counter()
        ledger = out / "reuse" / f"{nb.stem}.jsonl"
        ledger.parent.mkdir(parents=True, exist_ok=True)
        ledger.unlink(missing_ok=True)
        try:
            with _env(runs.LEDGER_ENV, str(ledger)):  # the kernel inherits it
                pm.execute_notebook(
                    profile_cells(nb, params["profile"]),
                    str(executed_dir / nb.name),
                    parameters=params,
                    kernel_name=kernel_name,
                    cwd=str(project_path(".")),
                    progress_bar=False,
                )
        except PapermillExecutionError as err:
            first_line = next((line for line in err.source.splitlines() if line.strip()), "")
            kind = NotebookBadInput if err.ename in BAD_INPUT_ERRORS else NotebookFailed
            raise kind(
                f"{nb.name} failed in cell {err.cell_index} (starts with {first_line.strip()!r}): "
                f"{err.ename}: {' | '.join(line for line in err.evalue.splitlines() if line.strip())} "
                f"(full traceback in {executed_dir / nb.name})"
            ) from None
        timings[nb.stem] = round(time.perf_counter() - start, 2)
        reuse[nb.stem] = runs.tally(ledger)
        tqdm.write(f"  {nb.stem}: {timings[nb.stem]:.1f} s ({runs.describe_tally(reuse[nb.stem])})")
    write_json(out / "timings.json", timings)
    write_json(out / "reuse.json", reuse)
    return timings


@contextlib.contextmanager
def _env(name: str, value: str):
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class PairsOutOfSync(BadInput):
    """A notebook and its text pair (``notebooks/NN_name.py``) hold different cells."""


def _cells(nb) -> list[tuple[str, str, tuple]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def check_pairs(folder=None) -> list[str]:
    """Each notebook and its jupytext text pair (percent format, the reviewed source) hold the same
    cells: type, source and tags. Returns the pairs checked; raises :class:`PairsOutOfSync` naming
    the first notebook and cell that differ, and the command that syncs them."""
    import jupytext

    folder = Path(folder) if folder is not None else project_path("notebooks")
    checked = []
    for nb_path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        py_path = nb_path.with_suffix(".py")
        if not py_path.is_file():
            raise PairsOutOfSync(f"{nb_path}: no text pair {py_path.name} (jupytext --set-formats ipynb,py:percent)")
        a, b = _cells(jupytext.read(nb_path)), _cells(jupytext.read(py_path))
        if a != b:
            k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            raise PairsOutOfSync(
                f"{nb_path} and {py_path.name} differ at cell {k + 1} ({len(a)} vs {len(b)} cells); edit the .py "
                f"and run: jupytext --sync {py_path}"
            )
        checked.append(nb_path.stem)
    return checked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bfpo.notebooks",
        description="Run the numbered notebooks in order with papermill (executed copies go to "
        "runs/<profile>/notebooks, figures to figures/).",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="smoke",
        help="smoke: CPU, minutes, for CI (default); cpu: the definitive CPU-scale study, 10 report seeds, about "
        "an hour on 2 cores; gpu: the same study with 30 report seeds and a 4-point grid, 10 minutes on one GPU; "
        "paper: the paper's settings, multi-GPU",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="PREFIX",
        help="run only the notebooks whose names start with these prefixes, e.g. 01 03",
    )
    configs.add_overrides(
        parser,
        "a parameter for every notebook run (repeatable; the value is read as YAML), e.g. --set 'seeds=[0, 1]' "
        "--set steps=40 (shorter runs; their results are not the profile's)",
    )
    parser.add_argument(
        "--settings",
        metavar="FILE",
        help="the profile's settings file (default: bfpo/settings/<profile>.yaml); a copy with other values "
        "runs the profile with them",
    )
    parser.add_argument("--output-dir", help="results and executed notebooks (default: runs/<profile>)")
    parser.add_argument(
        "--figures-dir", help="where figures are written (default: figures, figures/cpu or figures/paper by profile)"
    )
    parser.add_argument("--list", action="store_true", help="list the notebooks and exit")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the profile's resolved settings offline, and its plan: gpu, its jobs with estimated "
        "GPU-minutes and memory; paper, its configs, hub ids and revisions checked, and its stages",
    )
    parser.add_argument(
        "--check-pairs",
        action="store_true",
        help="check that each notebook and its text pair (notebooks/NN_name.py, jupytext) hold the same cells",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or BFPO_DEBUG=1)")
    args = parser.parse_args(argv)

    def work():
        if args.check_pairs:
            print(f"{len(check_pairs())} notebook pairs in sync")
            return
        if args.list:
            for nb in discover(only=args.only):
                print(nb.name)
            return
        if args.plan:
            from bfpo import gpu_plan, plan, profiles, study

            source = args.settings or profiles.path(args.profile)
            settings = profiles.load(args.profile, args.settings)
            if args.profile in study.PROFILES:  # the study as it runs: every field, defaults included
                resolved = dataclasses.asdict(study.profile_settings(args.profile, args.settings))
                settings["study"] = json.loads(json.dumps(resolved))
            print(profiles.format_settings(args.profile, settings, source), end="")
            if args.profile in study.GPU_PROFILES:
                print(gpu_plan.format_plan(gpu_plan.build(args.profile, settings_file=args.settings)), end="")
            elif args.profile == "paper":
                print(plan.format_plan(plan.build_plan()), end="")
            return
        parameters = dict(args.overrides) | ({"settings_file": args.settings} if args.settings else {})
        timings = run(args.profile, args.only, args.output_dir, args.figures_dir, parameters=parameters)
        print(f"ran {len(timings)} notebook(s) in {sum(timings.values()):.1f} s (profile {args.profile})")

    return run_cli("bfpo.notebooks", work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
