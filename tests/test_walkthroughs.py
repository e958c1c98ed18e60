"""Notebooks 03-06 read as walk-throughs: short cells that call the package, the paper branch in one tagged
section, and the runner keeps only the cells of the profile it runs."""

import json

import nbformat
import pytest
import yaml

from bfpo import notebooks as runner
from bfpo import profiles, protocol
from bfpo import safehelp_run as sr
from bfpo.io import project_path

WALKTHROUGHS = [
    project_path(f"notebooks/{n}.ipynb") for n in ("03_training", "04_baselines", "05_evaluation", "06_figures")
]
MAX_CELL_LINES = 25


@pytest.mark.parametrize("path", WALKTHROUGHS, ids=lambda p: p.stem)
def test_no_code_cell_is_long_and_no_cell_branches_on_the_paper_profile(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        lines = cell.source.strip().splitlines()
        assert len(lines) <= MAX_CELL_LINES, f"{path.name} cell {i}: {len(lines)} lines (first: {lines[0]!r})"
        assert 'profile != "paper"' not in cell.source and 'profile == "paper"' not in cell.source, (
            f"{path.name} cell {i}: a paper branch outside the tagged paper section"
        )


@pytest.mark.parametrize("path", WALKTHROUGHS[:2], ids=lambda p: p.stem)
def test_the_paper_branch_is_one_marked_section(path):
    nb = nbformat.read(path, as_version=4)
    tags = [set(c.metadata.get("tags", ())) for c in nb.cells]
    paper = [i for i, t in enumerate(tags) if "paper" in t]
    assert paper, f"{path.name}: no cell tagged paper"
    assert paper == list(range(paper[0], paper[-1] + 1)), "the paper cells are one run of cells"
    heading = nb.cells[paper[0] - 1]
    assert heading.cell_type == "markdown" and heading.source.startswith("## The paper profile"), heading.source
    assert any("safehelp" in t for t in tags), f"{path.name}: the SafeHelp cells are tagged"


def test_the_runner_keeps_the_cells_of_the_profile():
    path = project_path("notebooks/04_baselines.ipynb")
    every = nbformat.read(path, as_version=4).cells
    for profile in ("smoke", "cpu", "gpu", "paper"):
        kept = runner.profile_cells(path, profile).cells
        tags = [set(c.metadata.get("tags", ())) for c in kept]
        other = "safehelp" if profile == "paper" else "paper"
        assert not any(other in t for t in tags), profile
        untagged = [c.source for c in every if not {"paper", "safehelp"} & set(c.metadata.get("tags", ()))]
        assert [c.source for c in kept if not {"paper", "safehelp"} & set(c.metadata.get("tags", ()))] == untagged
        assert sum("parameters" in t for t in tags) == 1
    assert len(runner.profile_cells(path, "paper").cells) < len(every) > len(runner.profile_cells(path, "smoke").cells)


def _fake_run(tmp_path):
    (tmp_path / "runs" / "02_labeling" / "safehelp" / "pairs").mkdir(parents=True)
    (tmp_path / "runs" / "03_training" / "sft" / "model").mkdir(parents=True)
    return tmp_path / "runs"


def test_protocol_setup_resolves_the_profile_and_refuses_bad_parameters(tmp_path):
    runs = _fake_run(tmp_path)
    s = protocol.setup("smoke", output_dir=runs, seeds=[1, 2, 3, 4], steps=7)
    assert s.seeds == [1, 2, 3, 4] and s.budget.steps == 7 and s.results["halves"] == {"A": [1, 2], "B": [3, 4]}
    assert set(s.grid) == set(s.methods) and s.results["grid"] is s.grid
    paper = protocol.setup("paper", output_dir=runs)
    assert paper.P is None and paper.seeds == [42] and paper.results == {"profile": "paper", "methods": paper.methods}
    with pytest.raises(ValueError, match="profile: expected one of"):
        protocol.setup("laptop", output_dir=runs)
    with pytest.raises(ValueError, match=r"methods: unknown \['ppo2'\]"):
        protocol.setup("smoke", output_dir=runs, methods=["bfpo", "ppo2"])
    with pytest.raises(FileNotFoundError, match="run notebooks 02 and 03 first"):
        protocol.setup("smoke", output_dir=tmp_path / "elsewhere")


def test_notebook_03_configs_come_from_the_settings_file(tmp_path):
    settings = yaml.safe_load(profiles.path("smoke").read_text())
    settings["training"]["bfpo"]["beta"] = 0.3
    settings["training"]["sft"]["global_batch"] = 8
    copy = tmp_path / "smoke.yaml"
    copy.write_text(yaml.safe_dump(settings))
    r = sr.setup("smoke", copy, tmp_path / "runs", processes=2)
    sft, bfpo = sr.sft_config(r, tmp_path / "init"), sr.bfpo_config(r)
    assert bfpo.beta == 0.3 and sft.per_device_batch_size == 4 and sft.max_steps == settings["training"]["sft"]["steps"]
    assert (
        bfpo.mixed_precision == r.budget.mixed_precision
        and bfpo.buffer_ratio == settings["training"]["bfpo"]["buffer_ratio"]
    )
    assert sr.setup("smoke", copy, tmp_path / "runs", bfpo_steps=11).bfpo_steps == 11
    assert sr.setup("paper", None, tmp_path / "runs").budget is None


def test_late_margins_average_the_last_quarter():
    logs = [{"margin/a": float(i), "margin/b": 1.0} for i in range(8)] + [{"loss": 0.0}]
    assert sr.late_margins(logs, ["a", "b"]) == {"a": 7.0, "b": 1.0}  # the last 2 of 9 logs; one has margins
    assert json.dumps(sr.late_margins([], ["a"])) == '{"a": 0.0}'
