"""The papermill runner and the notebooks themselves."""

import json
from pathlib import Path

import nbformat
import pytest
import torch

from bfpo import notebooks as runner
from bfpo import toyworld as tw
from bfpo.errors import BadInput
from bfpo.io import project_path

NOTEBOOKS = sorted(project_path("notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_sources_are_clean_and_parametrised(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert 'profile = "smoke"' in tagged[0].source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "commit notebooks without outputs"


def test_every_notebook_and_its_text_pair_hold_the_same_cells(tmp_path):
    """notebooks/NN_name.py (jupytext percent format) is the reviewed source of each notebook; the check
    passes on the repository and names the cell of a pair that drifted."""
    import shutil

    assert runner.check_pairs() == [p.stem for p in NOTEBOOKS]
    for p in NOTEBOOKS[:1]:
        shutil.copy(p, tmp_path / p.name)
        shutil.copy(p.with_suffix(".py"), tmp_path / p.with_suffix(".py").name)
    py = tmp_path / NOTEBOOKS[0].with_suffix(".py").name
    assert runner.check_pairs(tmp_path) == [NOTEBOOKS[0].stem]
    py.write_text(py.read_text().replace("import torch", "import torch  # edited here only", 1))
    with pytest.raises(runner.PairsOutOfSync, match=r"01_theory.ipynb and 01_theory.py differ at cell \d+"):
        runner.check_pairs(tmp_path)
    py.unlink()
    with pytest.raises(runner.PairsOutOfSync, match="no text pair 01_theory.py"):
        runner.check_pairs(tmp_path)


def test_runner_executes_theory_notebook(tmp_path):
    timings = runner.run(
        "smoke", only=["01"], output_dir=tmp_path / "runs", figures_dir=tmp_path / "figs", progress=False
    )
    assert list(timings) == ["01_theory"]
    results = json.loads((tmp_path / "runs" / "01_theory" / "results.json").read_text())
    assert results["profile"] == "smoke"
    assert results["bfpo_max_abs_error"] < 1e-6
    assert results["optimum_max_abs_error"] < 1e-4
    assert results["safedpo_total_variation"] < 1e-2 and results["safedpo_unsafe_mass"] < 1e-3
    assert results["targets"] == {"11": 0.5, "10": 1.0, "01": -1.0, "00": -0.5}
    assert results["rankings"]["BFPO"] == ["helpful-safe", "unhelpful-safe", "unhelpful-unsafe", "helpful-unsafe"]
    dpo = results["probabilities"]["DPO (helpfulness)"]
    assert dpo["helpful-unsafe"] > dpo["unhelpful-safe"]
    for ext in ("png", "pdf", "md"):
        assert (tmp_path / "figs" / f"01_global_ranking.{ext}").stat().st_size > 0
    executed = nbformat.read(tmp_path / "runs" / "notebooks" / "01_theory.ipynb", as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    assert json.loads((tmp_path / "runs" / "timings.json").read_text()) == timings


def _write_notebook(path: Path, sources: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_runner_names_failing_notebook_and_cell(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _write_notebook(nbdir / "01_ok.ipynb", ['profile = "smoke"', "x = 1"])
    _write_notebook(nbdir / "02_broken.ipynb", ['profile = "smoke"', "x = 1", "raise ValueError('bad field')"])
    _write_notebook(nbdir / "03_never.ipynb", ['profile = "smoke"', "open('ran', 'w')"])
    with pytest.raises(runner.NotebookFailed, match=r"(?s)02_broken.ipynb failed in cell \d+ .*ValueError: bad field"):
        runner.run(
            "smoke", output_dir=tmp_path / "out", figures_dir=tmp_path / "f", notebooks_dir=nbdir, progress=False
        )
    assert (tmp_path / "out" / "notebooks" / "01_ok.ipynb").exists()
    assert not (tmp_path / "out" / "notebooks" / "03_never.ipynb").exists()  # stopped at the failure


def test_cli_reports_failure_with_exit_code(tmp_path, capsys):
    assert runner.main(["--only", "99"]) == 2
    assert "--only 99: no such notebook" in capsys.readouterr().err
    assert runner.main(["--list"]) == 0
    assert "01_theory.ipynb" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        runner.main(["--help"])
    assert exit_.value.code == 0
    assert "--profile" in capsys.readouterr().out


def test_unknown_profile():
    with pytest.raises(ValueError, match="profile"):
        runner.run("huge", only=["01"], progress=False)


def test_labeling_notebook_writes_labelled_data(tmp_path):
    from bfpo import data

    runner.run("smoke", only=["02"], output_dir=tmp_path / "runs", figures_dir=tmp_path / "figs", progress=False)
    out = tmp_path / "runs" / "02_labeling"
    results = json.loads((out / "results.json").read_text())
    assert results["judge_accuracy"] == {"clean": 1.0, "perturbed": 1.0}
    assert results["targets"] == {
        "safe > safe": 0.5,
        "safe > unsafe": 1.0,
        "unsafe > safe": -1.0,
        "unsafe > unsafe": -0.5,
    }
    assert results["real_pairs"]["pku_saferlhf"] == 16
    assert {(s["file"], s["line"]) for s in results["skipped"]} == {
        ("hh_rlhf_helpful_base_test_500.jsonl", 121),
        ("hh_rlhf_helpful_base_test_500.jsonl", 169),
        ("hh_rlhf_helpful_base_test_500.jsonl", 355),
        ("hh_rlhf_harmless_base_test_500.jsonl", 87),
    }
    counts = results["label_counts"]["safehelp"]
    assert all(n > 0 for n in counts.values()) and sum(counts.values()) == results["safehelp_pairs"]
    pairs = data.load(out / "safehelp" / "pairs")
    assert len(pairs) == results["safehelp_pairs"] and pairs.column_names == list(data.PAIR_COLUMNS)
    assert len(data.load(out / "safehelp" / "sft")) == results["safehelp_sft"]
    assert (tmp_path / "figs" / "02_label_combinations.png").stat().st_size > 0


@pytest.mark.slow
def test_pipeline_02_to_06_with_short_runs(tmp_path):
    """Notebooks 02 to 06 in sequence, each reading only what the earlier ones wrote, with short runs."""
    runner.run("smoke", only=["02"], output_dir=tmp_path / "runs", figures_dir=tmp_path / "figs", progress=False)
    runner.run(
        "smoke",
        only=["03"],
        output_dir=tmp_path / "runs",
        figures_dir=tmp_path / "figs",
        progress=False,
        parameters={"sft_steps": 40, "bfpo_steps": 40, "eval_samples": 1},
    )
    results = json.loads((tmp_path / "runs" / "03_training" / "results.json").read_text())
    assert results["sft"]["processes"] == 2 and results["bfpo"]["processes"] == 2
    assert results["bfpo"]["steps"] == 40 and results["bfpo"]["buffer_examples"] > 0
    m = results["final_margins"]
    assert m["safe>unsafe"] > 0 > m["unsafe>safe"]
    for key in ("SFT (test wordings)", "BFPO (training wordings)"):
        judged = results["judged"][key]
        assert judged["samples"] > 0 and is_share(judged["harmless_all"], judged["samples"]), judged
        assert 0 <= judged["harmlessness"] <= 1
    for name in ("03_training_curves", "03_judged_before_after"):
        assert (tmp_path / "figs" / f"{name}.png").stat().st_size > 0
    # the real chat model's code path (smoke settings' training.real): SmolLM2-135M-Instruct, down_proj only
    real = results["real_model"]
    assert real["model"] == "smollm2-135m-instruct" and real["training"]["total_parameters"] == 134_515_008
    assert real["training"]["steps"] == 2 and real["training"]["train_examples"] == 8
    assert real["training"]["trainable_parameters"] == 30 * 576 * 1536  # 30 layers' down_proj
    assert real["last_loss"] < real["first_loss"]
    written = json.loads((tmp_path / "runs" / "03_training" / "real" / "real_check.json").read_text())
    assert len(written["after"]["harmful"]) == len(written["prompts"]["harmful"]) == 3
    assert written["judged"]["start"]["harmless_rate"] in (0, 1 / 3, 2 / 3, 1)

    # 04: a few methods, four report seeds (halves [1, 2] and [3, 4]) disjoint from the tuning seed 0, short
    # runs; tuned on validation wordings, judged on test wordings
    parameters_04 = {
        "seeds": [1, 2, 3, 4],
        "tuning_seeds": [0],
        "steps": 40,
        "ppo_iterations": 4,
        "eval_samples": 1,
        "harmful_test_prompts": 36,  # 2 test wordings per topic (of 12): 108 test prompts, 36 harmful
        "methods": ["dpo_helpful", "dpo_safety", "bfpo", "bfpo_red_team", "safedpo", "safe_rlhf"],
    }
    runner.run(
        "smoke",
        only=["04"],
        output_dir=tmp_path / "runs",
        figures_dir=tmp_path / "figs",
        progress=False,
        parameters=parameters_04,
    )
    import pandas as pd

    from bfpo import study

    base = tmp_path / "runs" / "04_baselines"
    df = pd.read_csv(base / "results.csv")
    assert set(df["method"]) == {"sft", "dpo_helpful", "dpo_safety", "bfpo", "bfpo_red_team", "safedpo", "safe_rlhf"}
    assert set(df["wording"]) == {"training", "test"} and set(df["seed"]) == {1, 2, 3, 4}
    assert (df.loc[df["method"] != "sft", "flops"] > 0).all()
    judged = pd.read_csv(base / "judged_prompts.csv")  # per prompt, for the bootstrap over seeds and prompts
    assert set(judged[judged["method"] == "sft"]["seed"]) == {1, 2, 3, 4}, "the SFT start is sampled with every seed"
    per_run = judged.groupby(["method", "seed", "wording"])["prompt_id"].nunique()
    assert per_run.groupby(level="wording").nunique().eq(1).all(), "every run is judged on the same prompts"
    assert per_run.xs("test", level="wording").eq(len(tw.TOPICS) * 2).all()
    results = json.loads((base / "results.json").read_text())
    tuning = pd.read_csv(base / "tuning.csv")  # 2 grid points per method (smoke), one chosen each
    assert tuning.groupby("method").size().eq(2).all() and tuning.groupby("method")["selected"].sum().eq(1).all()
    # one tuning seed: resampling it always gives the same draw, so the chosen point wins every time
    assert tuning.loc[tuning["selected"], "win_rate"].eq(1.0).all() and tuning["seeds"].eq(1).all()
    assert results["halves"] == {"A": [1, 2], "B": [3, 4]} and results["tuning_seeds"] == [0]
    power = {(p["method"], p["metric"]): p for p in results["power"]}
    assert power[("bfpo", "harmlessness")]["prompts"] == 36
    assert power[("bfpo", "harmlessness")]["seeds"] == 4 and power[("bfpo", "harmlessness")]["mde_80"] > 0
    final = json.loads((base / "final_runs.json").read_text())
    for method, info in final.items():
        assert set(info["models"]) == {"1", "2", "3", "4"}
        assert method == "sft" or info["config"] == results["chosen"][method]
    chosen = tuning[tuning["selected"]].set_index("method")["config"].to_dict()
    assert chosen == results["chosen"] and df[df["method"] == "bfpo"]["config"].eq(chosen["bfpo"]).all()
    curves = pd.read_csv(base / "curves.csv")  # SFT start + the snapshots between + the final model, per seed
    smoke = study.PROFILES["smoke"]
    assert curves.groupby(["method", "seed"]).size().eq(smoke.budget.snapshots + 1).all()
    assert set(curves["method"]) == {"bfpo", "safe_rlhf", "safedpo"}
    assert (curves.groupby(["method", "seed"])["flops"].apply(lambda f: f.is_monotonic_increasing)).all()
    assert results["compute"]["levels"][0]["delta"] == 0.2 and results["compute"]["seeds"] == 4
    assert results["score_models_held_out"]["cost"]["ranking"] > 0.8
    cal = results["cost_calibration"]["SFT samples, validation wordings"]
    assert cal["unsafe"] + cal["safe"] > 0 and is_share(cal["unsafe_positive"], cal["unsafe"]), cal
    assert results["red_team_pairs"] > 0
    # Safe RLHF: every start violates its constraint (d = J_C(start) - m), and the fixed-lambda curve was run
    assert results["constraint"] and all(c["binds_at_start"] for c in results["constraint"].values())
    for c in results["constraint"].values():
        assert c["cost_threshold"] == pytest.approx(
            c["start_cost"] - results["grid"]["safe_rlhf"][results["chosen"]["safe_rlhf"]]["ppo_cost_margin"]
        )
    sweep = pd.read_csv(base / "lambda_sweep.csv")  # smoke: the first seed's start, the profile's fixed lambdas
    assert sorted(sweep["lambda"].unique()) == list(smoke.lambda_sweep) and set(sweep["seed"]) == {1}
    assert [c["lambda"] for c in results["lambda_sweep"]["test"]] == list(smoke.lambda_sweep)
    for name in ("04_method_margins", "04_safe_rlhf_lambda", "04_tradeoff", "04_compute"):
        assert (tmp_path / "figs" / f"{name}.png").stat().st_size > 0
    _killed_and_rerun_04_writes_the_same_files(tmp_path, parameters_04)
    # 05: every task on the first few examples
    runner.run(
        "smoke",
        only=["05"],
        output_dir=tmp_path / "runs",
        figures_dir=tmp_path / "figs",
        progress=False,
        parameters={"limit_mc": 4, "limit_generative": 4, "safehelp_samples": 1},
    )
    ev = pd.read_csv(tmp_path / "runs" / "05_evaluation" / "results.csv")
    assert {"truthfulqa_mc2", "ethics_virtue", "advbench", "xstest", "alpaca_eval", "safehelp"} <= set(ev["task"])
    assert {"SFT start", "BFPO", "DPO (safety)", "Safe RLHF"} <= set(ev["model"])
    bias = ev["metric"].str.contains("bias_score")  # BBQ bias scores lie in [-1, 1]
    likelihood = ev["metric"].str.contains("likelihood_diff")  # CrowS-Pairs: a mean |log-likelihood gap|
    assert ev.loc[likelihood, "value"].ge(0).all() and ev.loc[bias, "value"].between(-1, 1).all()
    count = ev["metric"] == "samples"  # SafeHelp: how many answers were judged
    assert (ev.loc[count, "value"] > 0).all()
    assert ev.loc[~bias & ~likelihood & ~count, "value"].between(0, 1).all(), "every other metric is a rate"
    # 06: the figures and the results summary
    runner.run("smoke", only=["06"], output_dir=tmp_path / "runs", figures_dir=tmp_path / "figs", progress=False)
    summary = (tmp_path / "figs" / "RESULTS.md").read_text()
    assert "harmlessness gain with public data" in summary and "Tuning (validation wordings" in summary
    assert "| SafeDPO |" in summary and "Safe RLHF's trade-off curve" in summary and "| lambda (fixed) |" in summary
    claims = json.loads((tmp_path / "runs" / "06_figures" / "results.json").read_text())["claims_test"]
    for c in claims:
        if c["interval"] is not None:  # 4 seeds: inconclusive, with what the interval alone says beside it
            lo, hi = c["interval"]["low"], c["interval"]["high"]
            prefix = "inconclusive (4 seeds, fewer than 5; the interval alone: "
            assert c["verdict"].startswith(prefix)
            alone = c["verdict"].removeprefix(prefix).rstrip(")")
            assert alone == expected_verdict(lo, hi, c["threshold"], c["direction"]), c
    written = json.loads((tmp_path / "runs" / "06_figures" / "results.json").read_text())
    assert written["halves"] == {"A": [1, 2], "B": [3, 4]} and "| half A (seeds [1, 2]) |" in summary
    for r in written["replication"]:  # 2 seeds per half: never a verdict to rely on, so never "agrees" alone
        assert r["replicated"] == (len({r[k].split(" (")[0] for k in ("A", "B", "all")}) == 1)
        assert r["intervals"]["A"]["seeds"] == 2 and r["intervals"]["all"]["seeds"] == 4
    assert "smallest change detectable (80% power)" in summary
    assert (tmp_path / "figs" / "06_per_seed.png").stat().st_size > 0
    for name in ("06_fig1_tradeoff_test", "06_quoted_7b_comparison", "06_safe_rlhf_lambda", "06_compute"):
        assert (tmp_path / "figs" / f"{name}.png").stat().st_size > 0
    # the book of these runs: a page per notebook, each saved figure inline as the file holds it
    from bfpo import book

    html = book.build("smoke", tmp_path / "runs", tmp_path / "figs")
    for notebook, figure in (("03_training", "03_training_curves"), ("04_baselines", "04_tradeoff")):
        page = book._Page()
        page.feed((html / f"{notebook}.html").read_text())
        assert (tmp_path / "figs" / f"{figure}.png").read_bytes() in {(html / s).read_bytes() for s in page.images}
    _gpu_profile_04_on_the_cpu(tmp_path)  # last: it writes its own notebook 04 over the smoke one


def _gpu_profile_04_on_the_cpu(tmp_path):
    """The gpu profile's code path at toy size, on the CPU (allow_cpu): its 4-point grids, a SFT start per
    seed, the whole lambda sweep, from the smoke run's notebooks 02 and 03."""
    import pandas as pd

    from bfpo import study

    parameters = {
        "seeds": [1, 2, 3, 4],
        "tuning_seeds": [0],
        "steps": 8,
        "sft_steps": 8,
        "ppo_iterations": 2,
        "harmful_test_prompts": 18,
        "methods": ["bfpo", "safe_rlhf"],
    }
    if not torch.cuda.is_available():  # refused without allow_cpu, before any notebook runs
        with pytest.raises(BadInput, match="no CUDA device"):
            runner.run("gpu", only=["04"], output_dir=tmp_path / "runs", parameters=parameters, progress=False)
    runner.run(
        "gpu",
        only=["04"],
        output_dir=tmp_path / "runs",
        figures_dir=tmp_path / "figs_gpu",
        progress=False,
        parameters=parameters,
        allow_cpu=True,
    )
    base = tmp_path / "runs" / "04_baselines"
    results = json.loads((base / "results.json").read_text())
    gpu = study.PROFILES["gpu"]
    assert results["profile"] == "gpu" and results["sft_per_seed"] and len(set(results["sft_starts"].values())) == 5
    assert {m: len(points) for m, points in results["grid"].items()} == {"bfpo": 4, "safe_rlhf": 4}
    tuning = pd.read_csv(base / "tuning.csv")
    assert tuning.groupby("method").size().eq(4).all()
    sweep = pd.read_csv(base / "lambda_sweep.csv")
    assert sorted(sweep["lambda"].unique()) == list(gpu.lambda_sweep) and set(sweep["seed"]) == {1}
    assert (tmp_path / "figs_gpu" / "04_tradeoff.png").stat().st_size > 0


def _killed_and_rerun_04_writes_the_same_files(tmp_path: Path, parameters: dict) -> None:
    """`python -m bfpo.notebooks --only 04` killed (SIGKILL to its process group: the runner, and through
    its death the kernel and the study's workers) once a few trainings have finished, then run again: it
    reuses the finished work, says so, and writes the same bytes as the uninterrupted run above."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    import yaml

    base, figs = tmp_path / "runs" / "04_baselines", tmp_path / "figs"

    def outputs() -> dict:  # results.json's wall-clock times (sft_seconds, ...) aside, which no figure shows
        found = {p.name: p.read_bytes() for p in [*base.glob("*.csv"), *base.glob("*.json"), *figs.glob("04_*")]}
        results = json.loads(found.pop("results.json"))
        found["results.json (times aside)"] = {k: v for k, v in results.items() if not k.endswith("_seconds")}
        return found

    uninterrupted = outputs()
    assert {"results.csv", "results.json (times aside)", "04_tradeoff.png", "04_tradeoff.pdf"} <= set(uninterrupted)
    shutil.rmtree(base)
    for p in figs.glob("04_*"):
        p.unlink()
    cmd = [sys.executable, "-m", "bfpo.notebooks", "--profile", "smoke", "--only", "04"]
    cmd += ["--output-dir", str(tmp_path / "runs"), "--figures-dir", str(figs)]
    for key, value in parameters.items():
        cmd += ["--set", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"]
    killed = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    finished = lambda: len(list(base.rglob("*_summary.json")))  # noqa: E731
    while killed.poll() is None and finished() < 6:
        time.sleep(0.5)
    assert killed.poll() is None, "notebook 04 ended before it could be killed"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    done_before = finished()
    time.sleep(2)  # the kernel and the workers follow their parent
    assert finished() <= done_before + 2, "no process kept training after the kill"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-2000:]
    took_over = f"{tmp_path / 'runs'}: took over the lock left by PID {killed.pid} on host"
    assert took_over in again.stderr, "the killed runner's lock is taken over, with one line"
    line = next(line for line in again.stdout.splitlines() if "04_baselines:" in line)
    assert "reused" in line and "training" in line and "ran" in line, line
    reuse = json.loads((tmp_path / "runs" / "reuse.json").read_text())["04_baselines"]
    assert reuse["training"]["reused"] >= 4 and reuse["training"]["ran"] >= 1
    resumed = outputs()
    assert set(resumed) == set(uninterrupted)
    assert [name for name in sorted(resumed) if resumed[name] != uninterrupted[name]] == []


def expected_verdict(low: float, high: float, threshold: float, direction: int) -> str:
    """What an interval says of a claim that the change lies on the ``direction`` side of ``threshold``,
    written out independently of :func:`bfpo.stats.verdict`."""
    above, below = low > threshold, high < threshold
    if above or below:
        return "agrees" if above == (direction > 0) else "does not agree"
    return "inconclusive"


def test_expected_verdict_refuses_a_claimed_gain_whose_interval_lies_below_zero():
    """The pipeline test's check of each written verdict: a planted "agrees" for a gain whose interval
    lies wholly below 0 (the case the old check let through) no longer passes."""
    assert expected_verdict(-0.3, -0.1, 0.0, +1) == "does not agree" != "agrees"
    assert expected_verdict(0.1, 0.3, 0.0, +1) == "agrees"
    assert expected_verdict(-0.3, -0.1, 0.0, -1) == "agrees"
    assert expected_verdict(-0.04, 0.02, -0.05, +1) == "agrees"
    assert expected_verdict(-0.1, 0.1, 0.0, +1) == "inconclusive"


def is_share(value: float, count: int) -> bool:
    """``value`` is a share of ``count`` things: k / count for a whole k in 0..count (a plain
    ``0 <= value <= 1`` cannot fail on a mean of booleans; a share of the wrong count, or a NaN, fails here)."""
    if count == 0:
        return value != value  # the share of nothing is NaN
    k = value * count
    return 0 <= value <= 1 and abs(k - round(k)) < 1e-6


def test_is_share_fails_on_a_planted_bad_value():
    assert is_share(0.75, 4) and is_share(0.0, 3) and is_share(float("nan"), 0)
    assert not is_share(0.7, 4) and not is_share(1.25, 4) and not is_share(float("nan"), 4)
