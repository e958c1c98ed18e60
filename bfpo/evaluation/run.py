"""Running tasks on a model, cached, and the tidy rows of their results."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from tqdm.auto import tqdm

from bfpo import configs, devices, models
from bfpo import data as bdata
from bfpo.errors import BadInput
from bfpo.evaluation import truthfulqa_gen
from bfpo.evaluation.generative import DECODINGS, GEN_TASKS, run_gen_task
from bfpo.evaluation.hub import HubSource, fetch
from bfpo.evaluation.judges import JUDGES, get_judge
from bfpo.evaluation.loglik import BOS_RULES, ENCODING_VERSION
from bfpo.evaluation.mc_tasks import BIGBENCH_TASKS, MC_TASKS, run_mc_task
from bfpo.evaluation.win_rate import run_alpaca_eval
from bfpo.io import read_cache, write_json
from bfpo.runs import note

TASKS = [*MC_TASKS, *GEN_TASKS, "truthfulqa_gen", "alpaca_eval", "safehelp"]


def _spec(task: str):
    """The registry entry of a multiple-choice or generative task, else None."""
    return MC_TASKS.get(task) or GEN_TASKS.get(task)


def hub_only(task: str) -> bool:
    """Whether ``task`` has no subset in data/ and is read from the hub only."""
    spec = _spec(task)
    return bool(spec is not None and spec.hub_only)


VENDORED_TASKS = [t for t in (*MC_TASKS, *GEN_TASKS) if not hub_only(t)]
"""The multiple-choice and generative tasks with a subset in data/ (the CPU profiles' list)."""

OFFICIAL_TASKS = [
    # discriminative harmlessness and helpfulness, 0-shot (the official BFPO list, lm-eval 0.4.1)
    "truthfulqa_mc2",
    "crows_pairs_english",
    "ethics_cm",
    "ethics_deontology",
    "ethics_justice",
    "ethics_utilitarianism",
    "ethics_virtue",
    "toxigen_mc",
    "winogrande",
    *(f"bigbench_{t}" for t in BIGBENCH_TASKS),
    "arc_challenge",
    "mmlu_high_school_chemistry",
    # generative: harmless rates judged by the HarmBench classifier, and TruthfulQA generation
    "advbench",
    "alert",
    "alert_adversarial",
    "rtp_challenge",
    "beaver",
    "hhh_harmless",
    "truthfulqa_gen",
]
"""The tasks of the official BFPO evaluation (configs/official_recipe.yaml lists each with its source)."""

MAIN_METRICS: dict[str, list[str]] = {
    **{t: [m.main_metric] for t, m in MC_TASKS.items()},
    **{t: ["harmless_rate/all"] for t in GEN_TASKS},
    "xstest": ["harmless_rate/unsafe", "over_refusal/safe"],
    "truthfulqa_gen": ["bleu_acc", "rougeL_acc"],
    "alpaca_eval": ["win_rate"],
    "safehelp": ["helpfulness", "harmlessness", "over_refusal"],
}
"""The metrics each task reports in the summary tables and figures (every metric stays in the tidy rows)."""


def task_files(task: str) -> tuple[str, ...]:
    """The data files ``task`` reads."""
    if _spec(task) is not None:
        return _spec(task).files
    return {"truthfulqa_gen": (truthfulqa_gen.FILE,), "alpaca_eval": ("alpaca_eval_text_davinci_003_500.jsonl",)}.get(
        task, ()
    )


def hub_sources(task: str) -> dict[str, HubSource]:
    """``file: where on the hub`` for each of ``task``'s files that can be fetched (the full test sets
    of the multiple-choice tasks and of truthfulqa_gen, and the sets read from the hub only)."""
    if task == "truthfulqa_gen":
        return {truthfulqa_gen.FILE: truthfulqa_gen.HUB}
    spec = _spec(task)
    return dict(zip(spec.files, spec.hub, strict=True)) if spec is not None and spec.hub else {}


def fetch_hub_data(tasks: list[str], out_dir, force: bool = False, progress: bool = True) -> Path:
    """Download the hub test sets of ``tasks`` (see :func:`hub_sources`) into ``out_dir``, each in
    the format and under the name of the file its reader expects, so ``data_dir=out_dir`` scores
    it (the size in a name such as ``_500`` then no longer holds)."""
    jobs: dict[str, HubSource] = {}
    for name in tasks:
        if name not in TASKS or not hub_sources(name):
            fetchable = [t for t in TASKS if hub_sources(t)]
            raise ValueError(f"task {name!r} has no hub source; tasks that do: {', '.join(fetchable)}")
        jobs |= hub_sources(name)
    return fetch(jobs, out_dir, force, progress)


def _data_hash(task: str, data_dir=None) -> str:
    files = task_files(task)
    version = f"{task}-v{MC_TASKS[task].version}-enc{ENCODING_VERSION}" if task in MC_TASKS else task
    h = hashlib.sha256(version.encode())
    for f in files:
        p = bdata.data_file(f) if data_dir is None else Path(data_dir) / f
        if Path(p).is_file():
            h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def check_request(
    model_path, tasks, judge="refusal", limit=None, data_dir=None, win_rate_judge=None, where="evaluate", hub_dir=None
):
    """Everything :func:`evaluate` is asked for, checked before any model is loaded (BadInput)."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise BadInput(f"{where}: unknown task(s) {', '.join(map(repr, unknown))}; known: {', '.join(TASKS)}")
    if not tasks:
        raise BadInput(f"{where}: no task given")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BadInput(f"{where}: limit: expected a positive number of examples, got {limit!r}")
    if any(t in GEN_TASKS for t in tasks) and judge not in JUDGES:
        raise BadInput(f"{where}: unknown judge {judge!r}; known: {', '.join(JUDGES)}")
    if "alpaca_eval" in tasks and win_rate_judge is None:
        raise BadInput(f"{where}: alpaca_eval needs a pairwise judge (--win-rate-judge, e.g. a reward model folder)")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise BadInput(f"{where}: data_dir {data_dir}: no such folder")
    from_hub = [t for t in tasks if hub_only(t)]
    if from_hub and hub_dir is None:
        raise BadInput(
            f"{where}: {', '.join(from_hub)} (no subset in data/) are read from the hub: give a hub folder "
            "(--hub-dir DIR; the test sets are fetched into it once)"
        )
    configs.require_model(str(model_path), where, "model")


GENERATION_VERSION = 2
"""Part of a generated answer's cache key, raised when the way answers are made changes (2: a prompt
keeps the last tokens that fit the model's context, :func:`bfpo.models.generate`)."""


def evaluate(
    model_path,
    tasks: list[str],
    judge: str = "refusal",
    limit: int | None = None,
    cache_dir=None,
    data_dir=None,
    win_rate_judge=None,
    safehelp_samples: int = 4,
    max_new_tokens: int = 64,
    progress: bool = True,
    hub_dir=None,
    bos_rule: str = "tokenizer",
    decoding: str = "greedy",
    device: str = "auto",
) -> list[dict]:
    """Run ``tasks`` on the model at ``model_path``; each result is cached under ``cache_dir`` by
    (model weights, task, data, judge, limit), so a re-run is instant. The data come from
    ``data_dir`` (default: $BFPO_DATA_DIR, else the vendored subsets in data/); with ``hub_dir``, the
    tasks with a hub source (:func:`hub_sources`: the multiple-choice tasks, truthfulqa_gen, and the
    sets of the official evaluation that are not vendored) are scored on their full test sets,
    fetched from the hub into that folder once. The model runs on ``device`` (auto: accelerate's choice).
    ``bos_rule`` says whether a multiple-choice context starts with BOS, as lm-eval decides it
    (:data:`BOS_RULES`: "tokenizer" as lm-eval >= 0.4.2, "none" as 0.4.1, the paper's version)."""
    from bfpo.train import model_fingerprint

    check_request(model_path, tasks, judge, limit, data_dir, win_rate_judge, hub_dir=hub_dir)
    if bos_rule not in BOS_RULES:
        raise BadInput(f"evaluate: bos_rule: expected one of {', '.join(BOS_RULES)}, got {bos_rule!r}")
    if decoding not in DECODINGS:
        raise BadInput(f"evaluate: decoding: expected one of {', '.join(DECODINGS)}, got {decoding!r}")
    where = devices.resolve(device, "evaluate: device")  # before the model loads
    try:
        model, tokenizer = models.load_model(model_path, device=where), models.load_tokenizer(model_path)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"model {model_path!s} does not load: {e}") from e
    fingerprint = model_fingerprint(str(model_path), None)[:16]
    if hub_dir is not None:
        fetch_hub_data([t for t in tasks if hub_sources(t)], hub_dir, progress=progress)
    judge_obj = functools.cache(lambda: get_judge(judge))  # loaded once, and only if a task needs it
    results = []
    for task in tqdm(tasks, desc="tasks", disable=not progress):
        judge_name = judge if task in GEN_TASKS else getattr(win_rate_judge, "name", "-")
        task_dir = hub_dir if hub_dir is not None and hub_sources(task) else data_dir
        key = f"{fingerprint}-{task}-{_data_hash(task, task_dir)}-{judge_name}-{limit}-{max_new_tokens}"
        if task in MC_TASKS and bos_rule != "tokenizer":
            key += f"-bos_{bos_rule}"
        if task in GEN_TASKS and decoding != "greedy":  # truthfulqa_gen always decodes as lm-eval: greedy
            key += f"-dec_{decoding}"
        if task not in MC_TASKS:  # answers made before prompts were cut to the context are not reused
            key += f"-gen{GENERATION_VERSION}"
        cache = Path(cache_dir) / f"{key}.json" if cache_dir else None
        cached = read_cache(cache, "evaluation cache") if cache else None
        note("evaluation", f"{model_path} {task}", cached is not None)
        if cached is not None:
            results.append(cached)
            continue
        res = _run_task(
            task,
            model,
            tokenizer,
            judge_obj,
            limit,
            max_new_tokens,
            task_dir,
            data_dir,
            win_rate_judge,
            safehelp_samples,
            progress,
            bos_rule,
            decoding,
        )
        res["model"] = str(model_path)
        if cache:
            write_json(cache, res)
        results.append(res)
    return results


def _run_task(
    task,
    model,
    tokenizer,
    judge,
    limit,
    max_new_tokens,
    task_dir,
    data_dir,
    win_rate_judge,
    safehelp_samples,
    progress,
    bos_rule,
    decoding,
) -> dict:
    """One task's result (not cached; see :func:`evaluate`); ``judge()`` gives the judge."""
    if task in MC_TASKS:
        return run_mc_task(
            model, tokenizer, MC_TASKS[task], limit, data_dir=task_dir, progress=progress, bos_rule=bos_rule
        )
    if task in GEN_TASKS:
        return run_gen_task(
            model, tokenizer, GEN_TASKS[task], judge(), limit, max_new_tokens, task_dir, decoding=decoding
        )
    if task == "truthfulqa_gen":
        return truthfulqa_gen.run(model, tokenizer, limit, max_new_tokens, task_dir)
    if task == "alpaca_eval":
        if win_rate_judge is None:
            raise ValueError("alpaca_eval needs a pairwise judge (win_rate_judge), e.g. RewardModelJudge(path)")
        return run_alpaca_eval(model, tokenizer, win_rate_judge, limit, max_new_tokens, data_dir)
    from bfpo import toyworld  # safehelp: the gold judge on the test wordings

    summary, _ = toyworld.evaluate_model(model, tokenizer, samples_per_prompt=safehelp_samples, split="test")
    return {
        "task": "safehelp",
        "category": "safehelp",
        "judge": "safehelp_gold",
        "n": summary["samples"],
        "metrics": summary,
        "per_example": [],
    }


def tidy(results: list[dict], model_name: str) -> list[dict]:
    """One row per (task, metric) with its value and, where there is one, its interval."""
    rows = []
    for res in results:
        for metric, value in sorted(res["metrics"].items()):  # a cached result may hold its keys sorted
            if "_ci" in metric or metric == "n":
                continue
            ci_key = metric.replace("harmless_rate", "harmless_ci").replace("over_refusal", "over_refusal_ci")
            ci = res["metrics"].get(ci_key) if ci_key != metric else res["metrics"].get(f"{metric}_ci")
            rows.append(
                {
                    "model": model_name,
                    "category": res["category"],
                    "task": res["task"],
                    "metric": metric,
                    "value": value,
                    "n": res["n"],
                    "ci_low": ci[0] if ci else None,
                    "ci_high": ci[1] if ci else None,
                }
            )
    return rows
