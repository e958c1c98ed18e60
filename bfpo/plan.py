"""The paper profile's plan, checked and printed offline before anything is downloaded.

    python -m bfpo.notebooks --profile paper --plan

Every stage of ``make reproduce PROFILE=paper``: its notebook, start model (hub id and revision),
data (hub id, revision, split and share), config, optimisation steps, hardware, and the compute the
paper reports for it (quoted, with its source row in ``data/paper/bfpo_reported_results.csv``).
The check loads every config with the same validation as a real run, checks that each hub id and
revision is well formed, and that each stage starts from the model the stage before it writes.
Nothing is fetched: data sizes are the paper's where it gives them, else "known after download".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from bfpo import data, models, report
from bfpo.errors import BadInput
from bfpo.io import project_path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
REVISION = re.compile(r"^([0-9a-f]{40}|main|refs/convert/parquet)$")


@dataclass(frozen=True)
class HubData:
    """A hub data set as a stage reads it."""

    ref: tuple[str, str | None]  # (hub id, pinned revision or None for the default branch)
    split: str
    share: str  # "all", "first 20% (cut before shuffling, seed 42)", ...
    rows: str = "known after download"  # the paper's count where it gives one (quoted)

    def __str__(self) -> str:
        return f"{self.ref[0]}@{self.ref[1] or 'main'} [{self.split}], {self.share}; rows: {self.rows}"


@dataclass(frozen=True)
class Stage:
    name: str
    notebook: str
    what: str
    config: str | None = None  # a TrainConfig YAML of configs/
    start: str | None = None  # a hub model id, or the output of an earlier stage's config
    start_revision: str | None = None
    data: tuple[HubData, ...] = ()
    gpus: str = "none"
    quoted_hours: str | None = None  # a needle of the reported-results CSV ("SFT stage", ...)
    rows_for_steps: int | None = None  # training examples per epoch, where the paper gives them
    processes: int = 4  # GPUs (one process each)
    local_data: tuple[str, ...] = ()  # data that is not on the hub


def _evaluation_data() -> tuple[HubData, ...]:
    """Every hub test set the official evaluation reads (each fetched once into runs/paper/hub_data)."""
    from bfpo import evaluation

    sources = {}
    for task in evaluation.OFFICIAL_TASKS:
        for src in evaluation.hub_sources(task).values():
            share = "all" if src.keep is None else "the records the task keeps (e.g. RTP's challenging prompts)"
            sources.setdefault((src.path, src.revision, src.name, src.split, share), []).append(task)
    return tuple(
        HubData((path, revision), f"{name}/{split}" if name else split, f"{share} (task {', '.join(tasks)})")
        for (path, revision, name, split, share), tasks in sources.items()
    )


PKU_FIRST_20 = "first 20% of the split (cut before shuffling, seed 42)"

PAPER_STAGES = (
    Stage(
        "labelling",
        "02",
        "label the real preference sets on both factors (no training)",
        data=(
            HubData(data.PKU_SAFERLHF, "train", "all (stage SFT and BFPO keep the first 20%)"),
            HubData(data.HH_RLHF, "train", "harmless-base and helpful-base"),
            HubData(data.ULTRAFEEDBACK, "train_prefs", "all (the helpful buffer)", "30K (quoted)"),
        ),
    ),
    Stage(
        "SFT",
        "03",
        "supervised fine-tuning of the base model on UltraChat plus PKU-SafeRLHF safer responses",
        config="configs/paper_sft.yaml",
        start=models.MISTRAL_7B,
        data=(
            HubData(data.ULTRACHAT, "train_sft", "all, every turn of each dialogue (the loss on every token)"),
            HubData(data.PKU_SAFERLHF, "train", PKU_FIRST_20 + ", the safer response", "30K (quoted)"),
        ),
        gpus="4 x A100 80GB, DeepSpeed ZeRO-3, bf16 (configs/accelerate/zero3_bf16.yaml)",
        quoted_hours="SFT stage",
    ),
    Stage(
        "BFPO",
        "03",
        "BFPO on labelled PKU-SafeRLHF pairs with the helpful buffer",
        config="configs/paper_bfpo.yaml",
        start="configs/paper_sft.yaml",
        data=(
            HubData(data.PKU_SAFERLHF, "train", PKU_FIRST_20, "30K (quoted)"),
            HubData(data.ULTRAFEEDBACK, "train_prefs", "the buffer", "30K (quoted)"),
        ),
        gpus="4 x A100 80GB, DeepSpeed ZeRO-3, bf16 (configs/accelerate/zero3_bf16.yaml)",
        quoted_hours="BFPO stage",
        rows_for_steps=30_000,
    ),
    Stage(
        "baselines",
        "04",
        "DPO (helpfulness / safety / mix), IPO, point-wise DPO, ULMA with the BFPO recipe, per method and seed; "
        "Safe RLHF is not retrained at 7B (its released Beaver-7b is evaluated in 05)",
        config="configs/paper_bfpo.yaml",
        start="configs/paper_sft.yaml",
        data=(HubData(data.PKU_SAFERLHF, "train", PKU_FIRST_20, "30K (quoted)"),),
        gpus="4 x A100 80GB per method and seed, as the BFPO stage",
        quoted_hours="BFPO stage",
        rows_for_steps=30_000,
    ),
    Stage(
        "BFPO (red-teaming)",
        "-",
        "BFPO on zephyr-7b-beta's own judged answers to harmful prompts, no buffer (not run by make reproduce: "
        "python -m bfpo.train --config configs/paper_redteam.yaml once the data file is in place)",
        config="configs/paper_redteam.yaml",
        start="HuggingFaceH4/zephyr-7b-beta",
        local_data=(
            "data/zephyr-7b-beta_beaver_redteaming.json of the official repository (not on the hub, not "
            "redistributed): convert with bfpo.data.red_team_json_pairs; rows: 1.5K (quoted)",
        ),
        gpus="2 x A100 80GB, DeepSpeed ZeRO-3, bf16 (official redteaming.sh: --num_processes=2)",
        rows_for_steps=1_500,
        processes=2,
    ),
    Stage(
        "evaluation",
        "05",
        "the 7B models on the official BFPO evaluation (bfpo.evaluation.OFFICIAL_TASKS: multiple choice 0-shot, "
        "no BOS as lm-eval 0.4.1; generative sets sampled at T 0.7, top-p 0.95, 256 tokens, judged by the "
        "HarmBench classifier's contextual prompt) and this package's other sets",
        start="cais/HarmBench-Llama-2-13b-cls",
        data=_evaluation_data(),
        gpus="1 x 80GB GPU (time not measured here)",
    ),
    Stage("figures", "06", "figures and the results summary", gpus="none"),
)


def _check_ref(ref: str, revision: str | None, what: str) -> None:
    if not HUB_ID.match(ref):
        raise BadInput(f"paper plan: {what} {ref!r} is not a hub id (org/name)")
    if revision is not None and not REVISION.match(revision):
        raise BadInput(f"paper plan: {what} {ref!r}: revision {revision!r} is neither a commit sha nor a branch")


def _quoted_hours(needle: str, reported: list[dict]) -> str:
    gpus = next((r for r in reported if r["row"] == "each experiment" and r["column"] == "GPUs"), None)
    row = next((r for r in reported if r["row"] == needle and r["column"] == "training time"), None)
    if row is None or gpus is None:
        raise BadInput(f"paper plan: no quoted training time for {needle!r} in data/paper/bfpo_reported_results.csv")
    hours = float(row["value"]) * float(gpus["value"])
    source = row["table_or_figure"]
    return f"about {row['value']} h on {gpus['value']} {gpus['unit']} = about {hours:g} GPU-hours (quoted: {source})"


def build_plan(stages=PAPER_STAGES, reported: list[dict] | None = None) -> list[dict]:
    """Check every stage (configs, hub ids, revisions, the chain of models) and return one dict per stage."""
    from bfpo.train import TrainConfig

    reported = reported if reported is not None else report.read_reported()
    outputs: dict[str, str] = {}
    plan = []
    for stage in stages:
        entry = {"stage": stage.name, "notebook": stage.notebook, "what": stage.what, "gpus": stage.gpus}
        for d in stage.data:
            _check_ref(d.ref[0], d.ref[1], f"stage {stage.name}: data set")
        entry["data"] = [str(d) for d in stage.data] + list(stage.local_data)
        if stage.config is not None:
            path = project_path(stage.config)
            cfg = TrainConfig.from_yaml(path)  # the same checks as a real run
            outputs[stage.config] = str(Path(cfg.output_dir) / "model")
            global_batch = cfg.per_device_batch_size * stage.processes * cfg.gradient_accumulation_steps
            entry["config"] = stage.config
            entry["recipe"] = (
                f"{cfg.mode}"
                + (f" ({cfg.loss}, beta {cfg.beta})" if cfg.mode != "sft" else "")
                + f", lr {cfg.learning_rate:g} {cfg.lr_scheduler}, {cfg.num_epochs:g} epoch(s), max length "
                f"{cfg.max_length}, trained: {', '.join(cfg.trainable) if cfg.trainable else 'all parameters'}"
            )
            accumulation = cfg.gradient_accumulation_steps
            gpus = stage.processes
            entry["global_batch"] = f"{cfg.per_device_batch_size} x {gpus} GPUs x {accumulation} = {global_batch}"
            if stage.rows_for_steps:
                shared = cfg.buffer_data and cfg.buffer_mode == "share"
                per_step = max(1, round(global_batch * (1 - cfg.buffer_ratio))) if shared else global_batch
                entry["steps"] = (
                    f"{math.ceil(stage.rows_for_steps * cfg.num_epochs / per_step):,} "
                    f"({stage.rows_for_steps:,} pairs / {per_step} per step)"
                )
                if cfg.buffer_data and cfg.buffer_mode == "add":
                    entry["steps"] += f", each with {global_batch} buffer pairs on top"
            else:
                entry["steps"] = "known after download (data size)"
            if stage.start is not None and stage.start.startswith("configs/"):
                if stage.start not in outputs:
                    raise BadInput(f"paper plan: stage {stage.name} starts from {stage.start}, run by no earlier stage")
                if cfg.model != outputs[stage.start]:
                    raise BadInput(
                        f"paper plan: {stage.config}: key 'model' is {cfg.model!r}, but the stage before writes "
                        f"{outputs[stage.start]!r}"
                    )
                entry["start"] = f"{outputs[stage.start]} (written by {stage.start})"
            elif stage.start is not None:
                if cfg.model != stage.start:
                    raise BadInput(f"paper plan: {stage.config}: key 'model' is {cfg.model!r}, not {stage.start!r}")
        if stage.start is not None and "start" not in entry:
            _check_ref(stage.start, stage.start_revision, f"stage {stage.name}: model")
            entry["start"] = f"{stage.start}@{stage.start_revision or 'main'}"
        entry["quoted_compute"] = _quoted_hours(stage.quoted_hours, reported) if stage.quoted_hours else "-"
        plan.append(entry)
    return plan


def format_plan(plan: list[dict]) -> str:
    """The plan as text, one block per stage."""
    lines = ["Paper profile (make reproduce PROFILE=paper): nothing below was downloaded or run.", ""]
    keys = ("what", "start", "config", "recipe", "data", "global_batch", "steps", "gpus", "quoted_compute")
    for i, entry in enumerate(plan, 1):
        lines.append(f"{i}. {entry['stage']} (notebook {entry['notebook']})")
        for key in keys:
            if key not in entry:
                continue
            values = entry[key] if isinstance(entry[key], list) else [entry[key]]
            for k, v in enumerate(values):
                label = key.replace("_", " ") if k == 0 else ""
                lines.append(f"   {label:15} {v}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
