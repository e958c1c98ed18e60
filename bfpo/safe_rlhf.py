"""Safe RLHF (Dai et al. 2023, arXiv 2310.12773): reward and cost models, then PPO-Lagrangian.

Three stages, each a function with a dataclass config:

1. :func:`train_score_model` with ``kind="reward"``: a causal LM with a scalar head (the
   score at the last token), Bradley-Terry on helpfulness pairs plus a small score regulariser
   (:func:`bfpo.losses.reward_model_loss`).
2. the same with ``kind="cost"``: Bradley-Terry on harmfulness (the more harmful response costs
   more) plus the sign term that puts unsafe responses above 0 and safe ones below
   (:func:`bfpo.losses.cost_model_loss`).
3. :func:`bfpo.ppo.ppo_lagrangian` (module :mod:`bfpo.ppo`): maximise J_R subject to J_C <= d
   through the Lagrangian, with GAE on reward and cost critics and a learned multiplier.

The settings follow the official code (PKU-Alignment/safe-rlhf, ``scripts/ppo-lag.sh``; every
default of :class:`~bfpo.ppo.PPOConfig` with its source in ``configs/official_ppo_lag.yaml``): KL
coefficient 0.01, scores clipped to +-50, threshold d = 0, lambda lr 0.1, window 128, PTX coefficient
16; actor lr 1e-5 (cosine, 3% warm-up, weight decay 0.01) and critic lr 5e-6 at 7B scale. Before PPO
the run measures J_C of its start and can set d below it (``cost_threshold_margin``), so that the
constraint binds as it does in the official run.
Here it runs in one process (tiny models on a CPU); paper scale needs the official DeepSpeed code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bfpo import cards, compute, configs, devices, locks, losses, models, precision, runs, sequences
from bfpo.errors import run_cli
from bfpo.io import atomic_path, write_json
from bfpo.ppo import PPOConfig, ppo_lagrangian

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Reward and cost models
# ---------------------------------------------------------------------------------------------


@dataclass
class ScoreConfig:
    """A reward (``kind="reward"``) or cost (``kind="cost"``) model trained from pairs."""

    model: str  # start: a causal LM folder or hub id (Safe RLHF starts from the SFT model)
    output_dir: str
    train_data: str  # pairs (bfpo.data schema): a saved folder or a .jsonl
    kind: str = "reward"
    eval_data: str | None = None  # held-out pairs for accuracy
    regularization: float = 0.001  # score regulariser coefficient
    harm_order: str = "labels"  # cost model: "labels" (from safety labels) or "given" (chosen is the more harmful)
    learning_rate: float = 2e-4
    per_device_batch_size: int = 16
    max_steps: int = 200
    max_length: int = 128
    max_prompt_length: int = 64
    seed: int = 0
    # "no" (fp32), "bf16" or "auto" (bf16 where a probe finds it faster: bfpo.precision). fp32 by default:
    # on the smoke world a cost model trained under bf16 autocast ranked and signed held-out pairs worse
    # (0.84 / 0.73 against 0.97 / 0.95 in fp32, one run each)
    mixed_precision: str = "no"
    device: str = "auto"  # where the model and its batches live: auto (accelerate's choice), cpu, cuda:N
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self):
        precision.check(self.mixed_precision)
        if self.device != "auto":
            devices.resolve(self.device)
        if self.kind not in ("reward", "cost"):
            raise ValueError(f"kind: expected 'reward' or 'cost', got {self.kind!r}")
        if self.harm_order not in ("labels", "given"):
            raise ValueError(f"harm_order: expected 'labels' or 'given', got {self.harm_order!r}")
        configs.check_ranges(
            self,
            positive=("learning_rate",),
            at_least_one=("per_device_batch_size", "max_steps", "max_length", "max_prompt_length", "num_threads"),
            non_negative=("regularization",),
        )

    def check_inputs(self, where: str = "config") -> None:
        """The start model and the data exist (or the model looks like a hub id)."""
        configs.require_model(self.model, where, "model")
        configs.require_path(self.train_data, where, "train_data", "saved dataset folder or .jsonl file")
        configs.require_path(self.eval_data, where, "eval_data", "saved dataset folder or .jsonl file")

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> ScoreConfig:
        return configs.build(cls, values, where)


def score_pairs(pairs: list[dict], kind: str, harm_order: str = "labels") -> list[dict]:
    """The pairs each model learns from, as ``{prompt, chosen, rejected, chosen_safe, rejected_safe}``.

    Reward: the pairs as given (chosen is the more helpful). Cost: ``chosen`` becomes the more
    harmful response. With ``harm_order="given"`` the pairs already say so (e.g. PKU-SafeRLHF's
    ``safer_response_id`` through ``bfpo.data.pku_saferlhf_cost_pairs``, as the official code) and
    every pair is kept. With ``"labels"`` (data with safety labels only, such as SafeHelp): with one
    safe and one unsafe response the unsafe one is more harmful; with both unsafe the more helpful
    one is (it is the more capable of harm, as in BFPO's ranking); with both safe the pair says
    nothing about harm and is left out.
    """
    if harm_order not in ("labels", "given"):
        raise ValueError(f"harm_order: expected 'labels' or 'given', got {harm_order!r}")
    if kind == "reward" or harm_order == "given":
        return pairs
    out = []
    for p in pairs:
        cs, rs = bool(p["chosen_safe"]), bool(p["rejected_safe"])
        if cs and rs:
            continue
        if cs and not rs:  # the rejected one is the harmful one
            p = {**p, "chosen": p["rejected"], "rejected": p["chosen"], "chosen_safe": rs, "rejected_safe": cs}
        out.append(p)
    return out


def _score(model, items: list[dict], pad_id: int) -> torch.Tensor:
    """Scalar scores [n_responses * b] (all first responses, then all second) for tokenized pairs."""
    ids, attn, _ = sequences.collate(sequences.micro_batch_sequences(items), pad_id, model.device)
    return model(input_ids=ids, attention_mask=attn).logits[:, 0].float()


def _score_loss(scores: torch.Tensor, batch: list[dict], cfg: ScoreConfig) -> torch.Tensor:
    b = len(batch)
    first, second = scores[:b], scores[b:]
    if cfg.kind == "reward":
        return losses.reward_model_loss(first, second, cfg.regularization)
    safe = torch.tensor([it["safe"] for it in batch], device=scores.device)  # [b, 2]
    return losses.cost_model_loss(first, second, safe[:, 0], safe[:, 1], cfg.regularization)


@torch.no_grad()
def score_accuracy(model, items: list[dict], kind: str, pad_id: int, batch_size: int = 64) -> dict[str, float]:
    """Reward: share of pairs with R(chosen) > R(rejected). Cost: share of pairs ranked with the
    harmful one above (``ranking``) and share of responses on the right side of 0 (``sign``)."""
    model.eval()
    first, second, safe = [], [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        s = _score(model, chunk, pad_id)
        first.append(s[: len(chunk)])
        second.append(s[len(chunk) :])
        safe += [it["safe"] for it in chunk]
    first, second = torch.cat(first), torch.cat(second)
    safe = torch.tensor(safe, device=first.device)
    out = {"ranking": float((first > second).float().mean()), "pairs": len(items)}
    if kind == "cost":  # cost > 0 means unsafe
        sign_ok = torch.cat([(first > 0) == (safe[:, 0] < 0.5), (second > 0) == (safe[:, 1] < 0.5)])
        out["sign"] = float(sign_ok.float().mean())
    return out


def _tokenized_pairs(path: str, kind: str, tokenizer, cfg: ScoreConfig, where: str) -> list[dict]:
    rows = score_pairs(sequences.load_examples(path, "preference", where), kind, cfg.harm_order)
    if not rows:
        raise ValueError(
            f"{path}: no pair left for the {kind} model (a cost model needs pairs with an unsafe response)"
        )
    enc = sequences.Encoding(max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length)
    items, dropped = sequences.tokenize(rows, tokenizer, enc, "preference")
    if dropped:
        log.warning("%s", sequences.describe_dropped(path, dropped, enc, "pair(s)"))
    return items


def train_score_model(cfg: ScoreConfig) -> dict:
    """Train a reward or cost model; writes ``model/``, ``metrics.jsonl`` and ``score_summary.json``.

    A finished run of the same config is not trained again (the runs take seconds, so an
    interrupted one starts over).
    """
    if (done := runs.start(cfg, "score_summary.json")) is not None:
        return done
    with locks.hold(cfg.output_dir, "python -m bfpo.safe_rlhf score"):  # one writer per run folder
        if (done := runs.finished(cfg, "score_summary.json")) is not None:  # finished while we waited to start
            return done
        return _train_score_model(cfg)


def load_score_model(cfg: ScoreConfig) -> tuple:
    """(model with a scalar head, tokenizer, device): ``cfg.model`` on the run's device."""
    from transformers import AutoModelForSequenceClassification

    device = devices.resolve(cfg.device)
    tokenizer = models.load_tokenizer(cfg.model)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(cfg.model, num_labels=1).to(device)
    except OSError as e:
        raise FileNotFoundError(f"model: cannot load {cfg.model!r} as a score model ({e})") from e
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, device


def _train_score_model(cfg: ScoreConfig) -> dict:
    """:func:`train_score_model` once the output folder is this process's."""
    out = Path(cfg.output_dir)
    summary_path = out / "score_summary.json"
    model, tokenizer, device = load_score_model(cfg)
    mixed_precision = precision.resolve(cfg.mixed_precision, cfg.num_threads, device)
    precision.fit_attention(model, mixed_precision, device)
    n_params, _ = models.count_parameters(model)
    items = _tokenized_pairs(cfg.train_data, cfg.kind, tokenizer, cfg, "train_data")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    schedule = sequences.StepSchedule(len(items), 0, cfg.per_device_batch_size, 0.0, cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    flops = compute.FlopCounter()
    records = []
    model.train()
    for step in tqdm(range(cfg.max_steps), desc=f"{cfg.kind} model", disable=not cfg.progress):
        batch = [items[i] for i in schedule.ids(step)]
        with precision.autocast(mixed_precision, model.device):
            scores = _score(model, batch, tokenizer.pad_token_id)
        loss = _score_loss(scores, batch, cfg).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{cfg.kind} model: non-finite loss at step {step}; lower the learning rate")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = sum(len(it["prompt"]) * 2 + sum(map(len, it["responses"])) for it in batch)
        flops.train("train", n_params, tokens)
        b = len(batch)
        records.append(
            {
                "step": step + 1,
                "loss": float(loss.detach()),
                "accuracy": float((scores[:b] > scores[b:]).float().mean().detach()),
            }
        )
    with atomic_path(out / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    card = cards.model_card(
        method=cfg.kind,
        base_model=cfg.model,
        config=configs.as_json(cfg),
        datasets=[cfg.train_data],
        metrics=records[-1],
        kind="text-classification",
    )
    models.save(model, tokenizer, out / "model", card)
    summary = {"config": dataclasses.asdict(cfg), "kind": cfg.kind, "train_pairs": len(items), "flops": flops.as_dict()}
    summary["mixed_precision"], summary["device"] = mixed_precision, str(device)
    summary["train_accuracy"] = score_accuracy(model, items, cfg.kind, tokenizer.pad_token_id)
    if cfg.eval_data:
        eval_items = _tokenized_pairs(cfg.eval_data, cfg.kind, tokenizer, cfg, "eval_data")
        summary["eval_accuracy"] = score_accuracy(model, eval_items, cfg.kind, tokenizer.pad_token_id)
    write_json(summary_path, summary)
    return summary


def evaluate_score_model(
    model_dir, pairs_path: str, kind: str, max_length: int = 128, device: str = "auto"
) -> dict[str, float]:
    """Accuracy of a saved reward or cost model on the pairs at ``pairs_path`` (see :func:`score_accuracy`),
    computed on ``device``."""
    from transformers import AutoModelForSequenceClassification

    tok = models.load_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(devices.resolve(device))
    cfg = ScoreConfig(
        model=str(model_dir), output_dir="-", train_data=str(pairs_path), kind=kind, max_length=max_length
    )
    items = _tokenized_pairs(str(pairs_path), kind, tok, cfg, "pairs")
    return score_accuracy(model, items, kind, tok.pad_token_id)


@torch.no_grad()
def cost_calibration(
    model_dir, records: list[dict], max_length: int = 128, batch_size: int = 64, examples: int = 0, device="auto"
) -> dict:
    """How well a cost model's sign matches the gold judge on responses it did not train on.

    ``records``: ``prompt``, ``response`` and the gold ``safe``. Safe RLHF reads cost > 0 as unsafe
    (the constraint keeps the mean cost below d = 0), so this returns ``unsafe_positive`` (share of
    unsafe responses with cost > 0), ``safe_negative`` (share of safe ones with cost < 0), the mean
    cost of each group and their sizes; with ``examples``, up to that many unsafe responses the
    model scored lowest (``missed``: prompt, response, cost), where a policy can hide harm.
    """
    from transformers import AutoModelForSequenceClassification

    tok = models.load_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval().to(devices.resolve(device))
    kept = [r for r in records if r["response"].strip()]
    enc = sequences.Encoding(max_length=max_length)
    items, dropped = sequences.tokenize([{**r, "label": 1.0} for r in kept], tok, enc, "pointwise")
    if dropped:
        raise ValueError(f"cost_calibration: {len(dropped)} response(s) cut away entirely by max_length {max_length}")
    costs = torch.cat(
        [_score(model, items[i : i + batch_size], tok.pad_token_id) for i in range(0, len(items), batch_size)]
    )
    safe = torch.tensor([bool(r["safe"]) for r in kept], device=costs.device)
    unsafe_costs, safe_costs = costs[~safe], costs[safe]
    share = lambda mask: float(mask.float().mean()) if mask.numel() else float("nan")  # noqa: E731
    mean = lambda xs: float(xs.mean()) if xs.numel() else float("nan")  # noqa: E731
    missed = sorted(
        (
            {"prompt": r["prompt"], "response": r["response"], "cost": float(c)}
            for r, c, ok in zip(kept, costs.tolist(), safe.tolist(), strict=True)
            if not ok
        ),
        key=lambda m: m["cost"],
    )[:examples]
    return {
        "unsafe_positive": share(unsafe_costs > 0),
        "safe_negative": share(safe_costs < 0),
        "mean_cost_unsafe": mean(unsafe_costs),
        "mean_cost_safe": mean(safe_costs),
        "unsafe": int((~safe).sum()),
        "safe": int(safe.sum()),
        **({"missed": missed} if examples else {}),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bfpo.safe_rlhf",
        description="Safe RLHF on one process: train a reward or cost model (score), or run PPO-Lagrangian (ppo).",
    )
    parser.add_argument("stage", choices=["score", "ppo"], help="score: reward/cost model; ppo: PPO-Lagrangian")
    parser.add_argument("--config", required=True, help="YAML file of ScoreConfig or PPOConfig keys")
    configs.add_overrides(
        parser,
        "override a config key (repeatable)",
    )
    parser.add_argument(
        "--judge",
        default="safehelp_gold",
        help="ppo: a judge of bfpo.evaluation (e.g. safehelp_gold, refusal) whose share of harmful rollouts is "
        "logged each iteration as gold_unsafe_rate, or 'none' (default: safehelp_gold, the SafeHelp world's)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or BFPO_DEBUG=1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def work():
        from bfpo import evaluation

        cls = ScoreConfig if args.stage == "score" else PPOConfig
        cfg = configs.from_yaml(cls, args.config, dict(args.overrides))
        if args.stage == "score":
            summary = train_score_model(cfg)
        else:
            summary = ppo_lagrangian(cfg, None if args.judge == "none" else evaluation.get_judge(args.judge))
        print(json.dumps({k: v for k, v in summary.items() if k != "config"}))

    return run_cli("bfpo.safe_rlhf", work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
