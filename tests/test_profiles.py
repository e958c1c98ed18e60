"""One settings file per profile (bfpo/settings/*.yaml, bfpo.profiles): read everywhere, checked, printed."""

import json

import pytest
import yaml

from bfpo import notebooks as runner
from bfpo import profiles, study
from bfpo.errors import BadInput
from bfpo.io import project_path


def test_every_profile_has_a_settings_file_that_loads():
    for name in profiles.NAMES:
        settings = profiles.load(name)
        assert set(settings) == set(profiles.SECTIONS)
    assert set(study.PROFILES) == {n for n in profiles.NAMES if profiles.load(n)["study"] is not None}
    assert study.PROFILES["cpu"].sft_steps == profiles.load("cpu")["training"]["sft"]["steps"]


def test_the_notebooks_hold_no_settings_of_their_own():
    for nb in sorted(project_path("notebooks").glob("0[1-5]_*.py")):
        text = nb.read_text()
        assert "SETTINGS = {" not in text and "learning_rate=3e-3" not in text, nb.name
        assert "settings_file = None" in text, f"{nb.name}: no settings_file parameter"


def _copy(tmp_path, profile, change):
    settings = yaml.safe_load(profiles.path(profile).read_text())
    change(settings)
    path = tmp_path / f"{profile}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_a_changed_copy_changes_the_run(tmp_path, capsys):
    def change(s):
        s["theory"]["steps"] = 3500
        s["study"]["budget"]["steps"] = 7
        s["training"]["sft"]["learning_rate"] = 1e-3

    copy = _copy(tmp_path, "smoke", change)
    assert study.profile_settings("smoke", copy).budget.steps == 7
    assert study.profile_settings("smoke").budget.steps == study.PROFILES["smoke"].budget.steps != 7
    assert runner.main(["--profile", "smoke", "--settings", str(copy), "--plan"]) == 0
    out = capsys.readouterr().out
    assert f"resolved settings from {copy}" in out and "steps: 7" in out and "learning_rate: 0.001" in out
    # notebook 01 run with the copy: its results hold the copy's value
    runner.run(
        "smoke",
        only=["01"],
        output_dir=tmp_path / "runs",
        figures_dir=tmp_path / "figs",
        progress=False,
        parameters={"settings_file": str(copy)},
    )
    assert json.loads((tmp_path / "runs" / "01_theory" / "results.json").read_text())["steps"] == 3500


def test_bfpo_constants_and_methods_of_a_copy_reach_notebook_04s_runs(tmp_path):
    """training.bfpo's alpha and b1 (notebook 03's) and study.methods of a --settings copy are what notebook 04's
    runs and plan use, not the packaged file's or TrainConfig's defaults."""
    from bfpo import gpu_plan
    from bfpo import toyworld as tw

    def change(s):
        s["training"]["bfpo"]["alpha"], s["training"]["bfpo"]["b1"] = 0.25, 4.0
        s["study"]["methods"] = ["bfpo", "dpo_helpful"]

    copy = _copy(tmp_path, "smoke", change)
    resolved = study.profile_settings("smoke", copy)
    assert (resolved.budget.alpha, resolved.budget.b1) == (0.25, 4.0) and resolved.methods == ("bfpo", "dpo_helpful")
    assert (study.PROFILES["smoke"].budget.alpha, study.PROFILES["smoke"].budget.b1) == (0.5, 3.0)
    # the trainings notebook 04 queues carry them
    for name, ds in (("pairs", tw.preference_pairs(40, tw.WorldConfig(seed=0))), ("buffer", tw.buffer_pairs(8))):
        study.bdata.save(ds, tmp_path / "data" / name)
    (run,) = study.suite_jobs({1: "some/start"}, tmp_path / "data" / "pairs", tmp_path / "data" / "buffer",
                              tmp_path / "out", ["bfpo"], [1], resolved.budget)  # fmt: skip
    queued = yaml.safe_load((tmp_path / "out" / "bfpo" / "default" / "seed1" / "run" / "train_config.yaml").read_text())
    assert run.method == "bfpo" and (queued["alpha"], queued["b1"]) == (0.25, 4.0)
    plan = gpu_plan.build("gpu", settings_file=_copy(tmp_path, "gpu", lambda s: s["study"].update(methods=["bfpo"])))
    assert plan["methods"] == ["bfpo"]


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda s: s["study"].update(seeds=[0, 1, 2, 3]), "share [0]"),
        (lambda s: s["study"]["budget"].update(stepz=3), "study.budget: unknown key(s) ['stepz']"),
        (lambda s: s["training"]["sft"].update(learning_rate="fast"), "training.sft: learning_rate: expected float"),
        (lambda s: s.update(extra={}), "unknown section(s) ['extra']"),
        (lambda s: s["theory"].update(taus=0.1), "theory: unknown key 'taus'"),
    ],
)
def test_a_bad_settings_file_is_one_line_naming_it(change, words, tmp_path, capsys):
    copy = _copy(tmp_path, "smoke", change)
    assert runner.main(["--profile", "smoke", "--settings", str(copy), "--only", "04"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err and ("smoke.yaml" in err or "share" in err), err
    with pytest.raises(BadInput):
        profiles.load("nope")
