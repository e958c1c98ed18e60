"""data/: the vendored subsets and quoted numbers are whole, documented and licensed, and the code
reads them from the repository (``$BFPO_DATA_DIR``, else ``data/``), never from outside the clone."""

import hashlib
import re
from pathlib import Path

import pytest

from bfpo import io, report

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def recorded_sums() -> dict[str, str]:
    """``SHA256SUMS`` as {relative path: sha256}, in ``sha256sum`` format."""
    sums = {}
    for n, line in enumerate((DATA / "SHA256SUMS").read_text().splitlines(), 1):
        digest, name = line.split(maxsplit=1)
        assert re.fullmatch(r"[0-9a-f]{64}", digest), f"SHA256SUMS line {n}: not a sha256"
        sums[name.lstrip("*")] = digest
    return sums


def data_files() -> set[str]:
    """Every data file under data/ (the docs, sums and licence texts excluded)."""
    skip = {"SOURCES.md", "SHA256SUMS"}
    return {
        str(p.relative_to(DATA))
        for p in DATA.rglob("*")
        if p.is_file() and p.name not in skip and "LICENSES" not in p.parts
    }


@pytest.mark.parametrize("name", sorted(recorded_sums()))
def test_vendored_file_matches_its_recorded_sha256(name):
    digest = hashlib.sha256((DATA / name).read_bytes()).hexdigest()
    assert digest == recorded_sums()[name], f"data/{name} is damaged: its sha256 differs from data/SHA256SUMS"


def test_every_data_file_has_a_sum_and_a_source_row_with_its_licence():
    sums = recorded_sums()
    assert data_files() == set(sums), "a file in data/ without a recorded sum, or a sum without its file"
    sources = (DATA / "SOURCES.md").read_text(encoding="utf-8")
    rows = {r.split("|")[1].strip(): r for r in sources.splitlines() if r.startswith("| ") and r.count("|") == 9}
    rows.pop("File")  # the header
    for name in sums:
        if name.startswith("paper/"):
            continue
        assert name in rows, f"data/{name} has no row in data/SOURCES.md"
        licence = re.search(r"`LICENSES/([^`]+)`", rows[name])
        assert licence and (DATA / "LICENSES" / licence.group(1)).is_file(), f"data/{name}: licence text missing"
    assert (DATA / "paper" / "SOURCES.md").is_file()
    assert len(rows) == 27 and len(sums) == 28


def test_default_data_folder_is_the_repositorys(monkeypatch):
    monkeypatch.delenv("BFPO_DATA_DIR", raising=False)
    assert io.data_folder() == DATA
    assert report.reported_results_path() == DATA / "paper" / "bfpo_reported_results.csv"


def test_bfpo_data_dir_takes_precedence(monkeypatch, tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    monkeypatch.setenv("BFPO_DATA_DIR", str(tmp_path))
    assert io.data_file("x.txt") == tmp_path / "x.txt"
    with pytest.raises(FileNotFoundError) as e:
        io.data_file("xstest_prompts_450.csv")  # present in data/, but the variable decides
    message = str(e.value)
    assert "xstest_prompts_450.csv" in message and str(tmp_path) in message and "BFPO_DATA_DIR" in message


def test_nothing_reads_outside_the_clone():
    """No code, notebook, config or build file points at a folder beside the checkout (``../shared``)."""
    pattern = re.compile(r"\.\./shared|parent\s*/\s*[\"']shared[\"']|BFPO_PAPER_DIR")
    checked = [*ROOT.glob("bfpo/**/*.py"), *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("notebooks/*.py")]
    checked += [*ROOT.glob("benchmarks/*.py")]
    assert ROOT / "bfpo" / "evaluation" / "run.py" in checked, "subpackages are read too"
    checked += [*ROOT.glob("configs/**/*.yaml"), *(p for p in ROOT.glob("tests/*.py") if p.name != Path(__file__).name)]
    # .ci/run is left out: it checks that ../shared is absent
    checked += [ROOT / f for f in ("Makefile", "Dockerfile", "README.md", "pyproject.toml")]
    checked += [*ROOT.glob("docs/*.md")]
    offenders = [str(p.relative_to(ROOT)) for p in checked if pattern.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"these still refer to ../shared: {offenders}"
    assert "data" not in (ROOT / ".dockerignore").read_text().split(), "the Docker build context must hold data/"
