"""The paper configs against the official recipe, value by value (configs/official_recipe.yaml),
and the paper plan, checked and printed offline."""

import re

import pytest
import yaml

from bfpo import notebooks as runner
from bfpo import plan
from bfpo.errors import BadInput
from bfpo.io import project_path
from bfpo.train import TrainConfig

OFFICIAL = yaml.safe_load(project_path("configs/official_recipe.yaml").read_text())


def _same(ours, official) -> bool:
    if isinstance(official, float | int) and not isinstance(official, bool):
        return isinstance(ours, float | int) and float(ours) == pytest.approx(float(official))
    return ours == official


STAGES = sorted(k for k, v in OFFICIAL.items() if "config" in v)


@pytest.mark.parametrize("stage", STAGES)
def test_paper_config_matches_the_official_recipe(stage):
    spec = OFFICIAL[stage]
    ours = TrainConfig.from_yaml(project_path(spec["config"])).to_dict()
    drift = [
        f"{row['key']}: ours {ours[row['key']]!r}, official {row['official']!r} ({row['source']})"
        for row in spec["keys"]
        if not _same(ours[row["key"]], row["official"])
    ]
    assert not drift, f"{spec['config']} drifted from the official recipe: {drift}"
    assert all(row["source"] for row in spec["keys"] + spec["data"] + spec.get("differences", []) if "source" in row)


def test_every_remaining_difference_is_named_in_the_docs():
    page = project_path("docs/profiles.md").read_text(encoding="utf-8")
    section = page[page.index("## The paper profile and the official code") :]
    section = section[: section.index("\n## ")]
    for stage in OFFICIAL.values():
        for diff in stage.get("differences", []):
            assert re.search(re.escape(diff["what"]), section, re.IGNORECASE), diff["what"]


def test_the_official_evaluation_is_registered_and_run_by_the_paper_profile():
    from bfpo import evaluation

    spec = OFFICIAL["evaluation"]
    assert [row["task"] for row in spec["tasks"]] == evaluation.OFFICIAL_TASKS
    assert all(r["source"] for r in spec["tasks"])
    for task in evaluation.OFFICIAL_TASKS:
        assert task in evaluation.TASKS and evaluation.MAIN_METRICS[task], task
        local = task in evaluation.VENDORED_TASKS or task == "truthfulqa_gen"
        assert local or evaluation.hub_sources(task), f"{task}: neither vendored nor on the hub"
    assert evaluation.DECODINGS["official"].temperature == 0.7 and evaluation.DECODINGS["official"].top_p == 0.95
    assert evaluation.DECODINGS["official"].max_new_tokens == 256
    from bfpo import profiles

    settings = profiles.load("paper")["evaluation"]
    paper = evaluation.suite(
        "paper", project_path("runs/paper"), settings["limit_mc"], settings["limit_generative"], settings["judge"]
    )
    assert paper.tasks[: len(evaluation.OFFICIAL_TASKS)] == evaluation.OFFICIAL_TASKS
    assert (paper.judge, paper.decoding, paper.bos_rule) == ("harmbench_cls_contextual", "official", "none")
    assert paper.limits == {"mc": None, "generative": None} and "BFPO" in paper.models
    notebook = project_path("notebooks/05_evaluation.py").read_text(encoding="utf-8")
    assert 'setup = evaluation.suite(profile, runs, limit_mc, limit_generative, settings["judge"])' in notebook


def test_the_plan_checks_and_prints_every_stage_offline(capsys):
    assert runner.main(["--profile", "paper", "--plan"]) == 0
    out = capsys.readouterr().out
    stages = ("1. labelling (notebook 02)", "2. SFT (notebook 03)", "3. BFPO (notebook 03)", "figures (notebook 06)")
    for needle in stages:
        assert needle in out
    assert "PKU-Alignment/PKU-SafeRLHF@ff7ba91063016c78a225b0f74e1c0860bb18230f" in out
    assert "about 24 GPU-hours (quoted" in out and "mistralai/Mistral-7B-v0.1@main" in out
    assert "BFPO (red-teaming)" in out and "2 x 2 GPUs x 4 = 16" in out
    assert "steps           938 (30,000 pairs / 32 per step)" in out, "an equal buffer batch on top, as official"
    assert "HuggingFaceH4/ultrachat_200k@main [train_sft], all, every turn of each dialogue" in out
    for needle in (
        "Babelscape/ALERT@main [alert_adversarial/test]",
        "hails/bigbench@main [fact_checker_zero_shot",
        "allenai/real-toxicity-prompts@main [train], the records the task keeps",
    ):
        assert needle in out


def test_the_plan_catches_a_broken_chain_and_bad_ids():
    broken = [s for s in plan.PAPER_STAGES if s.name != "SFT"]  # BFPO then starts from a stage nobody runs
    with pytest.raises(BadInput, match="run by no earlier stage"):
        plan.build_plan(broken)
    bad = plan.Stage("x", "09", "y", start="not a hub id")
    with pytest.raises(BadInput, match="not a hub id"):
        plan.build_plan([bad])
    bad = plan.Stage("x", "09", "y", start="org/model", start_revision="v1?")
    with pytest.raises(BadInput, match="neither a commit sha nor a branch"):
        plan.build_plan([bad])
