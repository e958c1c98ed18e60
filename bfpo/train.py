"""One trainer on ``accelerate`` for SFT and every pairwise preference loss of :mod:`bfpo.losses`.

    python -m bfpo.train --config configs/paper_bfpo.yaml
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m bfpo.train --config ...

How a step works (global batch G = per_device_batch_size x processes x gradient_accumulation_steps):

* the step's examples are fixed by (seed, step) alone. With ``buffer_mode: share`` a share
  ``buffer_ratio`` of the G examples comes from the helpful-only buffer, the rest from the training
  pairs, shuffled together. With ``buffer_mode: add`` (the official BFPO code) the step takes G
  training pairs AND G buffer pairs, each micro-batch ``per_device_batch_size`` of each, and the
  loss is mean(training losses) + mean(buffer losses). Rank r takes micro-batch slices, so
  1 process and 2 processes see the same global batch;
* chosen and rejected go through the model in ONE forward pass ([2b, T]); log-probs are summed
  over response tokens only (prompt and padding masked);
* reference log-probs are computed once before training (with the start model, sharded across
  processes) and cached on disk, keyed by the model's weights and the tokenized data;
* the loss of each micro-batch is sum(per-example losses) / G (x processes, since DDP, FSDP and
  DeepSpeed average gradients; under DeepSpeed also x accumulation steps, since its engine divides
  by them), so the gradient is the mean over the global batch however it is split.

Checkpoints (model, optimizer, scheduler, random states) are written every ``save_every`` steps
with ``accelerator.save_state`` into ``checkpoints/step-NNNNNN`` (:mod:`bfpo.checkpoints`: atomic,
sha256 manifest, the newest ``keep_checkpoints`` kept); a re-run with the same config resumes from
the newest intact one and ends where an uninterrupted run ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bfpo import (
    cards,
    checkpoints,
    compute,
    configs,
    locks,
    lora,
    losses,
    models,
    objectives,
    packing,
    precision,
    runs,
    sharding,
    tracking,
)
from bfpo.errors import BadInput, run_cli
from bfpo.io import append_line, atomic_path, write_json
from bfpo.objectives import PAIR_LOSSES, POINT_LOSSES, PairBatch, PointBatch  # noqa: F401
from bfpo.runs import TRAINER_VERSION, check_inputs, completed, launch, ranks_seen, read_metrics  # noqa: F401
from bfpo.sequences import (  # noqa: F401  (encode_*, pack_constant_length: re-exported, as part of the trainer's interface)
    Encoding,
    StepSchedule,
    check_dialogues,
    collate,
    data_fingerprint,
    describe_dropped,
    encode_dialogue,
    encode_prompt,
    encode_response,
    load_examples,
    micro_batch_sequences,
    model_fingerprint,
    pack_constant_length,
    reference_logps,
    sequence_logps,
    tokenize,
)
from bfpo.train_config import LR_SCHEDULERS, TrainConfig  # noqa: F401  (the trainer's config)

log = logging.getLogger("bfpo.train")

# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as configured; returns the summary also written to ``train_summary.json``.

    The stages, in order: check the inputs; read and tokenize every example (before the output folder
    is touched); claim the output folder and find the checkpoint to resume; the reference log-probs;
    the optimiser; the steps; the final model and summary. The main process holds the output folder's lock
    (:mod:`bfpo.locks`) throughout.
    """
    runs.check_inputs(cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    done = runs.completed(cfg.output_dir, cfg)
    if done is not None:
        log.info("%s already holds a finished run of this config; nothing to do", cfg.output_dir)
        return done
    # one writer per run folder: the main process locks it (a second launch stops here, having written nothing)
    with locks.hold_if(int(os.environ.get("RANK", "0")) == 0, cfg.output_dir, "python -m bfpo.train"):
        if (done := runs.completed(cfg.output_dir, cfg)) is not None:  # finished while we waited to start
            return done
        return _train(cfg)


def _train(cfg: TrainConfig) -> dict:
    """:func:`train` once the output folder is this process's."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # the trackers are accelerate's (report_to); started once the output folder is claimed
    trackers = tracking.make(cfg.report_to, cfg.output_dir, Path(cfg.output_dir).name)
    # under DeepSpeed its engine counts the accumulation steps (and divides each loss by them)
    accumulation = cfg.gradient_accumulation_steps if sharding.deepspeed_requested() else 1
    # accelerate keeps one state per process; each run sets its own precision (the process group stays)
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        cpu=cfg.device == "cpu",
        mixed_precision=precision.resolve(cfg.mixed_precision, cfg.num_threads, "cpu" if cfg.device == "cpu" else None),
        log_with=trackers or None,
        gradient_accumulation_steps=accumulation,
    )
    inputs = _read_inputs(cfg, accelerator.num_processes)
    precision.fit_attention(inputs.model, accelerator.mixed_precision, accelerator.device)
    resume = _claim_output(cfg, accelerator)
    if trackers:
        if resume is not None:
            tracking.resume_at(trackers, resume[1]["step"] + 1)
        accelerator.init_trackers(Path(cfg.output_dir).name, config=tracking.hparams(cfg.to_dict()))
    ref, ref_tokens = _reference(cfg, inputs, accelerator)
    run = _prepare(cfg, inputs, ref, accelerator)
    start_step, train_tokens = _resume(cfg, run, resume)
    t_start = time.perf_counter()
    last, train_tokens = _steps(run, start_step, train_tokens, ref_tokens)
    return _finish(run, start_step, last, ref_tokens, train_tokens, time.perf_counter() - t_start)


@dataclass
class _Inputs:
    """What a run reads, checked and tokenized, before anything is written."""

    tokenizer: object
    model: torch.nn.Module
    items: list[dict]  # the training examples, then the buffer examples
    n_main: int
    n_buffer: int
    skipped: int  # examples whose response was truncated away
    trainable: int  # parameters
    total: int
    schedule: StepSchedule
    global_batch: int
    total_steps: int


def _read_inputs(cfg: TrainConfig, world: int) -> _Inputs:
    """Every record checked (a bad file stops here, cheaply), then the model, the tokenized examples
    and the schedule of steps."""
    examples = load_examples(cfg.train_data, cfg.mode, "train_data")
    if cfg.max_train_examples:
        examples = examples[: cfg.max_train_examples]
    check_dialogues(examples, cfg)
    buffer = load_examples(cfg.buffer_data, "preference", "buffer_data") if cfg.buffer_data else None
    torch.manual_seed(cfg.seed)

    tokenizer = models.load_tokenizer(cfg.model, cfg.revision)
    if cfg.chat_template:
        models.set_chat_template(tokenizer, cfg.chat_template)
    model = models.load_model(cfg.model, cfg.revision)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.trainable == "lora":  # adapters on the frozen model (bfpo.lora)
        targets = cfg.lora_target_modules or list(lora.DEFAULT_TARGETS)
        model = lora.wrap(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, targets)
        trainable, total = models.count_parameters(model)
    else:
        trainable, total = models.select_trainable(model, cfg.trainable)

    items, dropped = tokenize(examples, tokenizer, cfg, cfg.mode)
    n_main = len(items)
    n_buffer, dropped_buffer = 0, []
    if buffer is not None:
        buffer_items, dropped_buffer = tokenize(buffer, tokenizer, cfg, "preference")
        items += buffer_items
        n_buffer = len(buffer_items)
    for path, what, lost in ((cfg.train_data, "training", dropped), (cfg.buffer_data, "buffer", dropped_buffer)):
        if lost:
            log.warning("%s", describe_dropped(path, lost, cfg, f"{what} example(s)"))
    if not n_main:
        raise BadInput(f"{cfg.train_data}: no training example left after truncation to max_length {cfg.max_length}")

    global_batch = cfg.per_device_batch_size * world * cfg.gradient_accumulation_steps
    if n_buffer and cfg.buffer_mode == "share" and not float(global_batch * cfg.buffer_ratio).is_integer():
        raise configs.ConfigError(
            "config",
            "buffer_ratio",
            f"{cfg.buffer_ratio} x the global batch {global_batch} (per_device_batch_size {cfg.per_device_batch_size}"
            f" x {world} process(es) x gradient_accumulation_steps {cfg.gradient_accumulation_steps}) is not a "
            "whole number of buffer pairs",
        )
    schedule = StepSchedule(
        n_main, n_buffer, global_batch, cfg.buffer_ratio, cfg.seed, cfg.buffer_mode, cfg.per_device_batch_size
    )
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.num_epochs * schedule.steps_per_epoch()))
    skipped = len(dropped) + len(dropped_buffer)
    return _Inputs(
        tokenizer, model, items, n_main, n_buffer, skipped, trainable, total, schedule, global_batch, total_steps
    )


def _claim_output(cfg: TrainConfig, accelerator):
    """The output folder, touched only now that every input has been read and checked: a folder that
    held another config's run is cleared. Returns the checkpoint to resume, or None (a damaged one
    falls back to the one before it, and is discarded)."""
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        saved = out / "config.json"
        if saved.is_file() and not runs.same_run(json.loads(saved.read_text()), cfg):
            # another config ran here: its checkpoint, metrics and results must not be resumed or kept
            log.warning("%s held a run of another config; starting afresh", out)
            for stale in ("checkpoints", "snapshots", "model", "ranks"):
                shutil.rmtree(out / stale, ignore_errors=True)
            for stale in ("train_summary.json", "metrics.jsonl"):
                (out / stale).unlink(missing_ok=True)
        write_json(saved, {**cfg.to_dict(), "trainer_version": runs.TRAINER_VERSION})
    accelerator.wait_for_everyone()
    resume, damaged = checkpoints.latest_intact(out, cfg.start_over)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoints.discard(damaged)
    return resume


def _reference(cfg: TrainConfig, inputs: _Inputs, accelerator) -> tuple[torch.Tensor | None, int]:
    """The start model's log-probs of every response ([N, responses]; the start model is the
    reference pi_ref), cached on disk by (model weights, tokenized data), and the tokens that pass
    reads (counted even when cached: the method needs it). None for SFT."""
    items = inputs.items
    if cfg.mode == "sft":
        return None, 0
    ref_tokens = sum(len(it["prompt"]) * len(it["responses"]) + sum(map(len, it["responses"])) for it in items)
    cache_dir = Path(cfg.ref_cache_dir or Path(cfg.output_dir) / "ref_cache")
    bf16 = "bf16" if accelerator.mixed_precision == "bf16" else ""  # a reference computed under bf16 autocast
    packed = "packed" if cfg.padding_free else ""  # the same log-probs within float tolerance, not bit for bit
    key = model_fingerprint(cfg.model, cfg.revision) + data_fingerprint(items) + bf16 + packed
    key = hashlib.sha256(key.encode()).hexdigest()
    cache = cache_dir / f"ref_logps_{key[:24]}.pt"
    ref = _load_ref_cache(cache)
    if ref is None:
        inputs.model.to(accelerator.device)
        # with LoRA, the adapter-disabled model is the start model
        with lora.disabled(inputs.model) if cfg.trainable == "lora" else nullcontext(), accelerator.autocast():
            ref = reference_logps(
                inputs.model,
                items,
                cfg.reference_batch_size,
                accelerator,
                inputs.tokenizer.pad_token_id,
                padding_free=cfg.padding_free,
            )
        if accelerator.is_main_process:
            with atomic_path(cache) as tmp:
                torch.save(ref, tmp)
    if ref.shape != (len(items), len(items[0]["responses"])):
        raise ValueError(f"{cache}: cached reference log-probs do not match the data; delete the file")
    return ref.to(accelerator.device), ref_tokens  # on the run's device once, indexed there every step


def _load_ref_cache(cache: Path) -> torch.Tensor | None:
    """The cached reference log-probs, or None when missing or torn (named in one warning, removed, rebuilt)."""
    if not cache.is_file():
        return None
    try:
        return torch.load(cache)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        log.warning("%s: torn reference cache (%s: %s); rebuilding it", cache, type(err).__name__, err)
        cache.unlink(missing_ok=True)
        return None


@dataclass
class _Run:
    """A run being trained: its inputs, the prepared model and optimiser, and the step's shapes."""

    cfg: TrainConfig
    inputs: _Inputs
    ref: torch.Tensor | None
    accelerator: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    params: list
    chunk: int  # examples per micro-batch: per_device, or per_device training + per_device buffer ("add")
    sharding: str = "none"  # FSDP: "accelerate", "direct" (bfpo.sharding) or "none"


def _prepare(cfg: TrainConfig, inputs: _Inputs, ref, accelerator) -> _Run:
    """AdamW on the trainable parameters, the learning-rate schedule (warmup then ``lr_scheduler``),
    both prepared by accelerate (DDP across processes)."""
    from transformers import get_scheduler

    how = sharding.plan(accelerator)
    if how == "direct":  # FSDP asked for, but accelerate fell back to DDP (CPU): shard here
        sharding.shard(inputs.model)
    params = [p for p in inputs.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.learning_rate,
        betas=cfg.adam_betas,
        weight_decay=cfg.weight_decay,
        **({"fused": True} if cfg.fused_optimizer else {}),
    )
    if cfg.compile:  # dynamo falls back to eager (and warns) where a graph fails to compile
        from torch._dynamo import config as dynamo_config

        dynamo_config.suppress_errors = True
        inputs.model.compile(dynamic=True)
    scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * inputs.total_steps),
        num_training_steps=inputs.total_steps,
    )
    if how == "direct":
        model = inputs.model
        accelerator.register_for_checkpointing(sharding.ShardedState(model, optimizer))
    else:
        model, optimizer = accelerator.prepare(inputs.model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    model.train()
    chunk = cfg.per_device_batch_size * (2 if inputs.n_buffer and cfg.buffer_mode == "add" else 1)
    return _Run(cfg, inputs, ref, accelerator, model, optimizer, scheduler, params, chunk, how)


def _resume(cfg: TrainConfig, run: _Run, resume) -> tuple[int, int]:
    """Load the checkpoint to resume (model, optimiser, scheduler, random states) and drop the
    metrics it will write again; returns (first step, training tokens so far)."""
    metrics_path = Path(cfg.output_dir) / "metrics.jsonl"
    main = run.accelerator.is_main_process
    if resume is None:
        if main and metrics_path.exists():
            metrics_path.unlink()
        return 0, 0
    ckpt, manifest = resume
    run.accelerator.load_state(str(ckpt))
    if main:
        log.info("resuming from %s at step %d", ckpt, manifest["step"])
        runs.truncate_metrics(metrics_path, manifest["step"])
    return manifest["step"], manifest["state"]["train_tokens"]


def _steps(run: _Run, start_step: int, train_tokens: int, ref_tokens: int) -> tuple[dict, int]:
    """Optimisation steps ``start_step`` .. the last, each logged, with checkpoints and snapshots
    on their schedules; returns the last step's record and the training tokens."""
    cfg, accelerator, inputs = run.cfg, run.accelerator, run.inputs
    out, main, total_steps = Path(cfg.output_dir), accelerator.is_main_process, inputs.total_steps
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        desc=f"{cfg.mode} ({cfg.loss if cfg.mode != 'sft' else 'nll'})",
        disable=not (main and cfg.progress),
    )
    last = {}
    for step in range(start_step, total_steps):
        t0 = time.perf_counter()
        gathered, tokens, grad_norm = _step(run, step)
        train_tokens += tokens
        lr = run.scheduler.get_last_lr()[0]
        last = objectives.step_metrics(step + 1, gathered, cfg, lr, grad_norm, tokens, time.perf_counter() - t0)
        if main and ((step + 1) % cfg.log_every == 0 or step + 1 == total_steps):
            append_line(out / "metrics.jsonl", json.dumps(last))
        if (step + 1) % cfg.log_every == 0 or step + 1 == total_steps:
            accelerator.log(last, step=step + 1)  # to the trackers of report_to (on the main process)
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.4g}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total_steps:
            runs.save_checkpoint(accelerator, out, step + 1, train_tokens, cfg.keep_checkpoints)
        if cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0 and step + 1 < total_steps:
            flops = _flops(inputs.total, inputs.trainable, ref_tokens, train_tokens)
            state = _gathered(run)  # every process takes part when the model is sharded
            if main:
                save = lambda path, m=last, w=state: _save_model(run, path, m, w)  # noqa: E731
                checkpoints.save_snapshot(out, step + 1, save, {"flops": flops})
    bar.close()
    return last, train_tokens


def _step(run: _Run, step: int) -> tuple[dict, int, torch.Tensor | None]:
    """One optimisation step on the global batch of ``step``: each process takes its micro-batches,
    and each micro-batch's loss is its share of the batch mean (sum / G x processes, since DDP
    averages gradients). Returns the logged values gathered from every process, the tokens of the
    step and the gradient norm."""
    cfg, accelerator, items = run.cfg, run.accelerator, run.inputs.items
    world, global_batch = accelerator.num_processes, run.inputs.global_batch
    ids = run.inputs.schedule.ids(step)
    totals = {}  # what the loss divides by, counted over the whole global batch
    if cfg.mode == "sft":
        totals["tokens"] = sum(len(items[i]["responses"][0]) for i in ids)
    if cfg.loss == "ulma" and cfg.mode == "pointwise":  # the class sizes of this global batch
        totals["positives"] = sum(items[i]["label"] >= 0.5 for i in ids)
    stats, tokens = defaultdict(list), 0
    pad, device = run.inputs.tokenizer.pad_token_id, accelerator.device
    for m in range(cfg.gradient_accumulation_steps):
        lo = (m * world + accelerator.process_index) * run.chunk
        mb_ids = ids[lo : lo + run.chunk]
        mb = [items[i] for i in mb_ids]
        seqs = micro_batch_sequences(mb)
        sync = m == cfg.gradient_accumulation_steps - 1
        # padding-free: the packed row's attention layout for the forward and the backward (activation
        # checkpointing runs the forward again during the backward)
        packed = packing.varlen(run.model, packing.lengths(seqs), device) if cfg.padding_free else nullcontext()
        with nullcontext() if sync else accelerator.no_sync(run.model), accelerator.autocast(), packed:
            logps, n_tok, n_real = packing.batch_logps(run.model, seqs, pad, device, cfg.padding_free)
            tokens += n_real
            per_example, batch = _losses(run, mb, mb_ids, logps, n_tok, totals, len(ids))
            # the micro-batch's share of the objective: sum / G (x processes: DDP averages gradients)
            scale = sharding.loss_scale(accelerator.distributed_type, world, cfg.gradient_accumulation_steps)
            loss = per_example.sum() / (totals["tokens"] if cfg.mode == "sft" else global_batch) * scale
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss at step {step} (micro-batch {m}); lower the learning rate or check the data"
                )
            accelerator.backward(loss)
        # logged so that its mean over the step is the objective (sum of losses / G)
        stats["loss"].append(per_example.detach() * (len(ids) / global_batch))
        for key, value in objectives.logged(cfg, batch, n_tok).items():
            stats[key].append(value)
    grad_norm = accelerator.clip_grad_norm_(run.params, cfg.max_grad_norm) if cfg.max_grad_norm else None
    grad_norm = sharding.full(grad_norm)  # sharded gradients give a DTensor norm
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    gathered = {k: accelerator.gather(torch.cat(v).to(accelerator.device)).cpu() for k, v in stats.items()}
    tokens = int(accelerator.gather(torch.tensor([tokens], device=accelerator.device)).sum())
    return gathered, tokens, grad_norm


def _losses(run: _Run, mb, mb_ids, logps, n_tok, totals: dict, n_ids: int):
    """Per-example losses of one micro-batch ([b]) and the batch they were computed on (a
    :class:`PairBatch`, a :class:`PointBatch`, or None for SFT)."""
    cfg, ref = run.cfg, run.ref
    if cfg.mode == "sft":  # -log pi(y | x), summed over the response tokens
        return -logps, None
    idx = torch.tensor(mb_ids, device=ref.device)
    if cfg.mode == "pointwise":
        scale = n_tok.clamp(min=1).to(logps) if cfg.length_normalize else torch.ones_like(logps)
        point = objectives.PointBatch(
            logps / scale,
            ref[idx, 0].to(logps) / scale,
            torch.tensor([it["label"] for it in mb], dtype=logps.dtype, device=logps.device),
            n_tok,
        )
        per_example = objectives.POINT_LOSSES[cfg.loss](point, cfg)
        if cfg.loss == "ulma":  # official ULMA: mean over positives + mean over negatives
            weights = losses.ulma_weights(point.labels, totals["positives"], n_ids - totals["positives"])
            per_example = per_example * weights * n_ids  # so that its mean is the batch loss
        return per_example, point
    b = len(mb)  # chosen rows first, then rejected rows (one forward pass, [2b, T])
    batch = objectives.PairBatch(
        logps[:b],
        logps[b:],
        ref[idx, 0].to(logps),
        ref[idx, 1].to(logps),
        torch.tensor([it["safe"][0] for it in mb], device=logps.device),
        torch.tensor([it["safe"][1] for it in mb], device=logps.device),
        n_tok[:b],
        n_tok[b:],
    )
    return objectives.PAIR_LOSSES[cfg.loss](batch, cfg), batch


def _gathered(run: _Run) -> dict | None:
    """The whole model's weights gathered from the shards (every process must call this; they land
    on the main process), or None when the model is not sharded."""
    return sharding.full_state_dict(run.model) if run.sharding != "none" else None


def _save_model(run: _Run, path, metrics: dict, state: dict | None = None) -> None:
    """The model (with the weights ``state`` when gathered from shards) and tokenizer, with a model
    card holding the config and ``metrics`` (the last step's). On the main process."""
    card = cards.train_card(run.cfg, metrics)
    models.save(run.accelerator.unwrap_model(run.model), run.inputs.tokenizer, path, card, state)


def _finish(run: _Run, start_step: int, last: dict, ref_tokens: int, train_tokens: int, seconds: float) -> dict:
    """Each process leaves a note (so a run shows that every rank took part); the main process
    saves the final model and the summary, which marks the run complete, and drops the checkpoints."""
    cfg, accelerator, inputs = run.cfg, run.accelerator, run.inputs
    out, main, world = Path(cfg.output_dir), accelerator.is_main_process, accelerator.num_processes
    held, _ = sharding.local_parameters(run.model)
    write_json(
        out / "ranks" / f"rank{accelerator.process_index}.json",
        {
            "rank": accelerator.process_index,
            "world_size": world,
            "pid": os.getpid(),
            "steps": inputs.total_steps - start_step,
            "parameters_held": held,
        },
    )
    accelerator.wait_for_everyone()
    state = _gathered(run)
    if main:
        _save_model(run, out / "model", last, state)
    summary = {
        "steps": inputs.total_steps,
        "resumed_from": start_step,
        "processes": world,
        "global_batch": inputs.global_batch,
        "train_examples": inputs.n_main,
        "buffer_examples": inputs.n_buffer,
        "skipped_truncated": inputs.skipped,
        "trainable_parameters": inputs.trainable,
        "total_parameters": inputs.total,
        "seconds": seconds,
        "tokens": {"reference": ref_tokens, "train": train_tokens},
        "flops": _flops(inputs.total, inputs.trainable, ref_tokens, train_tokens),
        "final": last,
        "mixed_precision": accelerator.mixed_precision,
        "attention": accelerator.unwrap_model(run.model).config._attn_implementation,
        "device": str(accelerator.device),
        "sharding": run.sharding,
    }
    if main:
        write_json(out / "train_summary.json", summary)  # marks the run complete
        checkpoints.clear(out)  # the final model supersedes them
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if world > 1:  # see main(): the process exits without freeing DDP's process group
        _KEEP_ALIVE.append(run)
    return summary


_KEEP_ALIVE: list = []
"""Runs of several processes, kept from being freed. torch's ProcessGroupGloo destructor can
deadlock with the GIL when DDP's reducer is freed (seen at the end of a 2-process CPU run: the
main thread joins a gloo thread that waits for the GIL), so :func:`main` ends such a process with
``os._exit`` once every file is written."""


def _flops(n_params: int, n_trainable: int, ref_tokens: int, train_tokens: int) -> dict[str, float]:
    """Reference pass (forward) and the steps (forward + backward) of this run; see :mod:`bfpo.compute`."""
    counter = compute.FlopCounter()
    if ref_tokens:
        counter.forward("reference", n_params, ref_tokens)
    counter.train("train", n_params, train_tokens, n_trainable)
    return counter.as_dict()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bfpo.train",
        description="Train with SFT or a pairwise preference loss (BFPO, DPO, IPO) on one or many processes. "
        "Launch with `accelerate launch [--multi_gpu --num_processes N] -m bfpo.train ...` for several; "
        "set ACCELERATE_USE_CPU=1 for CPU processes (gloo). A re-run resumes from the newest intact checkpoint "
        "in <output_dir>/checkpoints (save_every, keep_checkpoints).",
        epilog="Config keys (YAML): " + ", ".join(f.name for f in dataclasses.fields(TrainConfig)),
    )
    parser.add_argument("--config", required=True, help="YAML file of TrainConfig keys")
    configs.add_overrides(
        parser,
        "override a config key (repeatable), e.g. --set max_steps=10",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or BFPO_DEBUG=1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def work():
        cfg = TrainConfig.from_yaml(args.config, dict(args.overrides))
        try:
            summary = train(cfg)
        except BadInput as e:  # a key found wrong only against the model ("trainable: ..."): name its file
            key, _, problem = str(e).partition(": ")
            if problem and key in {f.name for f in dataclasses.fields(TrainConfig)}:
                raise configs.ConfigError(args.config, key, problem) from None
            raise
        if summary and int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps({k: v for k, v in summary.items() if k != "final"}))

    code = run_cli("bfpo.train", work, args.debug)
    if _KEEP_ALIVE:  # a finished run of several processes: exit without freeing it (see _KEEP_ALIVE)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
