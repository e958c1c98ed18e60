"""Build the wheel and use it as a user would: installed without ``-e`` into a fresh virtual environment.

    python benchmarks/wheel_check.py        # make wheel-check; CI runs it after the tests

The fresh environment gets the wheel only (``--no-deps``); its dependencies come from the running
interpreter's environment (the lock's, made by ``make``) through a ``.pth`` line, so nothing is
downloaded and the check takes seconds. It then imports every module of the package from a folder
outside the checkout (so the checkout's ``bfpo/`` cannot stand in for the installed one) and runs the
three command-line entry points' ``--help``. One line per step; exit 1 on the first failure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIS = ("bfpo.train", "bfpo.evaluation", "bfpo.notebooks")


def modules() -> list[str]:
    """Every module of the package in the checkout, as import names."""
    names = []
    for path in sorted((ROOT / "bfpo").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def run(cmd: list[str], cwd: Path, what: str) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"wheel-check: {what} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
        sys.exit(1)
    return done.stdout


def build_wheel(tmp: Path) -> Path:
    """The wheel of the checkout, built in ``tmp`` from a copy of the package (so the build leaves no
    build/ or egg-info in the checkout)."""
    src = tmp / "src"
    shutil.copytree(ROOT / "bfpo", src / "bfpo", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp)], tmp, "pip wheel")
    (wheel,) = tmp.glob("bfpo-*.whl")
    return wheel


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bfpo-wheel-") as tmp:
        tmp = Path(tmp)
        wheel = build_wheel(tmp)
        print(f"wheel-check: built {wheel.name} ({wheel.stat().st_size / 1024:.0f} KiB)")
        venv = tmp / "venv"
        run([sys.executable, "-m", "venv", str(venv)], tmp, "python -m venv")
        python = venv / "bin" / "python"
        purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, "venv")
        # the dependencies: the running environment's site-packages, after the venv's own
        (Path(purelib.strip()) / "bfpo_lock_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], tmp, "pip install (not -e)")
        names = modules()
        where = run(
            [
                str(python),
                "-c",
                f"import importlib, bfpo; [importlib.import_module(m) for m in {names!r}]; print(bfpo.__file__)",
            ],
            tmp,
            "importing every module",
        ).strip()
        if not where.startswith(str(venv)):
            print(f"wheel-check: bfpo was imported from {where}, not from the installed wheel in {venv}")
            return 1
        print(f"wheel-check: imported {len(names)} modules from the installed wheel")
        for cli in CLIS:
            out = run([str(python), "-m", cli, "--help"], tmp, f"python -m {cli} --help")
            if "usage" not in out.lower():
                print(f"wheel-check: python -m {cli} --help printed no usage")
                return 1
            print(f"wheel-check: python -m {cli} --help ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
