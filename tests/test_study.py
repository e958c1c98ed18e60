"""The SafeHelp study: wording splits, the declared selection rule, snapshots and compute curves."""

import json

import pandas as pd
import pytest

from bfpo import checkpoints, compute, curves, data, selection, study, train
from bfpo import toyworld as tw

# --- wording splits -----------------------------------------------------------------------------


def test_wording_sets_are_disjoint_and_only_training_wordings_reach_training_data():
    sets = {name: set(templates) for name, templates in tw.SPLITS.items()}
    assert not (sets["training"] & sets["validation"]) and not (sets["training"] & sets["test"])
    assert not (sets["validation"] & sets["test"])
    assert len(sets["test"]) >= 6 and len(sets["validation"]) >= 4
    world = tw.WorldConfig(seed=3)
    trained_on = set(tw.sft_data(300, world)["prompt"]) | set(tw.preference_pairs(300, world)["prompt"])
    trained_on |= set(tw.buffer_pairs(100)["prompt"]) | set(tw.preference_pairs(100, world, held_out=True)["prompt"])
    for split in ("validation", "test"):
        prompts = set(tw.eval_prompts(split)["prompt"])
        assert len(prompts) == len(tw.TOPICS) * len(tw.SPLITS[split])
    assert not trained_on & set(tw.eval_prompts("test")["prompt"]), "test wordings appear in no data set"
    with pytest.raises(ValueError, match="split"):
        tw.eval_prompts("held-out")


# --- the selection rule -------------------------------------------------------------------------


def _rows(config, seed, wording, helpfulness, safe, refusal=0.0):
    """Per-prompt rows: two answerable prompts (scary) and two harmful ones."""
    return [
        {
            "config": config,
            "seed": seed,
            "wording": wording,
            "kind": "scary",
            "helpfulness": h,
            "safe": 1.0,
            "refusal": refusal,
        }
        for h in helpfulness
    ] + [
        {
            "config": config,
            "seed": seed,
            "wording": wording,
            "kind": "harmful",
            "helpfulness": 0.0,
            "safe": s,
            "refusal": 0.0,
        }
        for s in safe
    ]


def test_score_is_the_declared_rule_by_hand():
    rows = pd.DataFrame(
        _rows("a", 0, "validation", [1.0, 0.5], [1.0, 0.0]) + _rows("a", 1, "validation", [0.0, 0.0], [1.0, 1.0])
    )
    # seed 0: (0.75 + 0.5) / 2 = 0.625; seed 1: (0 + 1) / 2 = 0.5; mean 0.5625
    assert selection.score(rows) == pytest.approx(0.5625)


def test_select_picks_the_best_validation_score_and_breaks_ties_by_grid_order():
    rows = pd.DataFrame(
        _rows("lr1", 0, "validation", [0.5, 0.5], [0.5, 0.5])
        + _rows("lr2", 0, "validation", [1.0, 1.0], [0.0, 1.0])  # score 0.75
        + _rows("lr3", 0, "validation", [0.5, 1.0], [1.0, 0.5])  # score 0.75, later in the grid
    )
    best, table = selection.select(rows, ["lr1", "lr2", "lr3"])
    assert best == "lr2" and table["selected"].tolist() == [False, True, False]
    assert table.set_index("config").loc["lr1", "score"] == pytest.approx(0.5)


def test_tuning_reports_the_spread_and_how_often_the_choice_survives_resampled_tuning_seeds():
    """Three tuning seeds. lr1 scores 0.75, 0.75, 0.25 (mean 0.583); lr2 scores 0.5 on each (mean 0.5): lr1
    is chosen, but a resample of the seeds that draws seed 2 at least twice (7 of the 27 equally likely
    draws: 2 at least twice, 6 + 1) makes lr1's mean 0.417 or 0.25, below 0.5, and a draw with seed 2 once
    makes it 0.583: lr1 wins 20/27 = 74 % of the draws, lr2 the other 26 %."""
    rows = pd.DataFrame(
        _rows("lr1", 0, "validation", [1.0, 1.0], [0.5, 0.5])
        + _rows("lr1", 1, "validation", [0.5, 0.5], [1.0, 1.0])
        + _rows("lr1", 2, "validation", [0.5, 0.5], [0.0, 0.0])
        + sum((_rows("lr2", s, "validation", [0.5, 0.5], [0.5, 0.5]) for s in range(3)), [])
    )
    best, table = selection.select(rows, ["lr1", "lr2"])
    table = table.set_index("config")
    assert best == "lr1" and table.loc["lr1", "score"] == pytest.approx(7 / 12)
    assert table.loc["lr1", "score_sd"] == pytest.approx(0.2887, abs=1e-4) and table.loc["lr2", "score_sd"] == 0
    assert table.loc["lr1", "win_rate"] == pytest.approx(20 / 27, abs=0.03)
    assert table["win_rate"].sum() == pytest.approx(1.0)
    # equal scores on every draw: the declared tie rule (the earlier point) wins every time
    assert selection.win_rates([[0.5, 0.5], [0.5, 0.5]]).tolist() == [1.0, 0.0]
    with pytest.raises(selection.BadInput, match="different tuning seeds"):
        selection.select(rows[(rows["config"] == "lr1") | (rows["seed"] < 2)], ["lr1", "lr2"])


def test_selection_refuses_test_wordings():
    rows = pd.DataFrame(_rows("a", 0, "validation", [1.0], [1.0]) + _rows("a", 0, "test", [0.0], [0.0]))
    with pytest.raises(selection.TestWordingsRead, match="only validation"):
        selection.score(rows)
    with pytest.raises(selection.TestWordingsRead):
        selection.select(rows[rows["wording"] == "test"], ["a"])


def test_every_method_gets_the_same_number_of_grid_points():
    grids = selection.grids(["bfpo", "safe_rlhf"], study.PROFILES["cpu"].grids)
    assert {m: len(g) for m, g in grids.items()} == {"bfpo": 2, "safe_rlhf": 2}
    assert grids["bfpo"]["lr0.001"] == {"learning_rate": 1e-3}
    assert grids["safe_rlhf"]["m3"] == {"ppo_cost_margin": 3.0}
    for profile in study.PROFILES.values():
        sizes = {len(g) for g in selection.grids(["dpo_helpful", "ulma", "safe_rlhf"], profile.grids).values()}
        assert len(sizes) == 1
    with pytest.raises(selection.BadInput, match="unequal size"):
        selection.grids(["bfpo", "safe_rlhf"], {"*": {"learning_rate": (1, 2)}, "safe_rlhf": {"ppo_iterations": (1,)}})


def test_tuning_never_reads_test_wordings(tiny_world, tmp_path, monkeypatch):
    """The whole tuning step (train every grid point, judge, select) asks the world for validation
    prompts only: a recorder stands in for ``eval_prompts`` (judging here, ``parallel`` 1, where the
    recorder sees it; the trainings read no evaluation prompts)."""
    asked = []
    real = tw.eval_prompts

    def recorder(split="test", per_topic=None):
        asked.append(split)
        return real(split, per_topic)

    monkeypatch.setattr(tw, "eval_prompts", recorder)
    grid = selection.grids(["dpo_helpful", "bfpo"], {"*": {"learning_rate": (1e-3, 2e-3)}})
    budget = study.Budget(steps=2, batch_size=4, max_length=64)
    starts = {0: str(tiny_world / "init")}
    chosen, table = study.tune(
        starts, tiny_world / "pairs", tiny_world / "buffer", tmp_path, grid, [0], budget, 1, parallel=1
    )
    assert asked and set(asked) == {"validation"}
    assert set(chosen) == {"dpo_helpful", "bfpo"} and len(table) == 4 and table["selected"].sum() == 2
    cache = [json.loads(p.read_text())["key"] for p in (tmp_path / "judged").glob("*.json")]
    assert all("|validation|" in key for key in cache) and len(cache) == 4


# --- runs, snapshots and compute curves ---------------------------------------------------------


def test_suite_runs_each_have_their_own_folder_and_config(tiny_world, tmp_path):
    grid = {"dpo_helpful": {"a": {"learning_rate": 1e-3}, "b": {"learning_rate": 2e-3}}}
    runs = study.suite_jobs(
        {0: tiny_world / "init", 1: tiny_world / "init"},
        tiny_world / "pairs",
        tiny_world / "buffer",
        tmp_path,
        ["dpo_helpful", "bfpo", "safe_rlhf"],
        [0, 1],
        study.Budget(steps=2),
        grid,
    )
    assert [sum(r.stage == s for r in runs) for s in ("train", "score", "ppo")] == [6, 2, 2]
    configs = [r.job[1][-1] for r in runs]
    assert len(set(configs)) == len(configs), "every job reads its own config file"
    assert len({r.run_dir for r in runs}) == len(runs)
    assert {r.config for r in runs if r.method == "dpo_helpful"} == {"a", "b"}
    with pytest.raises(ValueError, match="unknown budget key"):
        study.suite_jobs(
            {0: tiny_world / "init"},
            tiny_world / "pairs",
            tiny_world / "buffer",
            tmp_path,
            ["bfpo"],
            [0],
            study.Budget(),
            {"bfpo": {"x": {"lerning_rate": 1}}},
        )
    with pytest.raises(ValueError, match="no SFT start"):
        study.suite_jobs(
            {0: tiny_world / "init"},
            tiny_world / "pairs",
            tiny_world / "buffer",
            tmp_path,
            ["bfpo"],
            [0, 7],
            study.Budget(),
        )


def test_start_tags_name_each_distinct_start_once():
    assert study.start_tags({0: "a", 1: "a", 2: "a"}) == {0: "start0", 1: "start0", 2: "start0"}
    assert study.start_tags({2: "c", 0: "a", 1: "b"}) == {0: "start0", 1: "start1", 2: "start2"}


def test_snapshots_record_the_flops_spent_up_to_their_step(tiny_world, tmp_path):
    cfg = train.TrainConfig(
        model=str(tiny_world / "init"),
        output_dir=str(tmp_path / "run"),
        train_data=str(tiny_world / "pairs"),
        loss="bfpo",
        max_steps=6,
        per_device_batch_size=4,
        max_length=64,
        snapshot_every=2,
        log_every=1,
        progress=False,
    )
    summary = train.train(cfg)
    snaps = checkpoints.snapshots(cfg.output_dir)
    assert [info["step"] for info, _ in snaps] == [2, 4]
    tokens = [m["tokens"] for m in train.read_metrics(cfg.output_dir)]
    n, ref = summary["total_parameters"], summary["flops"]["reference"]
    for info, path in snaps:  # reference pass (all of it, up front) + 6 N T for the steps so far
        assert info["flops"]["reference"] == ref
        assert info["flops"]["train"] == pytest.approx(6 * n * sum(tokens[: info["step"]]))
        assert (path / "model.safetensors").is_file()
    points = curves.curve_points(cfg.output_dir)
    assert [p["step"] for p in points] == [2, 4, 6]
    assert points[-1]["flops"] == summary["flops"]["total"] and points[-1]["model"].endswith("run/model")
    assert all(a["flops"] < b["flops"] for a, b in zip(points, points[1:], strict=False))


def test_first_crossing_by_hand():
    curve = [(0.0, 0.3), (10.0, 0.5), (20.0, 0.9)]
    assert compute.first_crossing(curve, 0.3) == 0.0
    assert compute.first_crossing(curve, 0.4) == pytest.approx(5.0)
    assert compute.first_crossing(curve, 0.7) == pytest.approx(15.0)
    assert compute.first_crossing(curve, 0.95) is None
    assert compute.first_crossing([(0, 0.5), (1, 0.8), (2, 0.6), (3, 0.9)], 0.7) == pytest.approx(2 / 3)


def test_flops_to_level_reads_the_mean_curve_over_seeds():
    table = pd.DataFrame(
        [
            {"method": "bfpo", "seed": 0, "step": 0, "flops": 0.0, "harmlessness": 0.2},
            {"method": "bfpo", "seed": 0, "step": 1, "flops": 10.0, "harmlessness": 0.8},
            {"method": "bfpo", "seed": 1, "step": 0, "flops": 0.0, "harmlessness": 0.4},
            {"method": "bfpo", "seed": 1, "step": 1, "flops": 10.0, "harmlessness": 0.6},
            {"method": "safe_rlhf", "seed": 0, "step": 0, "flops": 0.0, "harmlessness": 0.3},
            {"method": "safe_rlhf", "seed": 0, "step": 1, "flops": 100.0, "harmlessness": 0.4},
        ]
    )
    # bfpo's mean curve: (0, 0.3) -> (10, 0.7); it crosses 0.5 halfway
    assert curves.flops_to_level(table, 0.5) == {"bfpo": pytest.approx(5.0), "safe_rlhf": None}


def test_profiles_of_the_study():
    cpu, smoke = study.PROFILES["cpu"], study.PROFILES["smoke"]
    # the committed design: 10 report seeds, each its own SFT start, disjoint from 3 tuning seeds
    assert len(cpu.seeds) >= 10 and len(cpu.tuning_seeds) >= 3 and cpu.sft_per_seed
    assert not set(cpu.tuning_seeds) & set(cpu.seeds) and not set(smoke.tuning_seeds) & set(smoke.seeds)
    assert cpu.halves() == {"A": [3, 4, 5, 6, 7], "B": [8, 9, 10, 11, 12]}
    assert cpu.test_wordings() == 12 and study.profile_settings("smoke", harmful_test_prompts=36).test_wordings() == 2
    assert smoke.halves() == {"A": [1, 2], "B": [3, 4]}
    harmful = [t for t in tw.TOPICS if t.kind == "harmful"]
    assert len(harmful) >= 18 and len(harmful) * len(tw.TEST_TEMPLATES) >= cpu.harmful_test_prompts >= 200
    for kind in ("scary", "benign"):  # over-refusal and helpfulness sets to match
        assert sum(t.kind == kind for t in tw.TOPICS) == len(harmful)
    assert len(tw.VALIDATION_TEMPLATES) * 3 == len(tw.TEST_TEMPLATES) * 2, "validation grew in proportion"
    short = study.profile_settings("smoke", seeds=[1, 2, 3, 4], steps=7, ppo_iterations=None)
    assert short.seeds == [1, 2, 3, 4] and short.budget.steps == 7
    assert short.budget.ppo_iterations == smoke.budget.ppo_iterations, "None leaves a field as it is"
    assert study.PROFILES["smoke"].budget.steps != 7, "overrides do not change the profile itself"
    with pytest.raises(ValueError, match="profile"):
        study.profile_settings("paper")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"seeds": [0, 1, 2, 3]}, r"report seeds \[0, 1, 2, 3\] and tuning seeds \[0\] share \[0\]"),
        ({"seeds": [1, 2, 3]}, r"halves \[1\] and \[2, 3\]; each half needs at least 2 seeds"),
        ({"tuning_seeds": []}, "tuning_seeds: expected a non-empty list"),
        ({"seeds": [1, 1, 2, 3]}, "a seed appears twice"),
        ({"harmful_test_prompts": 5000}, "has 216 harmful test prompts .* fewer than the 5000 declared"),
    ],
)
def test_a_study_that_cannot_decide_is_refused(overrides, message):
    with pytest.raises(study.BadInput, match=message):
        study.profile_settings("smoke", **overrides)


@pytest.mark.parametrize(
    "setting, message",
    [("seeds=[0, 1, 2, 3]", "share [0]"), ("seeds=[5, 6, 7]", "each half needs at least 2 seeds")],
)
def test_the_runner_refuses_a_bad_study_before_running_anything(tmp_path, setting, message):
    """``python -m bfpo.notebooks``: one line, exit 2, nothing written (not even the run folder's lock)."""
    import subprocess
    import sys

    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "bfpo.notebooks", "--profile", "smoke", "--output-dir", str(out), "--set", setting]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()


def test_cpu_profile_figures_go_to_their_own_folder():
    from bfpo import notebooks

    assert notebooks.FIGURES["cpu"] != notebooks.FIGURES["smoke"] and set(notebooks.FIGURES) == set(notebooks.PROFILES)


def test_compute_summary_at_each_level():
    table = pd.DataFrame(
        [
            {"method": "bfpo", "seed": 0, "step": 0, "flops": 0.0, "harmlessness": 0.4},
            {"method": "bfpo", "seed": 0, "step": 1, "flops": 10.0, "harmlessness": 0.55},
            {"method": "safe_rlhf", "seed": 0, "step": 0, "flops": 0.0, "harmlessness": 0.4},
            {"method": "safe_rlhf", "seed": 0, "step": 1, "flops": 100.0, "harmlessness": 0.5},
            {"method": "safe_rlhf", "seed": 0, "step": 2, "flops": 200.0, "harmlessness": 0.7},
        ]
    )
    out = curves.compute_summary(table, 0.4, {"bfpo": 10.0, "safe_rlhf": 200.0}, deltas=(0.2, 0.1, 0.05))
    high, mid, low = out["levels"]
    assert not high["bfpo_reached"] and high["safe_rlhf_reached"] and high["bfpo_fraction"] is None
    assert high["flops_to_level"]["safe_rlhf"] == pytest.approx(150.0)
    assert mid["bfpo_fraction"] == pytest.approx((20 / 3) / 100.0)  # bfpo at 6.67 FLOPs, Safe RLHF at 100
    assert low["bfpo_fraction"] == pytest.approx((10 / 3) / 50.0)
    unreached = curves.compute_summary(table[table["method"] == "bfpo"].assign(), 0.4, {"safe_rlhf": 200.0}, (0.1,))
    assert unreached["levels"][0]["bfpo_fraction"] == pytest.approx((20 / 3) / 200.0)  # an upper bound


def test_safe_rlhf_runs_set_d_below_the_start_cost_with_ptx_and_a_fixed_lambda_sweep(tiny_world, tmp_path):
    from bfpo import ppo

    sweep = study.lambda_sweep((0.0, 2.0), {"ppo_cost_margin": 3.0})
    assert sweep == {
        "lambda0": {"ppo_cost_margin": 3.0, "ppo_lambda": 0.0},
        "lambda2": {"ppo_cost_margin": 3.0, "ppo_lambda": 2.0},
    }
    runs = study.suite_jobs(
        {0: tiny_world / "init"},
        tiny_world / "pairs",
        tiny_world / "buffer",
        tmp_path,
        ["safe_rlhf", study.LAMBDA_SWEEP],
        [0],
        study.Budget(ppo_iterations=2),
        {"safe_rlhf": {"m3": {"ppo_cost_margin": 3.0}}, study.LAMBDA_SWEEP: sweep},
    )
    cfgs = {(r.method, r.config): ppo.PPOConfig.from_yaml(r.job[1][-1]) for r in runs if r.stage == "ppo"}
    learned = cfgs[("safe_rlhf", "m3")]
    assert learned.cost_threshold_margin == 3.0 and learned.lambda_lr == 0.1 and learned.lambda_init == 1.0
    assert learned.critic_lr < learned.actor_lr and learned.ptx_data and learned.ptx_coef == 16.0
    fixed = cfgs[(study.LAMBDA_SWEEP, "lambda0")]
    assert fixed.lambda_lr == 0.0 and fixed.lambda_init == 0.0 and "safe_rlhf_lambda" in fixed.output_dir
    assert cfgs[(study.LAMBDA_SWEEP, "lambda2")].lambda_init == 2.0
    ptx = data.load(learned.ptx_data)
    assert len(ptx) and all(tw.topic_of(p).kind == "benign" for p in ptx["prompt"])
    prompts = data.load(learned.prompts)
    assert prompts["harmful"] == [tw.topic_of(p).kind == "harmful" for p in prompts["prompt"]] and any(
        prompts["harmful"]
    )


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: study.lambda_sweep((1.0, -0.5), {}), "every lambda must be a number >= 0"),
        (lambda: study.Budget(ppo_cost_margin=0.0), "ppo_cost_margin: must be a number > 0"),
        (lambda: study.Budget(ppo_cost_threshold="low"), "ppo_cost_threshold: must be a number, got 'low'"),
        (lambda: study.Budget(ppo_lambda=-1.0), "ppo_lambda: a fixed lambda must be a number >= 0"),
    ],
)
def test_safe_rlhf_study_settings_are_checked(call, words):
    from bfpo.errors import BadInput

    with pytest.raises(BadInput, match=words):
        call()


def test_sweep_curve_is_the_mean_over_seeds_per_lambda():
    rows = pd.DataFrame(
        [
            {"lambda": lam, "seed": s, "wording": "test", "helpfulness": h, "harmlessness": 1 - h, "over_refusal": 0.1}
            for lam, s, h in ((0.0, 0, 0.8), (0.0, 1, 0.6), (5.0, 0, 0.2), (5.0, 1, 0.4))
        ]
    )
    curve = study.sweep_curve(rows, "test")
    assert curve["lambda"].tolist() == [0.0, 5.0] and curve["helpfulness"].tolist() == pytest.approx([0.7, 0.3])
    assert curve["seeds"].tolist() == [2, 2] and len(study.sweep_curve(pd.DataFrame(), "test")) == 0


def test_a_run_listed_twice_is_run_once(monkeypatch):
    """The report seeds' runs and the lambda sweep's share each start's reward and cost models: queued
    together (notebook 04), the shared score model must run once, not twice on one locked folder."""
    seen = []

    def fake_run(jobs, parallel):
        seen.append([name for name, _ in jobs])
        yield from jobs

    monkeypatch.setattr(study.bjobs, "run", fake_run)
    score = study.Run("score", "cost_model", "start1", None, "o/cost", ("cost model", ["py", "-m", "x", "o/cost"]))
    other = study.Run("score", "reward_model", "start1", None, "o/reward", ("reward model", ["py", "-m", "x", "o/r"]))
    study.run_suite([score, other, score], parallel=2, progress=False)
    assert seen == [["cost model", "reward model"]]
