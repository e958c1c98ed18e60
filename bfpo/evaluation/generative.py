"""Generative tasks: prompts, decoding, judged harmless rates with Wilson intervals."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bfpo import data as bdata
from bfpo import models
from bfpo.evaluation.hub import HubSource, task_paths
from bfpo.evaluation.judges import Judge, is_refusal
from bfpo.evaluation.mc_docs import _csv_rows, _need


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate successes / n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class GenPrompt:
    id: str
    prompt: str
    subset: str  # e.g. "unsafe" / "safe" for XSTest, "standard" / "contextual" for HarmBench


def _prompts_advbench(path):
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [GenPrompt(str(i), text.strip(), "harmful") for i, text in enumerate(lines, start=1) if text.strip()]


def _prompts_harmbench(path):
    out = []
    for line, r in enumerate(_csv_rows(path), start=1):
        kind = _need(str(path), line, r, "FunctionalCategory")
        if kind == "copyright":  # judged by hashing against the protected text, not by a classifier
            continue
        behavior = _need(str(path), line, r, "Behavior")
        prompt = f"{r['ContextString']}\n\n---\n\n{behavior}" if kind == "contextual" else behavior
        out.append(GenPrompt(r.get("BehaviorID") or str(line), prompt, kind))
    return out


def _prompts_xstest(path):
    out = []
    for line, r in enumerate(_csv_rows(path), start=1):
        label = _need(str(path), line, r, "label")
        if label not in ("safe", "unsafe"):
            raise bdata.DataError(str(path), line, "label", f"expected 'safe' or 'unsafe', got {label!r}")
        out.append(GenPrompt(r.get("id") or str(line), _need(str(path), line, r, "prompt"), label))
    return out


def _prompts_toxigen(*paths):
    out = []
    for path in paths:
        subset = "hate" if "hate" in Path(path).name else "neutral"
        for i, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            if text.strip():  # each line is a few-shot list joined by a literal "\n"; the model continues it
                out.append(GenPrompt(f"{subset}:{i}", text.replace("\\n", "\n").rstrip() + "\n-", subset))
    return out


def _prompts_jsonl(path):
    """Prompts fetched from the hub (``{"prompt", "subset"[, "id"]}`` per line); a prompt asked twice
    (PKU-SafeRLHF test has several response pairs per prompt) is answered once."""
    out, seen = [], set()
    for line, r in bdata.read_jsonl(path):
        prompt = _need(str(path), line, r, "prompt")
        if prompt not in seen:
            seen.add(prompt)
            out.append(GenPrompt(str(r.get("id") or line), prompt, _need(str(path), line, r, "subset")))
    return out


def _prompt_record(text_of, subset_of, id_of=None):
    """A hub record -> ``{"id", "prompt", "subset"}`` (see :func:`_prompts_jsonl`)."""
    return lambda r: {"id": id_of(r) if id_of else None, "prompt": text_of(r), "subset": subset_of(r)}


@dataclass(frozen=True)
class GenTask:
    name: str
    files: tuple[str, ...]
    load: Callable[..., list[GenPrompt]]
    metric: str  # "harmless_rate" over every prompt, or per subset for XSTest
    hub: tuple[HubSource, ...] = ()  # one per file, for the sets that are read from the hub only
    hub_only: bool = False


@dataclass(frozen=True)
class Decoding:
    """How answers to the generative tasks are produced (``max_new_tokens`` falls back to the
    caller's value when None)."""

    name: str
    temperature: float  # 0: greedy
    top_p: float
    max_new_tokens: int | None
    advbench_suffix: str  # appended to each AdvBench prompt


DECODINGS = {
    "greedy": Decoding("greedy", 0.0, 1.0, None, ""),
    # the official BFPO evaluation (data/eval-tasks/*.yaml): sampled, lm-eval's 256 new tokens, prompt + ". "
    "official": Decoding("official", 0.7, 0.95, 256, ". "),
}


def _alert(config: str, subset: str) -> GenTask:
    """ALERT (Babelscape/ALERT): the ``alert`` or ``alert_adversarial`` prompts, grouped by ``subset``."""
    source = HubSource(
        "Babelscape/ALERT",
        config,
        "test",
        _prompt_record(lambda r: r["prompt"], lambda r: r[subset], lambda r: str(r["id"])),
    )
    return GenTask(config, (f"{config}_test.jsonl",), _prompts_jsonl, "harmless_rate", (source,), hub_only=True)


GEN_TASKS: dict[str, GenTask] = {
    t.name: t
    for t in (
        GenTask("advbench", ("bfpo_advbench_eval_prompts_388.txt",), _prompts_advbench, "harmless_rate"),
        GenTask("harmbench", ("harmbench_behaviors_text_test_320.csv",), _prompts_harmbench, "harmless_rate"),
        GenTask("xstest", ("xstest_prompts_450.csv",), _prompts_xstest, "harmless_rate"),
        GenTask(
            "toxigen",
            ("toxigen_prompts_hate_asian_200.txt", "toxigen_prompts_neutral_asian_200.txt"),
            _prompts_toxigen,
            "harmless_rate",
        ),
        # the other sets of the official BFPO evaluation, read from the hub (--hub-dir); prompts as
        # the hub has them, the model's chat template around each
        _alert("alert", "category"),
        _alert("alert_adversarial", "attack_type"),
        GenTask(
            "rtp_challenge",  # RealToxicityPrompts, its "challenging" subset
            ("real_toxicity_prompts_challenging.jsonl",),
            _prompts_jsonl,
            "harmless_rate",
            (
                HubSource(
                    "allenai/real-toxicity-prompts",
                    None,
                    "train",
                    _prompt_record(
                        lambda r: r["prompt"]["text"],
                        lambda r: "challenging",
                        lambda r: f"{r['filename']}:{r['begin']}",
                    ),
                    keep=lambda r: bool(r["challenging"]),
                ),
            ),
            hub_only=True,
        ),
        GenTask(
            "beaver",  # the prompts of PKU-SafeRLHF test, at the revision the BFPO code pins
            ("pku_saferlhf_test_prompts.jsonl",),
            _prompts_jsonl,
            "harmless_rate",
            (
                HubSource(
                    bdata.PKU_SAFERLHF[0],
                    None,
                    "test",
                    _prompt_record(lambda r: r["prompt"], lambda r: "pku_saferlhf_test"),
                    bdata.PKU_SAFERLHF[1],
                ),
            ),
            hub_only=True,
        ),
        GenTask(
            "hhh_harmless",  # the inputs of the HHH alignment set's "harmless" part
            ("hhh_alignment_harmless_test.jsonl",),
            _prompts_jsonl,
            "harmless_rate",
            (
                HubSource(
                    "HuggingFaceH4/hhh_alignment",
                    "harmless",
                    "test",
                    _prompt_record(lambda r: r["input"], lambda r: "harmless"),
                    "refs/convert/parquet",
                ),
            ),
            hub_only=True,
        ),
    )
}


def run_gen_task(
    model,
    tokenizer,
    task: GenTask,
    judge: Judge,
    limit=None,
    max_new_tokens=64,
    data_dir=None,
    batch_size=32,
    decoding: str = "greedy",
    seed: int = 0,
) -> dict:
    """Answers to the task's prompts (``decoding``: greedy by default, or the official BFPO settings,
    see :data:`DECODINGS`), judged; harmless rate (and for XSTest the over-refusal rate on safe
    prompts) with 95% Wilson intervals, per subset and overall."""
    paths = task_paths(task, data_dir)
    prompts = task.load(*paths)
    if limit:  # keep every subset represented
        by_subset: dict[str, list[GenPrompt]] = {}
        for gp in prompts:
            by_subset.setdefault(gp.subset, []).append(gp)
        per = max(1, limit // len(by_subset))
        prompts = [gp for group in by_subset.values() for gp in group[:per]]
    dec = DECODINGS[decoding]
    texts = [gp.prompt + (dec.advbench_suffix if task.name == "advbench" else "") for gp in prompts]
    responses = [
        g[0]
        for g in models.generate(
            model,
            tokenizer,
            texts,
            1,
            max_new_tokens=dec.max_new_tokens or max_new_tokens,
            temperature=dec.temperature,
            top_p=dec.top_p,
            seed=seed,
            batch_size=batch_size,
            sort_by_length=True,  # benchmark prompts vary in length: batches pad less
        )
    ]
    harmless = judge.harmless(texts, responses)
    refusals = [is_refusal(r) for r in responses]
    metrics = {}
    for subset in sorted({gp.subset for gp in prompts}) + ["all"]:
        sel = [k for k, gp in enumerate(prompts) if subset in ("all", gp.subset)]
        if task.name == "xstest" and subset == "all":
            continue  # safe and unsafe prompts answer different questions
        ok = sum(harmless[k] for k in sel)
        metrics[f"harmless_rate/{subset}"] = ok / len(sel)
        metrics[f"harmless_ci/{subset}"] = wilson_interval(ok, len(sel))
        if task.name == "xstest" and subset == "safe":
            n_ref = sum(refusals[k] for k in sel)
            metrics["over_refusal/safe"] = n_ref / len(sel)
            metrics["over_refusal_ci/safe"] = wilson_interval(n_ref, len(sel))
    per_example = [
        {"id": gp.id, "subset": gp.subset, "response": r, "harmless": h}
        for gp, r, h in zip(prompts, responses, harmless, strict=True)
    ]
    return {
        "task": task.name,
        "category": "harmlessness",
        "judge": judge.name,
        "n": len(prompts),
        "metrics": metrics,
        "per_example": per_example,
    }
