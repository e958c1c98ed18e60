"""Sharded data-parallel training (FSDP2, ``torch.distributed.fsdp.fully_shard``).

Each process holds 1/N of every parameter, gradient and optimiser state (as DTensors); a layer's
weights are all-gathered for its forward and backward, and its gradients reduce-scattered, so the
losses and updates equal DDP's. Launch with accelerate's FSDP flags:

    accelerate launch --use_fsdp --fsdp_version 2 --num_processes N -m bfpo.train --config FILE

On GPUs accelerate shards the model itself (``distributed_type`` FSDP). On CPU processes (gloo,
``ACCELERATE_USE_CPU=1``) accelerate 1.15 ignores ``--use_fsdp`` and runs DDP; the trainer
detects that fallback, says so, and shards with ``fully_shard`` itself: each decoder layer (the
model's ``_no_split_modules``), then the whole model.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("bfpo.sharding")


def requested() -> bool:
    """Whether the launch asked for FSDP (``accelerate launch --use_fsdp`` sets ACCELERATE_USE_FSDP)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1")


def plan(accelerator) -> str:
    """How this run shards: ``"accelerate"`` (accelerate runs FSDP), ``"direct"`` (FSDP was asked
    for but accelerate fell back to DDP: shard here) or ``"none"``."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return "accelerate"
    if requested() and accelerator.num_processes > 1:
        log.warning(
            "FSDP was requested, but accelerate runs %s on this device (it falls back to DDP on CPU); "
            "sharding with torch.distributed.fsdp.fully_shard directly",
            accelerator.distributed_type.value,
        )
        return "direct"
    if requested():
        log.warning("FSDP was requested for one process: nothing to shard, training unsharded")
    return "none"


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """``fully_shard`` each block the model names in ``_no_split_modules`` (its decoder layers), then
    the whole model (embeddings, final norm, head). In place; returns the model."""
    from torch.distributed.fsdp import fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model
    blocks = set(getattr(base, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in blocks]
    if not layers:
        raise ValueError(f"{type(base).__name__}: no decoder layer to shard (its _no_split_modules: {sorted(blocks)})")
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def local_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(elements this process holds, elements of the whole model)``: equal when unsharded."""
    from torch.distributed.tensor import DTensor

    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in model.parameters())
    return local, sum(p.numel() for p in model.parameters())


def full(value):
    """A DTensor (e.g. the gradient norm of sharded gradients) as a plain tensor; anything else as it is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def full_state_dict(model: torch.nn.Module) -> dict:
    """The whole model's weights on the CPU of rank 0 ({} elsewhere), as ``save_pretrained`` writes
    them: a tied weight (the head of tied embeddings) only once. Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for tied in getattr(base, "all_tied_weights_keys", None) or {}:  # {target: source}; targets are copies
        state.pop(tied, None)
    return state


class ShardedState:
    """The model and optimiser of a directly sharded run, for ``accelerator.save_state``: saved as
    full state dicts (gathered on rank 0, which writes them), loaded by every process and sharded again."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def _options(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model, optim = get_state_dict(self.model, self.optimizer, options=self._options())
        return {"model": model, "optimizer": optim}

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )


# ---------------------------------------------------------------------------------------------
# DeepSpeed ZeRO-3 (GPUs): the config accelerate builds, and the trainer's loss under it
# ---------------------------------------------------------------------------------------------


def deepspeed_requested() -> bool:
    """Whether the launch uses DeepSpeed (an accelerate config with ``distributed_type: DEEPSPEED``)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("true", "1")


def loss_scale(distributed_type, processes: int, accumulation: int) -> int:
    """What a micro-batch's share of the batch mean (sum / G) is multiplied by before ``backward``:
    the processes, since DDP, FSDP and DeepSpeed average gradients over them, and under DeepSpeed
    also the accumulation steps, since its engine divides every loss by them."""
    from accelerate.utils import DistributedType

    return processes * (accumulation if distributed_type == DistributedType.DEEPSPEED else 1)


def deepspeed_config(accelerate_config: str | os.PathLike, cfg) -> dict:
    """The DeepSpeed config accelerate builds from ``accelerate_config`` (its ``deepspeed_config``
    section, through accelerate's ``DeepSpeedPlugin``) for the run ``cfg`` (a TrainConfig), with the
    "auto" values filled as accelerate fills them: micro-batch, accumulation steps, global batch,
    gradient clipping, bf16."""
    import copy

    import yaml
    from accelerate.utils import DeepSpeedPlugin

    from bfpo.errors import BadInput

    launch = yaml.safe_load(open(accelerate_config, encoding="utf-8")) or {}
    section = launch.get("deepspeed_config")
    if launch.get("distributed_type") != "DEEPSPEED" or not isinstance(section, dict):
        raise BadInput(f"{accelerate_config}: not a DeepSpeed config (distributed_type DEEPSPEED, deepspeed_config)")
    keys = ("zero_stage", "gradient_accumulation_steps", "gradient_clipping", "offload_optimizer_device")
    keys += ("offload_param_device", "zero3_init_flag", "zero3_save_16bit_model")
    plugin = DeepSpeedPlugin(**{k: section[k] for k in keys if k in section})
    config = copy.deepcopy(plugin.deepspeed_config)
    accumulation = config.get("gradient_accumulation_steps", "auto")
    if accumulation not in ("auto", cfg.gradient_accumulation_steps):
        raise BadInput(
            f"{accelerate_config}: deepspeed_config gradient_accumulation_steps {accumulation} differs from the run's "
            f"{cfg.gradient_accumulation_steps}; leave it out (auto)"
        )
    micro, accumulation = cfg.per_device_batch_size, cfg.gradient_accumulation_steps
    config |= {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * int(launch.get("num_processes", 1)),
        "gradient_clipping": cfg.max_grad_norm,
    }
    if launch.get("mixed_precision") == "bf16":
        config["bf16"] = {"enabled": True}
    return config


def validate_deepspeed(config: dict) -> None:
    """DeepSpeed's own validation of ``config`` (``DeepSpeedConfig``: every key, type and the ZeRO
    section), as one process sees it (without a process group it counts one process, so the
    global batch is checked as micro-batch x accumulation). Raises on a problem; needs deepspeed."""
    from deepspeed.runtime.config import DeepSpeedConfig

    per_process = config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"]
    one = dict(config, train_batch_size=per_process)
    parsed = DeepSpeedConfig(one)
    if config.get("zero_optimization", {}).get("stage") != parsed.zero_optimization_stage:
        raise ValueError(f"DeepSpeed read ZeRO stage {parsed.zero_optimization_stage}, the config says otherwise")
