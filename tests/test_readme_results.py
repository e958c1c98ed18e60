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


def test_readme_verdicts_are_the_committed_cpu_run():
    results = project_path("figures/cpu/RESULTS.md").read_text().splitlines()
    readme = project_path("README.md").read_text().splitlines()
    verdicts = {r[0]: r[-1] for r in _table(results, "| claim of the paper |")}
    quoted = _table(readme, "| claim | quoted | measured: change from the SFT start, paired | verdict |")
    by_claim = {r[0]: r[-1] for r in quoted}
    for claim, verdict in by_claim.items():
        match = [v for c, v in verdicts.items() if c == claim or c.startswith(claim.split(" (")[0])]
        if claim.startswith("under 10%"):
            match = [v for c, v in verdicts.items() if c.startswith("compute to reach")]
        assert match and match[0] == verdict, (claim, verdict, match)
