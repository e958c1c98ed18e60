"""The wheels the GPU check needs beyond a GPU image's own stack, for a GPU node without network.

    python benchmarks/gpu_wheels.py --list                 # what and which versions (offline)
    python benchmarks/gpu_wheels.py --download wheels/gpu  # fetch them here (network), sizes, write the list

A typical GPU image (Python 3.12) has torch, transformers, accelerate, peft, pandas, pyarrow, matplotlib,
seaborn, tensorboard and pytest (:data:`IMAGE`), not ``datasets``. What the check imports beyond that
(:data:`NEEDED`) and every requirement of it that the image's packages do not already bring is the set
to carry, at the versions of the lock (the ones installed in this environment). ``--download`` fetches
them for CPython 3.12 on x86-64 Linux and writes ``benchmarks/gpu_wheels.txt``: a pip requirements file
with each wheel's size, which ``make gpu-check`` installs from ``wheels/gpu`` with ``--no-index``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ["torch", "transformers", "accelerate", "peft", "pandas", "pyarrow", "matplotlib", "seaborn"]
IMAGE += ["tensorboard", "pytest"]
NEEDED = ["datasets"]
LIMIT_MB = 60
TARGET = {"python_version": "3.12", "extra": ""}


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def closure(names: list[str]) -> set[str]:
    """``names`` and everything they require (markers read for CPython 3.12 on Linux, no extras)."""
    seen, todo = set(), [_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not Marker(str(req.marker)).evaluate(TARGET):
                continue
            todo.append(_name(req.name))
    return seen


def wheels() -> list[tuple[str, str]]:
    """(name, locked version) of each distribution to carry, sorted."""
    carry = closure(NEEDED) - closure(IMAGE)
    return sorted((name, md.version(name)) for name in carry)


def download(folder: Path) -> list[tuple[str, str, float]]:
    """Fetch the wheels for CPython 3.12 on manylinux x86-64; (name, version, MB) each."""
    folder.mkdir(parents=True, exist_ok=True)
    pins = [f"{n}=={v}" for n, v in wheels()]
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(folder)]
    cmd += ["--python-version", "3.12", "--implementation", "cp", *(f"--platform={p}" for p in platforms), *pins]
    subprocess.run(cmd, check=True)
    sizes = []
    for name, version in wheels():
        found = [
            p for p in folder.glob("*.whl") if _name(p.name.split("-")[0]) == name and p.name.split("-")[1] == version
        ]
        sizes.append((name, version, sum(p.stat().st_size for p in found) / 2**20))
    return sizes


def write_list(sizes: list[tuple[str, str, float]], path: Path) -> None:
    total = sum(mb for *_, mb in sizes)
    lines = [
        "# The wheels the GPU check needs beyond a GPU image's stack (benchmarks/gpu_wheels.py writes this file).",
        f"# CPython 3.12, x86-64 Linux; {len(sizes)} wheels, {total:.1f} MB in all (limit {LIMIT_MB} MB).",
        "# make gpu-wheels fetches them into wheels/gpu; make gpu-check installs them from there, offline.",
        *(f"{n}=={v}  # {mb:.2f} MB" for n, v, mb in sizes),
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_wheels.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the wheels to carry (offline)")
    parser.add_argument("--download", metavar="FOLDER", help="fetch them into FOLDER and rewrite gpu_wheels.txt")
    args = parser.parse_args(argv)
    if args.download:
        sizes = download(Path(args.download))
        write_list(sizes, ROOT / "benchmarks" / "gpu_wheels.txt")
        total = sum(mb for *_, mb in sizes)
        print(f"{len(sizes)} wheels, {total:.1f} MB in {args.download} (limit {LIMIT_MB} MB)")
        return 0 if total < LIMIT_MB else 1
    for name, version in wheels():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
