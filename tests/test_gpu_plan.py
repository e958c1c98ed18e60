"""The gpu profile: its plan offline (jobs, GPU-minutes, memory), and its refusal without CUDA."""

import json

import pytest
import torch

from bfpo import gpu_plan, study
from bfpo import notebooks as runner


def test_the_gpu_plan_prints_offline_within_10_gpu_minutes(capsys):
    assert runner.main(["--profile", "gpu", "--plan"]) == 0
    out = capsys.readouterr().out
    plan = gpu_plan.build("gpu", report_path="no/such/report.json")
    assert plan["gpu_minutes"] <= 10, plan["gpu_minutes"]
    assert f"{plan['gpu_minutes']:.1f} GPU-minutes" in out and "GB of GPU memory" in out and "assumed" in out
    gpu = study.PROFILES["gpu"]
    assert len(gpu.seeds) >= 30 and len(gpu.tuning_seeds) >= 3 and gpu.harmful_test_prompts >= 200
    rows = {r["stage"]: r["jobs"] for r in plan["stages"]}
    trained = len(plan["methods"]) - 1  # all but Safe RLHF go through the trainer
    assert rows["report trainings"] == trained * len(gpu.seeds)
    assert rows["tuning trainings"] == trained * 4 * len(gpu.tuning_seeds), "a 4-point grid: twice the cpu one"
    assert rows["report PPO-Lagrangian"] == len(gpu.seeds)
    assert rows["SFT starts"] == len(gpu.seeds) + len(gpu.tuning_seeds) - 1


def test_the_plan_uses_the_rates_the_gpu_check_measured(tmp_path):
    report = {
        "device": "cuda:0",
        "device_name": "NVIDIA H200",
        "size": "smoke",
        "sizes": {"pref_steps": 30, "sft_steps": 60, "score_steps": 40, "ppo_iterations": 20},
        "items": {
            "dpo": {"seconds": 0.6, "peak_mb": 300},
            "sft": {"seconds": 0.6},
            "reward": {"seconds": 0.4},
            "ppo": {"seconds": 10.0},
            "sampling": {"seconds": 0.2},
        },
    }
    report["sizes"] |= {"sample_prompts": 128, "new_tokens": 32}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    rates = gpu_plan.measured_rates(path)
    assert rates.train_step == pytest.approx(0.02) and rates.ppo_iteration == pytest.approx(0.5)
    assert "measured" in rates.source and "H200" in rates.source
    slower = gpu_plan.build("gpu", report_path=path)
    assert slower["rates"] == rates and slower["gpu_minutes"] > gpu_plan.build("gpu", "no/such.json")["gpu_minutes"]
    path.write_text(json.dumps(report | {"device": "cpu"}))  # the check's CPU run says nothing of a GPU
    assert gpu_plan.measured_rates(path) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_the_gpu_profile_without_cuda_is_one_line_and_exit_2(capsys):
    assert runner.main(["--profile", "gpu", "--only", "04"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no CUDA device" in err and "--plan" in err
