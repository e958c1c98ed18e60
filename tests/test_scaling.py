"""Scaling set-ups that cannot run here: the DeepSpeed ZeRO-3 config checked offline, the loss scale per backend."""

import importlib.util
import os

import pytest
from accelerate.utils import DistributedType

from bfpo import sharding, train
from bfpo.errors import BadInput
from bfpo.io import project_path

ZERO3 = project_path("configs/accelerate/zero3_bf16.yaml")


@pytest.mark.parametrize("name", ["paper_sft", "paper_bfpo"])
def test_zero3_config_as_accelerate_builds_it(name):
    cfg = train.TrainConfig.from_yaml(project_path(f"configs/{name}.yaml"))
    config = sharding.deepspeed_config(ZERO3, cfg)
    assert config["zero_optimization"]["stage"] == 3 and config["bf16"] == {"enabled": True}
    assert config["train_micro_batch_size_per_gpu"] == cfg.per_device_batch_size
    assert config["gradient_accumulation_steps"] == cfg.gradient_accumulation_steps
    assert config["train_batch_size"] == cfg.per_device_batch_size * cfg.gradient_accumulation_steps * 4  # 4 GPUs
    assert config["gradient_clipping"] == cfg.max_grad_norm
    assert "auto" not in str(config.values())


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed (README: Scaling)"
)
@pytest.mark.parametrize("name", ["paper_sft", "paper_bfpo"])
def test_zero3_config_passes_deepspeed_validation(name):
    cfg = train.TrainConfig.from_yaml(project_path(f"configs/{name}.yaml"))
    config = sharding.deepspeed_config(ZERO3, cfg)
    sharding.validate_deepspeed(config)
    with pytest.raises(Exception, match="stage3_prefetch_bucket_sz|extra"):
        sharding.validate_deepspeed(config | {"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_sz": 1}})


def test_zero3_config_with_another_accumulation_is_one_line(tmp_path):
    path = tmp_path / "zero3.yaml"
    path.write_text(ZERO3.read_text().replace("zero_stage: 3", "zero_stage: 3\n  gradient_accumulation_steps: 8"))
    cfg = train.TrainConfig.from_yaml(project_path("configs/paper_bfpo.yaml"))
    with pytest.raises(BadInput, match="gradient_accumulation_steps 8 differs from the run's 4"):
        sharding.deepspeed_config(path, cfg)
    with pytest.raises(BadInput, match="not a DeepSpeed config"):
        sharding.deepspeed_config(project_path("configs/accelerate/ddp_4gpu.yaml"), cfg)


def test_loss_scale_per_backend():
    """DDP, FSDP and DeepSpeed average gradients over processes; DeepSpeed also divides by the accumulation steps."""
    assert sharding.loss_scale(DistributedType.NO, 1, 4) == 1
    assert sharding.loss_scale(DistributedType.MULTI_GPU, 4, 4) == 4
    assert sharding.loss_scale(DistributedType.FSDP, 4, 4) == 4
    assert sharding.loss_scale(DistributedType.DEEPSPEED, 4, 4) == 16


def test_slurm_script_launches_every_node_with_its_rank(tmp_path):
    """The multi-node script under fake srun / scontrol / accelerate: the command each node runs."""
    import subprocess

    fake = tmp_path / "bin"
    fake.mkdir()
    # a large allocation: the list runs on after the first host (reading only that one must not
    # break the pipe under pipefail)
    (fake / "scontrol").write_text('#!/bin/bash\nprintf "gpu-a\\ngpu-b\\n"\nseq 1 200000 | sed "s/^/gpu-/"\n')
    (fake / "srun").write_text('#!/bin/bash\nSLURM_NODEID=1 "$@"\n')  # what the second node's task runs
    (fake / "accelerate").write_text('#!/bin/bash\necho "accelerate $*"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", SLURM_NNODES="2", SLURM_JOB_NODELIST="gpu-[a-b]")
    script = project_path("configs/slurm/train_multinode.sbatch")
    out = subprocess.run(["bash", str(script), "configs/paper_bfpo.yaml"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[:4] == ["accelerate", "launch", "--config_file", "configs/accelerate/zero3_bf16.yaml"]
    args = dict(zip(words[4::2], words[5::2], strict=False))
    assert args["--num_machines"] == "2" and args["--num_processes"] == "8" and args["--machine_rank"] == "1"
    assert args["--main_process_ip"] == "gpu-a" and out.stdout.rstrip().endswith("--config configs/paper_bfpo.yaml")
    env["MAIN_ADDR"] = "10.0.0.5"
    out = subprocess.run(["bash", str(script), "c.yaml", "ddp.yaml"], env=env, capture_output=True, text=True)
    assert "--main_process_ip 10.0.0.5" in out.stdout and "--config_file ddp.yaml" in out.stdout
