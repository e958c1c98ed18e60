"""The notebooks' last cells: "What we saw", every number read from the results files."""

import json

import nbformat

from bfpo import what_we_saw
from bfpo.io import project_path


def test_every_notebook_ends_with_what_we_saw_read_from_its_results():
    for path in sorted(project_path("notebooks").glob("0*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        heading, last = nb.cells[-2], nb.cells[-1]
        assert heading.cell_type == "markdown" and heading.source.startswith("## What we saw"), path.name
        assert last.cell_type == "code" and "what_we_saw." in last.source and len(last.source.splitlines()) <= 3


def test_the_words_follow_the_numbers(tmp_path):
    results = {
        "sft": {"steps": 600},
        "bfpo": {"steps": 300},
        "processes": 2,
        "final_margins": {"safe>unsafe": 0.9, "safe>safe": 0.3, "unsafe>unsafe": -0.5, "unsafe>safe": -0.8},
        "judged": {
            k: {"helpfulness": 0.5, "harmlessness": h, "over_refusal": 0.2}
            for k, h in (("SFT (test wordings)", 0.41), ("BFPO (test wordings)", 0.57))
        },
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    text = what_we_saw.training(path)
    assert "the order of its targets g" in text and "harmlessness 0.41 -> 0.57" in text
    results["final_margins"]["unsafe>safe"] = 2.0  # a planted wrong order
    path.write_text(json.dumps(results))
    assert "not the order of its targets g" in what_we_saw.training(path)
