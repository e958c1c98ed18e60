"""Safe RLHF (Dai et al. 2023, arXiv 2310.12773): reward and cost models, then PPO-Lagrangian.

Three stages, each a function with a dataclass config:

1. :func:`train_score_model` with ``kind="reward"``: a causal LM with a scalar head (the
   score at the last token), Bradley-Terry on helpfulness pairs plus a small score regulariser
   (:func:`bfpo.losses.reward_model_loss`).
2. the same with ``kind="cost"``: Bradley-Terry on harmfulness (the more harmful response costs
   more) plus the sign term that puts unsafe responses above 0 and safe ones below
   (:func:`bfpo.losses.cost_model_loss`).
3. :func:`ppo_lagrangian`: maximise J_R subject to J_C <= d through the Lagrangian
   min_theta max_{lambda >= 0} -J_R + lambda (J_C - d), with

       r_t = -beta_kl KL_t  (+ R(x, y) at the last token)      per-token reward
       c_t = +beta_kl KL_t  (+ C(x, y) at the last token)      per-token cost
       A_r, A_c from GAE (gamma = 1, lambda_gae = 0.95) on separate reward and cost critics
       A = (A_r - lambda A_c) / (1 + lambda)                   combined advantage
       L_actor = E[max(-A rho, -A clip(rho, 1 - eps, 1 + eps))]  rho = pi / pi_old, eps = 0.2
       L_critic = E[max((V - G)^2, (clip(V, V_old +- 5) - G)^2)] / 2
       lambda = exp(log_lambda); log_lambda <- log_lambda - lr_lambda * d/dlog_lambda[-(J_C - d) lambda]

   the multiplier starting at 1, bounded above, with J_C the mean episode cost over a window
   of recent rollouts; and the optional pre-training (PTX) term.

The settings follow the official code (PKU-Alignment/safe-rlhf, ``safe_rlhf/algorithms/ppo_lag``):
KL coefficient 0.01, scores clipped to +-50, threshold d = 0, lambda lr 0.1, window 128, PTX
coefficient 16; actor lr 1e-5 and critic lr 5e-6 at 7B scale (tiny models need larger ones).
Here it runs in one process (tiny models on a CPU); paper scale needs the official DeepSpeed code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bfpo import checkpoints, compute, configs, losses, models, runs, sequences
from bfpo import data as bdata
from bfpo.errors import run_cli
from bfpo.io import atomic_path, write_json

log = logging.getLogger(__name__)


def finished(cfg, summary_name: str) -> dict | None:
    """The summary of a finished run of the same config (threads and progress bars aside), else None."""
    path = Path(cfg.output_dir) / summary_name
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    return done if configs.same_run(done.get("config", {}), cfg) else None


def _start(cfg, summary_name: str) -> dict | None:
    """The summary of a finished run of ``cfg``; else None, after checking its inputs exist and
    setting threads and the seed."""
    cfg.check_inputs()
    if (done := finished(cfg, summary_name)) is not None:
        return done
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    return None


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
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self):
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
    ids, attn, _ = sequences.collate(sequences.micro_batch_sequences(items), pad_id)
    return model(input_ids=ids, attention_mask=attn).logits[:, 0].float()


def _score_loss(scores: torch.Tensor, batch: list[dict], cfg: ScoreConfig) -> torch.Tensor:
    b = len(batch)
    first, second = scores[:b], scores[b:]
    if cfg.kind == "reward":
        return losses.reward_model_loss(first, second, cfg.regularization)
    safe = torch.tensor([it["safe"] for it in batch])  # [b, 2]
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
    first, second, safe = torch.cat(first), torch.cat(second), torch.tensor(safe)
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
    from transformers import AutoModelForSequenceClassification

    out = Path(cfg.output_dir)
    summary_path = out / "score_summary.json"
    if (done := _start(cfg, "score_summary.json")) is not None:
        return done
    tokenizer = models.load_tokenizer(cfg.model)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(cfg.model, num_labels=1)
    except OSError as e:
        raise FileNotFoundError(f"model: cannot load {cfg.model!r} as a score model ({e})") from e
    model.config.pad_token_id = tokenizer.pad_token_id
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
    model.save_pretrained(out / ".model.tmp")
    tokenizer.save_pretrained(out / ".model.tmp")
    shutil.rmtree(out / "model", ignore_errors=True)
    os.replace(out / ".model.tmp", out / "model")
    summary = {"config": dataclasses.asdict(cfg), "kind": cfg.kind, "train_pairs": len(items), "flops": flops.as_dict()}
    summary["train_accuracy"] = score_accuracy(model, items, cfg.kind, tokenizer.pad_token_id)
    if cfg.eval_data:
        eval_items = _tokenized_pairs(cfg.eval_data, cfg.kind, tokenizer, cfg, "eval_data")
        summary["eval_accuracy"] = score_accuracy(model, eval_items, cfg.kind, tokenizer.pad_token_id)
    write_json(summary_path, summary)
    return summary


# ---------------------------------------------------------------------------------------------
# PPO-Lagrangian: the pieces, as pure functions
# ---------------------------------------------------------------------------------------------


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over response tokens: (advantages, returns), both [B, T].

    delta_t = r_t + gamma V_{t+1} - V_t (V beyond the last token is 0);
    A_t = delta_t + gamma lam A_{t+1}; returns G_t = A_t + V_t. ``mask`` [B, T] marks real tokens.
    """
    B, T = rewards.shape
    mask = mask.float()
    adv = torch.zeros(B, T)
    next_value, next_adv = torch.zeros(B), torch.zeros(B)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv[:, t] = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        next_adv = adv[:, t]
    return adv, adv + values * mask


def shaped_rewards(
    score: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, kl_coef: float, sign: float
) -> torch.Tensor:
    """Per-token rewards (``sign=-1``) or costs (``sign=+1``): sign * kl_coef * KL_t, plus the score at
    the last real token. KL_t = log pi(y_t) - log pi_ref(y_t); shapes [B, T], score [B]."""
    kl = (logps - ref_logps) * mask
    out = sign * kl_coef * kl
    last = mask.long().cumsum(-1).argmax(-1)  # index of the last real token
    out[torch.arange(len(score)), last] += score
    return out * mask


def ppo_actor_loss(logps, old_logps, advantages, mask, clip_range: float) -> torch.Tensor:
    """Clipped surrogate: mean over tokens of max(-A rho, -A clip(rho, 1-eps, 1+eps))."""
    ratio = torch.exp(logps - old_logps)
    loss = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def ppo_critic_loss(values, old_values, returns, mask, clip_range_value: float) -> torch.Tensor:
    """Clipped value loss: mean over tokens of max((V - G)^2, (V_old + clip(V - V_old) - G)^2) / 2."""
    clipped = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    loss = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2) / 2
    return (loss * mask).sum() / mask.sum().clamp(min=1)


class LagrangeMultiplier:
    """lambda >= 0 learned in log space by gradient steps on -(J_C - d) lambda.

    d/d log_lambda of -(J_C - d) lambda is -(J_C - d) lambda, so lambda grows while the mean
    episode cost J_C is above the threshold d and shrinks while it is below; it is capped at
    ``max_value`` (None: no cap).
    """

    def __init__(self, init: float = 1.0, lr: float = 0.1, threshold: float = 0.0, max_value: float | None = 5.0):
        if init <= 0:
            raise ValueError(f"lambda_init: must be > 0, got {init}")
        self.log_lambda = torch.tensor(math.log(init), requires_grad=True)
        self.optimizer = torch.optim.SGD([self.log_lambda], lr=lr)
        self.threshold, self.max_value = threshold, max_value

    @property
    def value(self) -> float:
        return float(self.log_lambda.detach().exp())

    def update(self, mean_episode_cost: float) -> float:
        loss = -(mean_episode_cost - self.threshold) * self.log_lambda.exp()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.max_value is not None:
            with torch.no_grad():
                self.log_lambda.clamp_(max=math.log(self.max_value))
        return self.value


# ---------------------------------------------------------------------------------------------
# PPO-Lagrangian: the loop
# ---------------------------------------------------------------------------------------------


@dataclass
class PPOConfig:
    actor: str  # the SFT model (also the reference)
    reward_model: str
    cost_model: str
    output_dir: str
    prompts: str  # prompts to roll out on: a dataset folder or .jsonl with a "prompt" column
    ptx_data: str | None = None  # SFT data (prompt, response) for the optional PTX term
    ptx_coef: float = 16.0
    iterations: int = 100  # rollout batches
    rollout_batch_size: int = 16
    ppo_epochs: int = 1
    max_new_tokens: int = 32
    temperature: float = 1.0
    max_prompt_length: int = 64
    actor_lr: float = 1e-5
    critic_lr: float = 5e-6
    kl_coef: float = 0.01
    clip_range: float = 0.2
    clip_range_value: float = 5.0
    score_clip: float = 50.0
    gamma: float = 1.0
    gae_lambda: float = 0.95
    cost_threshold: float = 0.0  # d
    lambda_init: float = 1.0
    lambda_lr: float = 0.1
    lambda_max: float | None = 5.0
    episode_cost_window: int = 128
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: int = 0  # iterations between checkpoints; 0: none
    snapshot_every: int = 0  # iterations between kept actor snapshots with the FLOPs so far (curves); 0: none
    keep_checkpoints: int = 2  # checkpoints kept; a damaged one falls back to the one before
    start_over: bool = False  # when no intact checkpoint is left: start from iteration 0 (else stop and say so)
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self):
        configs.check_ranges(
            self,
            positive=("actor_lr", "critic_lr", "temperature", "clip_range", "clip_range_value", "score_clip")
            + ("max_grad_norm", "lambda_max"),
            at_least_one=("iterations", "rollout_batch_size", "ppo_epochs", "max_new_tokens", "max_prompt_length")
            + ("episode_cost_window", "keep_checkpoints", "num_threads"),
            non_negative=("ptx_coef", "kl_coef", "lambda_init", "lambda_lr", "save_every", "snapshot_every"),
            unit=("gamma", "gae_lambda"),
        )

    def check_inputs(self, where: str = "config") -> None:
        """The actor, the two score models and the prompt (and PTX) data exist."""
        for key in ("actor", "reward_model", "cost_model"):
            configs.require_model(getattr(self, key), where, key)
        configs.require_path(self.prompts, where, "prompts", "saved dataset folder or .jsonl file")
        configs.require_path(self.ptx_data, where, "ptx_data", "saved dataset folder or .jsonl file")

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> PPOConfig:
        return configs.build(cls, values, where)

    @classmethod
    def from_yaml(cls, path, overrides: dict | None = None) -> PPOConfig:
        return configs.from_yaml(cls, path, overrides)


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _token_logps(model, seq, attn, start: int) -> torch.Tensor:
    """log pi(seq[:, t]) for t >= start: [B, T - start]."""
    logits = model(input_ids=seq, attention_mask=attn, position_ids=_positions(attn)).logits[:, start - 1 : -1].float()
    targets = seq[:, start:]
    return torch.gather(logits, 2, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def _load_prompts(path: str) -> list[str]:
    p = Path(path)
    if p.is_dir():
        rows = bdata.load(p).to_list()
    elif p.is_file():
        rows = [r for _, r in bdata.read_jsonl(p)]
    else:
        raise FileNotFoundError(f"prompts: {path} is neither a saved dataset folder nor a file")
    prompts = []
    for line, r in enumerate(rows, start=1):
        if not isinstance(r.get("prompt"), str) or not r["prompt"].strip():
            raise bdata.DataError(path, line, "prompt", "empty or not text")
        prompts.append(r["prompt"])
    if not prompts:
        raise bdata.DataError(path, None, None, "no records (the file is empty)")
    return sorted(set(prompts))


def _pad_left(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        attn[i, width - len(r) :] = 1
    return ids, attn


def ppo_lagrangian(cfg: PPOConfig) -> dict:
    """Run (or resume) PPO-Lagrangian; writes ``model/``, ``metrics.jsonl`` (lambda, reward, cost, KL
    every iteration) and ``ppo_summary.json``. Checkpoints every ``save_every`` iterations."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from bfpo import toyworld

    out = Path(cfg.output_dir)
    summary_path = out / "ppo_summary.json"
    if (done := _start(cfg, "ppo_summary.json")) is not None:
        return done
    prompts = _load_prompts(cfg.prompts)  # checked before any model is loaded or anything written
    out.mkdir(parents=True, exist_ok=True)
    # which checkpoint to resume (known before any expensive work): one of this config, intact
    stale = [c for _, c in checkpoints.listed(out) if not _checkpoint_of(c, cfg)]
    if stale:
        log.warning("%s holds checkpoints of another config; starting afresh", out)
        checkpoints.clear(out)
    resume, damaged = checkpoints.latest_intact(out, cfg.start_over)
    checkpoints.discard(damaged)

    tokenizer = models.load_tokenizer(cfg.actor)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    actor = models.load_model(cfg.actor)
    ref = models.load_model(cfg.actor).eval().requires_grad_(False)
    scorers = {}
    for kind, path in (("reward", cfg.reward_model), ("cost", cfg.cost_model)):
        try:
            scorers[kind] = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        except OSError as e:
            raise FileNotFoundError(f"{kind}_model: cannot load {path!r} ({e})") from e
        scorers[kind].eval().requires_grad_(False)
    # the critics start from the score models, as in Safe RLHF
    critics = {
        k: AutoModelForTokenClassification.from_pretrained(p, num_labels=1)
        for k, p in (("reward", cfg.reward_model), ("cost", cfg.cost_model))
    }
    actor_opt = torch.optim.AdamW(actor.parameters(), lr=cfg.actor_lr)
    critic_opts = {k: torch.optim.AdamW(c.parameters(), lr=cfg.critic_lr) for k, c in critics.items()}
    multiplier = LagrangeMultiplier(cfg.lambda_init, cfg.lambda_lr, cfg.cost_threshold, cfg.lambda_max)
    episode_costs: deque[float] = deque(maxlen=cfg.episode_cost_window)
    n_actor, _ = models.count_parameters(actor)
    n_score = models.count_parameters(scorers["reward"])[0]
    n_critic = models.count_parameters(critics["reward"])[0]
    flops = compute.FlopCounter()

    prompt_ids = [sequences.encode_prompt(tokenizer, p, cfg.max_prompt_length) for p in prompts]
    ptx_items = []
    if cfg.ptx_data:
        ptx = sequences.load_examples(cfg.ptx_data, "sft", "ptx_data")
        ptx_items, _ = sequences.tokenize(ptx, tokenizer, sequences.Encoding(), "sft")

    metrics_path = out / "metrics.jsonl"
    start = 0
    if resume is not None:
        ckpt, manifest = resume
        state = torch.load(ckpt / "state.pt", weights_only=False)
        actor.load_state_dict(state["actor"])
        actor_opt.load_state_dict(state["actor_opt"])
        for k in critics:
            critics[k].load_state_dict(state["critics"][k])
            critic_opts[k].load_state_dict(state["critic_opts"][k])
        multiplier.log_lambda.data.fill_(state["log_lambda"])
        multiplier.optimizer.load_state_dict(state["lambda_opt"])
        episode_costs.extend(state["episode_costs"])
        flops.add(state["flops"])
        torch.set_rng_state(state["torch_rng"])
        start = manifest["step"]
        runs.truncate_metrics(metrics_path, start, key="iteration")
        log.info("resuming PPO-Lagrangian from %s at iteration %d", ckpt, start)
    elif metrics_path.exists():
        metrics_path.unlink()

    bar = tqdm(total=cfg.iterations, initial=start, desc="PPO-Lagrangian", disable=not cfg.progress)
    for it in range(start, cfg.iterations):
        t0 = time.perf_counter()
        rng = random.Random(f"ppo-{cfg.seed}-{it}")
        batch_prompts = [rng.randrange(len(prompts)) for _ in range(cfg.rollout_batch_size)]

        # --- rollout: sample, then score every token with actor, reference, critics; the end with R and C
        with torch.no_grad():
            p_ids, p_attn = _pad_left([prompt_ids[i] for i in batch_prompts], pad)
            actor.eval()
            gen = actor.generate(
                input_ids=p_ids,
                attention_mask=p_attn,
                do_sample=cfg.temperature > 0,
                temperature=cfg.temperature or None,
                top_k=0,
                max_new_tokens=cfg.max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            P = p_ids.shape[1]
            resp = gen[:, P:]  # [B, G]
            ended = (resp == eos).long().cumsum(-1)
            mask = ((ended == 0) | ((ended == 1) & (resp == eos))).float()  # up to and including EOS
            resp = torch.where(mask.bool(), resp, torch.full_like(resp, pad))
            seq = torch.cat([p_ids, resp], 1)
            attn = torch.cat([p_attn, mask.long()], 1)
            logps = _token_logps(actor, seq, attn, P)
            ref_logps = _token_logps(ref, seq, attn, P)
            scores = {
                k: m(input_ids=seq, attention_mask=attn, position_ids=_positions(attn)).logits[:, 0].float()
                for k, m in scorers.items()
            }
            scores = {k: v.clamp(-cfg.score_clip, cfg.score_clip) for k, v in scores.items()}
            values = {
                k: c(input_ids=seq, attention_mask=attn, position_ids=_positions(attn)).logits[:, P - 1 : -1, 0].float()
                for k, c in critics.items()
            }
            rewards = shaped_rewards(scores["reward"], logps, ref_logps, mask, cfg.kl_coef, sign=-1.0)
            costs = shaped_rewards(scores["cost"], logps, ref_logps, mask, cfg.kl_coef, sign=+1.0)
            adv_r, ret_r = gae(rewards, values["reward"], mask, cfg.gamma, cfg.gae_lambda)
            adv_c, ret_c = gae(costs, values["cost"], mask, cfg.gamma, cfg.gae_lambda)
        tokens_prompt, tokens_new, tokens_all = int(p_attn.sum()), int(mask.sum()), int(attn.sum())
        flops.generate("rollout_generation", n_actor, tokens_prompt, tokens_new)
        flops.forward("rollout_scoring", n_actor, 2 * tokens_all)  # actor + reference log-probs
        flops.forward("rollout_scoring", n_score, 2 * tokens_all)  # reward + cost model
        flops.forward("rollout_scoring", n_critic, 2 * tokens_all)  # both critics

        # --- the multiplier first (on the window of episode costs), then the combined advantage
        episode_costs.extend(scores["cost"].tolist())
        mean_cost = sum(episode_costs) / len(episode_costs)
        lam = multiplier.update(mean_cost)
        advantages = (adv_r - lam * adv_c) / (1 + lam)

        # --- PPO steps: actor, reward critic, cost critic
        actor.train()
        for _ in range(cfg.ppo_epochs):
            new_logps = _token_logps(actor, seq, attn, P)
            actor_loss = ppo_actor_loss(new_logps, logps, advantages, mask, cfg.clip_range)
            actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            torch.nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
            actor_opt.step()
            flops.train("actor_train", n_actor, tokens_all)
            critic_losses = {}
            for k, returns in (("reward", ret_r), ("cost", ret_c)):
                v = critics[k](input_ids=seq, attention_mask=attn, position_ids=_positions(attn)).logits
                loss = ppo_critic_loss(v[:, P - 1 : -1, 0].float(), values[k], returns, mask, cfg.clip_range_value)
                critic_opts[k].zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(critics[k].parameters(), cfg.max_grad_norm)
                critic_opts[k].step()
                critic_losses[k] = float(loss.detach())
                flops.train("critic_train", n_critic, tokens_all)
            if ptx_items:  # the pre-training term: coefficient * NLL on SFT data, its own step
                mb = [ptx_items[rng.randrange(len(ptx_items))] for _ in range(cfg.rollout_batch_size)]
                ids, am, rm = sequences.collate(sequences.micro_batch_sequences(mb), pad)
                lp, nt = sequences.sequence_logps(actor, ids, am, rm)
                ptx_loss = cfg.ptx_coef * (-lp.sum() / nt.sum())
                actor_opt.zero_grad(set_to_none=True)
                ptx_loss.backward()
                torch.nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
                actor_opt.step()
                flops.train("ptx_train", n_actor, int(am.sum()))

        texts = tokenizer.batch_decode(resp, skip_special_tokens=True)
        judged = [toyworld.judge_scores(prompts[i], t) for i, t in zip(batch_prompts, texts, strict=True)]
        record = {
            "iteration": it + 1,
            "lambda": lam,
            "reward": float(scores["reward"].mean()),
            "cost": float(scores["cost"].mean()),
            "episode_cost_window": mean_cost,
            "kl": float(((logps - ref_logps) * mask).sum(-1).mean()),
            "actor_loss": float(actor_loss.detach()),
            "reward_critic_loss": critic_losses["reward"],
            "cost_critic_loss": critic_losses["cost"],
            "response_length": float(mask.sum(-1).mean()),
            "gold_unsafe_rate": sum(not s for _, s in judged) / len(judged),
            "seconds": time.perf_counter() - t0,
        }
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        bar.update(1)
        bar.set_postfix(lam=f"{lam:.3f}", R=f"{record['reward']:.2f}", C=f"{record['cost']:.2f}")
        if cfg.snapshot_every and (it + 1) % cfg.snapshot_every == 0 and it + 1 < cfg.iterations:
            checkpoints.save_snapshot(
                out, it + 1, lambda path: models.save(actor, tokenizer, path), {"flops": flops.as_dict(), "lambda": lam}
            )
        if cfg.save_every and (it + 1) % cfg.save_every == 0 and it + 1 < cfg.iterations:
            state = {
                "actor": actor.state_dict(),
                "actor_opt": actor_opt.state_dict(),
                "critics": {k: c.state_dict() for k, c in critics.items()},
                "critic_opts": {k: o.state_dict() for k, o in critic_opts.items()},
                "log_lambda": float(multiplier.log_lambda.detach()),
                "lambda_opt": multiplier.optimizer.state_dict(),
                "episode_costs": list(episode_costs),
                "flops": flops.as_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            tmp = checkpoints.staging(out, it + 1)
            torch.save(state, tmp / "state.pt")
            checkpoints.commit(out, tmp, it + 1, {"config": configs.as_json(cfg)}, cfg.keep_checkpoints)
    bar.close()
    models.save(actor, tokenizer, out / "model")
    summary = {
        "config": dataclasses.asdict(cfg),
        "iterations": cfg.iterations,
        "resumed_from": start,
        "final_lambda": multiplier.value,
        "flops": flops.as_dict(),
        "parameters": {"actor": n_actor, "score_model": n_score, "critic": n_critic},
    }
    write_json(summary_path, summary)
    checkpoints.clear(out)
    return summary


def _checkpoint_of(ckpt: Path, cfg: PPOConfig) -> bool:
    """Whether ``ckpt`` was written by a run of ``cfg`` (an unreadable manifest counts as yes: the
    damage check then reports it)."""
    try:
        saved = json.loads((ckpt / checkpoints.MANIFEST).read_text())["state"]["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return configs.same_run(saved, cfg)


def read_metrics(output_dir) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def evaluate_score_model(model_dir, pairs_path: str, kind: str, max_length: int = 128) -> dict[str, float]:
    """Accuracy of a saved reward or cost model on the pairs at ``pairs_path`` (see :func:`score_accuracy`)."""
    from transformers import AutoModelForSequenceClassification

    tok = models.load_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    cfg = ScoreConfig(
        model=str(model_dir), output_dir="-", train_data=str(pairs_path), kind=kind, max_length=max_length
    )
    items = _tokenized_pairs(str(pairs_path), kind, tok, cfg, "pairs")
    return score_accuracy(model, items, kind, tok.pad_token_id)


@torch.no_grad()
def cost_calibration(
    model_dir, records: list[dict], max_length: int = 128, batch_size: int = 64, examples: int = 0
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
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    kept = [r for r in records if r["response"].strip()]
    enc = sequences.Encoding(max_length=max_length)
    items, dropped = sequences.tokenize([{**r, "label": 1.0} for r in kept], tok, enc, "pointwise")
    if dropped:
        raise ValueError(f"cost_calibration: {len(dropped)} response(s) cut away entirely by max_length {max_length}")
    costs = torch.cat(
        [_score(model, items[i : i + batch_size], tok.pad_token_id) for i in range(0, len(items), batch_size)]
    )
    safe = torch.tensor([bool(r["safe"]) for r in kept])
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
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=configs.parse_override,
        metavar="KEY=VALUE",
        help="override a config key (repeatable)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or BFPO_DEBUG=1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def work():
        cls = ScoreConfig if args.stage == "score" else PPOConfig
        cfg = configs.from_yaml(cls, args.config, dict(args.overrides))
        summary = train_score_model(cfg) if args.stage == "score" else ppo_lagrangian(cfg)
        print(json.dumps({k: v for k, v in summary.items() if k != "config"}))

    return run_cli("bfpo.safe_rlhf", work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
