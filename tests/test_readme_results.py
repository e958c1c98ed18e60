"""The README quotes the committed cpu run: its numbers must be the ones in figures/cpu/RESULTS.md."""

import re

from bfpo.io import project_path


def _table(lines: list[str], header: str) -> list[list[str]]:
    """The rows (cells, stripped) of the markdown table whose header line starts with ``header``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _name(cell: str) -> str:
    return re.sub(r"\s*\((lr|d =|m =)[^)]*\)$", "", cell.replace("**", "")).strip()


def test_readme_method_table_is_the_committed_cpu_run():
    results = project_path("figures/cpu/RESULTS.md").read_text().splitlines()
    readme = project_path("README.md").read_text().splitlines()
    measured = {r[0]: r[1:] for r in _table(results, "| method | helpfulness | over-refusal | harmlessness |")}
    quoted = {_name(r[0]): r[1:] for r in _table(readme, "| method (chosen point) |")}
    assert quoted and set(quoted) == set(measured)
    for name, cells in quoted.items():
        assert cells == measured[name], name


def test_readme_headline_is_the_committed_cpu_runs_replicated_table():
    """The README's headline table is RESULTS.md's, cell for cell: a verdict only where half A, half B
    and all seeds agree, "not replicated" elsewhere."""
    results = project_path("figures/cpu/RESULTS.md").read_text().splitlines()
    readme = project_path("README.md").read_text().splitlines()
    header = "| claim | quoted | change from the SFT start, all seeds | half A | half B | verdict (replicated only) |"
    measured, quoted = _table(results, header), _table(readme, header)
    assert quoted and quoted == measured
    replicated = {r[0]: r[-1] for r in _table(results, "| claim | half A")}
    for row in quoted:
        if row[0] in replicated and replicated[row[0]] == "**yes**":
            assert not row[-1].startswith("not replicated"), row
        else:
            assert row[-1].startswith("not replicated"), row


def test_every_interval_the_readme_quotes_is_in_the_committed_results():
    """The plain-words summary under the README's tables quotes intervals from RESULTS.md verbatim, so a
    re-run that changes them fails here until the words are rewritten."""
    results = project_path("figures/cpu/RESULTS.md").read_text()
    readme = project_path("README.md").read_text()
    section = readme[readme.index("## Results (cpu profile)") : readme.index("## Where to read on")]
    quoted = re.findall(r"[-+]?\d+\.\d+ \[[-+]?\d+\.\d+, [-+]?\d+\.\d+\]", section)
    assert len(quoted) >= 5, "the summary quotes the headline intervals"
    missing = [q for q in quoted if q not in results]
    assert not missing, f"README quotes intervals that RESULTS.md does not hold: {missing}"


def test_the_study_page_power_table_is_the_committed_cpu_runs():
    results = project_path("figures/cpu/RESULTS.md").read_text().splitlines()
    page = project_path("docs/study.md").read_text().splitlines()
    header = "| method, metric | seeds x prompts |"
    assert _table(page, header) == _table(results, header) != []
