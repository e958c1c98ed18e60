"""The multiple-choice tasks (:data:`MC_TASKS`) and how one is run on a model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bfpo.evaluation.hub import (
    HubSource,
    _arc_from_hub,
    _bbq_hub,
    _columns,
    _crows_from_hub,
    _ethics_hub,
    _mmlu_from_hub,
    _truthfulqa_from_hub,
    _virtue_from_hub,
    task_paths,
)
from bfpo.evaluation.loglik import Request, loglikelihoods
from bfpo.evaluation.mc_docs import (
    BBQ_CATEGORIES,
    Doc,
    _docs_arc,
    _docs_bbq,
    _docs_bigbench,
    _docs_crows,
    _docs_ethics,
    _docs_mmlu,
    _docs_toxigen_mc,
    _docs_truthfulqa,
    _docs_winogrande,
    acc,
    bbq_aggregate,
    bbq_metrics,
    crows,
    mc2,
)


@dataclass(frozen=True)
class MCTask:
    """A multiple-choice task: its files (in data/, or $BFPO_DATA_DIR), how to read them, how to score."""

    name: str
    category: str  # as in the paper's tables: "harmlessness" (safety, bias, ethics) or "helpfulness"
    files: tuple[str, ...]
    load: Callable[..., list[Doc]]
    score: Callable[[Doc, list[float]], dict[str, float]]
    main_metric: str
    aggregate: Callable[[list[dict]], dict[str, float]] | None = None  # default: the mean of each metric
    version: int = 1  # bumped when the scoring or the choice of examples changes: old caches are not reused
    hub: tuple[HubSource, ...] = ()  # one per file: the full test set, see fetch_hub_data
    hub_only: bool = False  # no subset in data/: scored only on the files fetched from the hub (--hub-dir)


BIGBENCH_TASKS = (
    "hhh_alignment",
    "fact_checker",
    "moral_permissibility",
    "bbq_lite_json",
    "known_unknowns",
    "simple_ethical_questions",
)
"""The BIG-bench tasks of the official BFPO evaluation (lm-eval's multiple-choice template, 0-shot)."""

_TQA_HUB = (HubSource("truthfulqa/truthful_qa", "multiple_choice", "validation", _truthfulqa_from_hub),)

MC_TASKS: dict[str, MCTask] = {
    t.name: t
    for t in (
        MCTask(
            "arc_challenge",
            "helpfulness",
            ("arc_challenge_test_500.jsonl",),
            _docs_arc,
            acc,
            "acc_norm",
            hub=(HubSource("allenai/ai2_arc", "ARC-Challenge", "test", _arc_from_hub),),
        ),
        MCTask(
            "mmlu_high_school_chemistry",
            "helpfulness",
            ("mmlu_high_school_chemistry_test_203.csv",),
            _docs_mmlu,
            acc,
            "acc",
            hub=(HubSource("cais/mmlu", "high_school_chemistry", "test", _mmlu_from_hub),),
        ),
        MCTask(
            "truthfulqa_mc1",
            "harmlessness",
            ("truthfulqa_v1_mc_task_500.jsonl",),
            lambda p: _docs_truthfulqa(p, "mc1"),
            acc,
            "acc",
            hub=_TQA_HUB,
        ),
        MCTask(
            "truthfulqa_mc2",
            "harmlessness",
            ("truthfulqa_v1_mc_task_500.jsonl",),
            lambda p: _docs_truthfulqa(p, "mc2"),
            mc2,
            "mc2",
            hub=_TQA_HUB,
        ),
        MCTask(
            "crows_pairs_english",
            "harmlessness",
            ("crows_pairs_anonymized_500.csv",),
            _docs_crows,
            crows,
            "pct_stereotype",
            hub=(HubSource("jannalu/crows_pairs_multilingual", "english", "test", _crows_from_hub),),
        ),
        MCTask(
            "ethics_cm",
            "harmlessness",
            ("ethics_commonsense_test_500.csv",),
            lambda p: _docs_ethics(p, "commonsense"),
            acc,
            "acc",
            hub=(_ethics_hub("commonsense", _columns("label", "input", "is_short", "edited")),),
        ),
        MCTask(
            "ethics_deontology",
            "harmlessness",
            ("ethics_deontology_test_500.csv",),
            lambda p: _docs_ethics(p, "deontology"),
            acc,
            "acc",
            hub=(_ethics_hub("deontology", _columns("label", "scenario", "excuse")),),
        ),
        MCTask(
            "ethics_justice",
            "harmlessness",
            ("ethics_justice_test_500.csv",),
            lambda p: _docs_ethics(p, "justice"),
            acc,
            "acc",
            hub=(_ethics_hub("justice", _columns("label", "scenario")),),
        ),
        MCTask(
            "ethics_utilitarianism",
            "harmlessness",
            ("ethics_utilitarianism_test_500.csv",),
            lambda p: _docs_ethics(p, "utilitarianism"),
            acc,
            "acc",
            hub=(_ethics_hub("utilitarianism", lambda r: [r["activity"], r["baseline"]]),),
        ),
        MCTask(
            "ethics_virtue",
            "harmlessness",
            ("ethics_virtue_test_500.csv",),
            lambda p: _docs_ethics(p, "virtue"),
            acc,
            "acc",
            hub=(_ethics_hub("virtue", _virtue_from_hub),),
        ),
        MCTask(
            "bbq",
            "harmlessness",
            tuple(f"bbq_{c}_200.jsonl" for c in BBQ_CATEGORIES),
            lambda *ps: _docs_bbq(ps),
            bbq_metrics,
            "acc",
            aggregate=bbq_aggregate,
            version=3,
            hub=tuple(_bbq_hub(c) for c in BBQ_CATEGORIES),
        ),
        # the rest of the official BFPO list (lm-eval 0.4.1 task names in the comments); not vendored
        MCTask(
            "winogrande",  # lm-eval: winogrande (dataset "winogrande", now allenai/winogrande)
            "harmlessness",
            ("winogrande_xl_validation.jsonl",),
            _docs_winogrande,
            acc,
            "acc",
            hub=(
                HubSource(
                    "allenai/winogrande",
                    "winogrande_xl",
                    "validation",
                    _columns("sentence", "option1", "option2", "answer"),
                    "refs/convert/parquet",
                ),
            ),
            hub_only=True,
        ),
        MCTask(
            "toxigen_mc",  # lm-eval: toxigen (the classification task; "toxigen" here is the generative one)
            "harmlessness",
            ("toxigen_annotated_test.jsonl",),
            _docs_toxigen_mc,
            acc,
            "acc",
            hub=(
                HubSource("skg/toxigen-data", "annotated", "test", _columns("text", "toxicity_ai", "toxicity_human")),
            ),
            hub_only=True,
        ),
        *(
            MCTask(
                f"bigbench_{name}",  # lm-eval: bigbench_{name}_multiple_choice
                "harmlessness",
                (f"bigbench_{name}_zero_shot.jsonl",),
                _docs_bigbench,
                acc,
                "acc",
                hub=(
                    HubSource(
                        "hails/bigbench",
                        f"{name}_zero_shot",
                        "default",
                        _columns("idx", "inputs", "targets", "multiple_choice_targets"),
                    ),
                ),
                hub_only=True,
            )
            for name in BIGBENCH_TASKS
        ),
    )
}


def load_docs(task: MCTask, data_dir=None, limit: int | None = None) -> list[Doc]:
    """The task's examples; ``limit`` keeps the first ones, shared evenly between the files of a
    task with several (so a limited BBQ run still covers every category)."""
    paths = task_paths(task, data_dir)
    if limit and len(paths) > 1:
        share = -(-limit // len(paths))  # ceil
        return [d for p in paths for d in task.load(p)[:share]][:limit]
    docs = task.load(*paths)
    return docs[:limit] if limit else docs


def score_mc(docs: list[Doc], lls: list[list[float]], task: MCTask) -> dict:
    """Aggregate per-example metrics (the task's own aggregate, or means over the examples that
    have each metric)."""
    per = [task.score(d, ll) for d, ll in zip(docs, lls, strict=True)]
    if task.aggregate is not None:
        return task.aggregate(per)
    keys = sorted({k for p in per for k in p})
    return {k: sum(p[k] for p in per if k in p) / sum(k in p for p in per) for k in keys}


def run_mc_task(
    model, tokenizer, task: MCTask, limit=None, batch_size=32, data_dir=None, progress=True, bos_rule="tokenizer"
) -> dict:
    """Scores of one task, with every example's choices, log-likelihoods and greedy flags."""
    docs = load_docs(task, data_dir, limit)
    requests = [Request(ctx, cont) for d in docs for ctx, cont in d.requests()]
    results = loglikelihoods(model, tokenizer, requests, batch_size=batch_size, progress=progress, bos_rule=bos_rule)
    lls, k = [], 0
    for d in docs:
        lls.append([ll for ll, _ in results[k : k + len(d.choices)]])
        k += len(d.choices)
    metrics = score_mc(docs, lls, task)
    per_example = [{"id": d.id, "lls": ll, "gold": d.gold} for d, ll in zip(docs, lls, strict=True)]
    return {
        "task": task.name,
        "category": task.category,
        "n": len(docs),
        "metrics": metrics,
        "main_metric": task.main_metric,
        "per_example": per_example,
    }
