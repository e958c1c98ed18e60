"""The trainer's config (:class:`TrainConfig`): every key of a run, checked on creation; YAML files
(``configs/*.yaml``) hold the same keys."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from bfpo import configs, losses, precision, tracking
from bfpo.objectives import PAIR_LOSSES, POINT_LOSSES

LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


@dataclass
class TrainConfig:
    """Everything a run needs; YAML files hold the same keys."""

    model: str  # start (and reference) model: local folder or hub id
    output_dir: str
    train_data: str  # a folder written by bfpo.data.save, or a .jsonl in the pair (or SFT) schema
    mode: str = "preference"  # "preference" (pairs), "pointwise" (single responses with a label z) or "sft"
    loss: str = "bfpo"  # a loss of PAIR_LOSSES (preference mode) or POINT_LOSSES (pointwise mode)
    revision: str | None = None  # hub revision of `model`
    buffer_data: str | None = None  # helpful-only pairs mixed into every step (BFPO's buffer)
    buffer_ratio: float = 0.5  # buffer_mode "share": share of each global batch taken from the buffer
    buffer_mode: str = "share"  # "share" a global batch with the buffer, or "add" an equal buffer batch (official)
    max_train_examples: int | None = None  # use only the first N training examples
    beta: float = 0.1  # KL strength (the BFPO paper's tau)
    alpha: float = 0.5  # BFPO's B2
    b1: float = 3.0  # BFPO's B1
    label_smoothing: float = 0.0  # DPO only
    safety_margin: float = 2.0  # SafeDPO's Delta (> 0): the extra margin a safe response must win by over an unsafe one
    label_type: str = "binary"  # point-wise DPO: "binary" z in {0, 1} or "continuous" z in [0, 1]
    length_normalize: bool = False  # point-wise losses on token-averaged log-probs (the official ULMA code)
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    num_epochs: float = 1.0
    max_steps: int | None = None  # overrides num_epochs
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 128
    max_prompt_length: int = 64
    trainable: list[str] | str | None = None  # name patterns of trained parameters (paper: ["down_proj"]), or "lora"
    lora_r: int = 8  # trainable "lora": the adapters' rank r
    lora_alpha: float = 16.0  # ... their scale alpha (the update is alpha / r x B A)
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None  # ... the modules adapted; None: q_proj, v_proj (peft's for Llama)
    mixed_precision: str = "auto"  # "auto" (bf16 where a probe finds it faster: bfpo.precision), "no" (fp32), "bf16"
    gradient_checkpointing: bool = False
    seed: int = 0
    save_every: int = 0  # steps between checkpoints; 0: none until the end
    snapshot_every: int = 0  # steps between kept model snapshots with the FLOPs so far (curves); 0: none
    log_every: int = 1
    ref_cache_dir: str | None = None  # default: <output_dir>/ref_cache
    reference_batch_size: int = 64  # pairs per reference forward pass (no grad: can exceed the training batch)
    num_threads: int | None = None  # torch CPU threads per process
    # where each process trains: auto (accelerate's choice: its GPU where there is one), cpu, or cuda (accelerate
    # gives each process its own GPU; CUDA_VISIBLE_DEVICES picks which)
    device: str = "auto"
    progress: bool = True
    chat_template: str | None = None  # "zephyr" (the official recipe) or a Jinja template; None: the tokenizer's
    system_prompt: str | None = None  # with a chat template: a system turn first ("" = empty, as the official data)
    sft_loss: str = "response"  # SFT: the loss on the "response" tokens, or on "all" tokens (the official SFT)
    packing: bool = False  # SFT with sft_loss "all": pack examples into max_length sequences (the official SFT)
    # forward passes without padding: a micro-batch's sequences end to end in one row, attention kept within
    # each (bfpo.packing); the padded pass's log-probs within float tolerance, not bit for bit
    padding_free: bool = True
    compile: bool = False  # torch.compile the model (inductor); where compiling fails, eager, with a warning
    fused_optimizer: bool = False  # AdamW's fused kernel (one pass over all parameters) instead of a loop per tensor
    keep_checkpoints: int = 2  # checkpoints kept (newest first); a damaged one falls back to the one before
    start_over: bool = False  # when no intact checkpoint is left: train from step 0 (else stop and say so)
    report_to: list[str] | str = "none"  # trackers: "none", or some of tensorboard, wandb, trackio, mlflow

    def __post_init__(self):
        if self.mode not in ("preference", "pointwise", "sft"):
            raise ValueError(f"mode: expected 'preference', 'pointwise' or 'sft', got {self.mode!r}")
        registry = {"preference": PAIR_LOSSES, "pointwise": POINT_LOSSES}.get(self.mode)
        if registry is not None and self.loss not in registry:
            losses.get(self.loss)  # an unknown name gets the registry's error listing every loss
            raise ValueError(f"loss {self.loss!r} does not fit mode {self.mode!r}; it takes {sorted(registry)}")
        if self.label_type not in ("binary", "continuous"):
            raise ValueError(f"label_type: expected 'binary' or 'continuous', got {self.label_type!r}")
        if not 0.0 <= self.buffer_ratio < 1.0:
            raise ValueError(f"buffer_ratio: must lie in [0, 1), got {self.buffer_ratio}")
        if self.sft_loss not in ("response", "all"):
            raise ValueError(f"sft_loss: expected 'response' or 'all', got {self.sft_loss!r}")
        if self.packing and not (self.mode == "sft" and self.sft_loss == "all"):
            raise ValueError("packing: only SFT with sft_loss 'all' packs sequences (a packed sequence has no prompt)")
        if self.sft_loss == "all" and self.mode != "sft":
            raise ValueError(f"sft_loss: 'all' is for mode 'sft', not {self.mode!r}")
        if self.buffer_mode not in ("share", "add"):
            raise ValueError(f"buffer_mode: expected 'share' or 'add', got {self.buffer_mode!r}")
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "max_length", "max_prompt_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        precision.check(self.mixed_precision)
        if self.device not in ("auto", "cpu"):
            from bfpo import devices

            if devices.resolve(self.device).index is not None:
                raise ValueError(
                    f"device: {self.device!r}: the trainer gives each process its own GPU (accelerate); pick them with "
                    "CUDA_VISIBLE_DEVICES and set device to cuda or auto"
                )
        self.adam_betas = tuple(self.adam_betas)
        self.report_to = tracking.names(self.report_to)
        if isinstance(self.trainable, str) and self.trainable != "lora":
            raise ValueError(f"trainable: expected a list of parameter name patterns or 'lora', got {self.trainable!r}")
        if self.lora_target_modules is not None and not self.lora_target_modules:
            raise ValueError("lora_target_modules: name at least one module (or leave it unset)")
        configs.check_ranges(
            self,
            positive=("beta", "learning_rate", "num_epochs", "max_grad_norm", "b1", "lora_alpha", "safety_margin"),
            at_least_one=("reference_batch_size", "log_every", "keep_checkpoints", "max_steps", "max_train_examples")
            + ("num_threads", "lora_r"),
            non_negative=("save_every", "snapshot_every"),
            unit=("warmup_ratio", "weight_decay", "lora_dropout"),
        )
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing: must lie in [0, 0.5), got {self.label_smoothing}")
        if self.b1 == 1.0:
            raise ValueError("b1: must differ from 1 (BFPO's B3 = 1 / (B1 - 1))")
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(f"adam_betas: each must lie in [0, 1), got {list(self.adam_betas)}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler: expected one of {', '.join(LR_SCHEDULERS)}, got {self.lr_scheduler!r}")
        if self.buffer_data is not None and self.mode != "preference":
            raise ValueError(f"buffer_data: only the preference mode mixes in a buffer, not mode {self.mode!r}")
        if self.label_smoothing and not (self.mode == "preference" and self.loss == "dpo"):
            raise ValueError(f"label_smoothing: only the DPO loss takes it, not {self.loss!r}")

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> TrainConfig:
        """Every key checked (type, range, combination); errors are ConfigError naming ``where`` and the key."""
        return configs.build(cls, values, where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
        return configs.from_yaml(cls, path, overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d
