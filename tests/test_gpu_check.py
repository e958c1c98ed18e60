"""benchmarks/gpu_check.py without a GPU: its whole logic on the CPU at toy size, its one line where
there is no CUDA, and its comparison failing a loss outside the tolerance."""

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # its dataclasses look their module up
spec.loader.exec_module(gpu_check)

ITEMS = {"sft", "bfpo_bf16", "dpo", "reward", "cost", "ppo", "sampling", "mc"}


def test_without_cuda_it_says_so_in_one_line_and_passes(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert capsys.readouterr().out == gpu_check.NO_CUDA + "\n"


def test_a_device_this_machine_lacks_is_one_line_and_exit_2(capsys):
    if torch.cuda.device_count() > 5:
        pytest.skip("this machine has a cuda:5")
    assert gpu_check.main(["--device", "cuda:5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cuda:5" in err


@pytest.fixture(scope="module")
def toy_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    assert gpu_check.main(["--device", "cpu", "--size", "toy", "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text()), out


def test_every_item_runs_and_is_compared_with_the_cpu_fp32_run(toy_report, capsys):
    report, _ = toy_report
    assert set(report["items"]) == ITEMS and report["ok"]
    for name, row in report["items"].items():
        assert row["device"] == "cpu" and row["device_ok"] and row["losses_ok"], (name, row)
    assert report["items"]["bfpo_bf16"]["precision"] == "bf16" and report["items"]["dpo"]["precision"] == "no"
    assert report["items"]["dpo"]["max_abs_diff"] == 0.0, "fp32 on the same CPU: the same numbers"
    for name in ("sft", "bfpo_bf16", "dpo", "ppo"):
        assert report["items"][name]["tokens_per_s"] > 0 and 0 < report["items"][name]["mfu"] < 1
    assert report["peak_bf16_flops"] > 0


def test_the_summary_fits_one_screen(toy_report):
    report, _ = toy_report
    lines = gpu_check.summary_lines(report)
    assert len(lines) <= 24 and all(len(line) <= 200 for line in lines[:-1])
    assert "PASS" in lines[0] and sum(line.endswith("yes") for line in lines) == len(ITEMS)


def test_a_loss_outside_the_tolerance_fails_the_check(toy_report):
    _, out = toy_report
    run = json.loads((out / "cpu" / "items.json").read_text())
    ref = json.loads((out / "cpu_reference" / "items.json").read_text())
    bad = copy.deepcopy(run)
    bad["items"]["dpo"]["losses"][-1] += 0.01  # fp32: far outside 1e-4 + 1e-3 |loss|
    first = bad["items"]["bfpo_bf16"]["losses"][0]
    bad["items"]["bfpo_bf16"]["losses"][0] += 0.2 + 0.2 * abs(first)  # bf16: outside 0.05 + 0.05 |loss|
    bad["items"]["sampling"]["answers"] = ["x"] * len(bad["items"]["sampling"]["answers"])
    bad["items"]["sft"]["device"] = "cuda:0"  # ran somewhere else than asked
    rows = gpu_check.compare(bad, ref)
    assert not rows["dpo"]["ok"] and not rows["bfpo_bf16"]["ok"] and not rows["sampling"]["ok"]
    assert not rows["sft"]["ok"] and rows["reward"]["ok"]
    assert all(row["ok"] for row in gpu_check.compare(run, ref).values())


def test_the_wheels_to_carry_are_listed_with_sizes_under_60_mb():
    spec = importlib.util.spec_from_file_location("gpu_wheels", ROOT / "benchmarks" / "gpu_wheels.py")
    gpu_wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_wheels)
    listed = [line.split("#") for line in (ROOT / "benchmarks" / "gpu_wheels.txt").read_text().splitlines()]
    pins = {pin.strip(): float(size.strip().removesuffix(" MB")) for pin, size in listed if pin.strip()}
    assert set(pins) == {f"{n}=={v}" for n, v in gpu_wheels.wheels()}, "the list is the lock's: rerun make gpu-wheels"
    assert "datasets==" in " ".join(pins) and all(mb > 0 for mb in pins.values())
    assert sum(pins.values()) < gpu_wheels.LIMIT_MB
    assert not {"torch", "transformers", "accelerate"} & {p.split("==")[0] for p in pins}, "the image has these"
