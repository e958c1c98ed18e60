"""PPO-Lagrangian, the last stage of Safe RLHF (Dai et al. 2023, arXiv 2310.12773): maximise J_R
subject to J_C <= d through the Lagrangian min_theta max_{lambda >= 0} -J_R + lambda (J_C - d), with

    r_t = -beta_kl KL_t  (+ R(x, y) at the last token)        per-token reward
    c_t = +beta_kl KL_t  (+ C(x, y) at the last token)        per-token cost
    A_r, A_c from GAE (gamma = 1, lambda_gae = 0.95) on separate reward and cost critics
    A = (A_r - lambda A_c) / (1 + lambda)                     combined advantage
    L_actor = E[max(-A rho, -A clip(rho, 1 - eps, 1 + eps))]  rho = pi / pi_old, eps = 0.2
    L_critic = E[max((V - G)^2, (clip(V, V_old +- 5) - G)^2)] / 2
    lambda = exp(log_lambda); log_lambda <- log_lambda - lr_lambda * d/dlog_lambda[-(J_C - d) lambda]

the multiplier starting at 1, bounded above, with J_C the mean episode cost over a window of recent
rollouts; and the optional pre-training (PTX) term. With ``lambda_lr = 0`` lambda stays at
``lambda_init`` (0 allowed): a fixed-lambda run, one point of the trade-off curve.

Before the first iteration the run measures **J_C of its start** (:func:`start_cost`): the cost model's
mean score on the SFT model's own samples. Safe RLHF's premise is a start that violates the constraint
(J_C > d); ``cost_threshold_margin`` m sets d = J_C(start) - m so that it does, and a d >= J_C(start)
is warned about, naming both values. Both are kept in ``ppo_summary.json``.

An iteration is three stages: :func:`rollout` (sample and score), the multiplier update, :func:`update`
(the PPO steps); :class:`PPOState` is what they change and what a checkpoint holds. The reward and
cost models come from :mod:`bfpo.safe_rlhf`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bfpo import (
    cards,
    checkpoints,
    compute,
    configs,
    devices,
    locks,
    models,
    precision,
    runs,
    sampling,
    sequences,
    tracking,
)
from bfpo import data as bdata
from bfpo.io import append_line, write_json

log = logging.getLogger(__name__)


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
    adv = rewards.new_zeros(B, T)  # on the rewards' device
    next_value, next_adv = rewards.new_zeros(B), rewards.new_zeros(B)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # delta_t = r_t + gamma V_{t+1} - V_t
        adv[:, t] = (delta + gamma * lam * next_adv) * mask[:, t]  # A_t = delta_t + gamma lambda A_{t+1}
        next_value = values[:, t] * mask[:, t]
        next_adv = adv[:, t]
    return adv, adv + values * mask  # G_t = A_t + V_t


def shaped_rewards(
    score: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, kl_coef: float, sign: float
) -> torch.Tensor:
    """Per-token rewards (``sign=-1``) or costs (``sign=+1``): sign * kl_coef * KL_t, plus the score at
    the last real token. KL_t = log pi(y_t) - log pi_ref(y_t); shapes [B, T], score [B]."""
    kl = (logps - ref_logps) * mask  # KL_t = log pi(y_t) - log pi_ref(y_t)
    out = sign * kl_coef * kl  # r_t = -beta_kl KL_t, c_t = +beta_kl KL_t
    last = mask.long().cumsum(-1).argmax(-1)  # index of the last real token
    out[torch.arange(len(score), device=score.device), last] += score  # + R(x, y) or C(x, y) at the last token
    return out * mask


def ppo_actor_loss(logps, old_logps, advantages, mask, clip_range: float) -> torch.Tensor:
    """Clipped surrogate: mean over tokens of max(-A rho, -A clip(rho, 1-eps, 1+eps))."""
    ratio = torch.exp(logps - old_logps)  # rho = pi / pi_old
    # max(-A rho, -A clip(rho, 1 - eps, 1 + eps))
    loss = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def ppo_critic_loss(values, old_values, returns, mask, clip_range_value: float) -> torch.Tensor:
    """Clipped value loss: mean over tokens of max((V - G)^2, (V_old + clip(V - V_old) - G)^2) / 2."""
    clipped = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)  # clip(V, V_old +- eps_v)
    loss = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2) / 2  # max((V - G)^2, (V_clip - G)^2) / 2
    return (loss * mask).sum() / mask.sum().clamp(min=1)


class LagrangeMultiplier:
    """lambda >= 0 learned in log space by gradient steps on -(J_C - d) lambda.

    d/d log_lambda of -(J_C - d) lambda is -(J_C - d) lambda, so lambda grows while the mean
    episode cost J_C is above the threshold d and shrinks while it is below; it is capped at
    ``max_value`` (None: no cap).
    """

    def __init__(self, init: float = 1.0, lr: float = 0.1, threshold: float = 0.0, max_value: float | None = 5.0):
        if init < 0 or (init == 0 and lr > 0):
            raise ValueError(f"lambda_init: must be > 0 (or >= 0 with lambda_lr 0, a fixed lambda), got {init}")
        self.fixed = lr == 0  # a fixed multiplier: lambda = init throughout (0 allowed)
        # a scalar read as a Python float each iteration: it stays on the CPU whatever the run's device
        log_init = math.log(init) if init > 0 else -math.inf
        self.log_lambda = torch.tensor(log_init, device="cpu", requires_grad=not self.fixed)
        self.optimizer = torch.optim.SGD([self.log_lambda], lr=lr) if not self.fixed else None
        self.threshold, self.max_value = threshold, max_value

    @property
    def value(self) -> float:
        return float(self.log_lambda.detach().exp())

    def update(self, mean_episode_cost: float) -> float:
        if self.fixed:
            return self.value
        loss = -(mean_episode_cost - self.threshold) * self.log_lambda.exp()  # -(J_C - d) lambda
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
    # The defaults are the official ones (PKU-Alignment/safe-rlhf at e8cca16, scripts/ppo-lag.sh and the
    # trainer; configs/official_ppo_lag.yaml lists each with its source, tests/test_ppo.py checks them)
    ptx_data: str | None = None  # SFT data (prompt, response) for the optional PTX term
    ptx_coef: float = 16.0  # official --ptx_coeff 16.0
    iterations: int = 100  # rollout batches
    rollout_batch_size: int = 16  # official --per_device_prompt_batch_size / --per_device_train_batch_size 16
    ppo_epochs: int = 1  # official --update_iters 1
    max_new_tokens: int = 32
    temperature: float = 1.0  # official --temperature 1.0
    max_prompt_length: int = 64
    actor_lr: float = 1e-5  # official --actor_lr 1e-5
    actor_weight_decay: float = 0.01  # official --actor_weight_decay 0.01
    actor_lr_scheduler: str = "cosine"  # official --actor_lr_scheduler_type cosine
    actor_warmup_ratio: float = 0.03  # official --actor_lr_warmup_ratio 0.03
    critic_lr: float = 5e-6  # official --critic_lr 5e-6
    critic_weight_decay: float = 0.0  # official --critic_weight_decay 0.0
    critic_lr_scheduler: str = "constant"  # official --critic_lr_scheduler_type constant
    critic_warmup_ratio: float = 0.03  # official --critic_lr_warmup_ratio 0.03 (no effect on "constant")
    kl_coef: float = 0.01  # official --kl_coeff 0.01
    clip_range: float = 0.2  # official --clip_range_ratio 0.2
    clip_range_value: float = 5.0  # official --clip_range_value 5.0
    score_clip: float = 50.0  # official --clip_range_score 50.0
    gamma: float = 1.0  # official trainer: gamma 1.0
    gae_lambda: float = 0.95  # official trainer: gae_lambda 0.95
    cost_threshold: float = 0.0  # d; official --threshold 0.0
    cost_threshold_margin: float | None = None  # m > 0: d = J_C(start) - m instead (the start then violates it)
    cost_over: str = "all"  # J_C over the rollouts of "all" prompts, or of "harmful" ones only (a "harmful" column)
    start_cost_prompts: int = 256  # prompts (a fixed sample) whose start samples measure J_C(start)
    lambda_init: float = 1.0  # official --lambda_init 1.0
    lambda_lr: float = 0.1  # official --lambda_lr 0.1; 0: lambda fixed at lambda_init
    lambda_max: float | None = 5.0  # official --lambda_max 5.0
    episode_cost_window: int = 128  # official --episode_cost_window_size 128
    max_grad_norm: float = 1.0
    seed: int = 0
    mixed_precision: str = "auto"  # "auto" (bf16 where a probe finds it faster: bfpo.precision), "no", "bf16"
    device: str = "auto"  # where every model and tensor of the run lives: auto (accelerate's choice), cpu, cuda:N
    save_every: int = 0  # iterations between checkpoints; 0: none
    snapshot_every: int = 0  # iterations between kept actor snapshots with the FLOPs so far (curves); 0: none
    keep_checkpoints: int = 2  # checkpoints kept; a damaged one falls back to the one before
    start_over: bool = False  # when no intact checkpoint is left: start from iteration 0 (else stop and say so)
    num_threads: int | None = None
    progress: bool = True
    report_to: list[str] | str = "none"  # trackers: "none", or some of tensorboard, wandb, trackio, mlflow

    def __post_init__(self):
        precision.check(self.mixed_precision)
        if self.device != "auto":
            devices.resolve(self.device)
        self.report_to = tracking.names(self.report_to)
        configs.check_ranges(
            self,
            positive=("actor_lr", "critic_lr", "temperature", "clip_range", "clip_range_value", "score_clip")
            + ("max_grad_norm", "lambda_max", "cost_threshold_margin"),
            at_least_one=("iterations", "rollout_batch_size", "ppo_epochs", "max_new_tokens", "max_prompt_length")
            + ("episode_cost_window", "keep_checkpoints", "num_threads", "start_cost_prompts"),
            non_negative=("ptx_coef", "kl_coef", "lambda_init", "lambda_lr", "save_every", "snapshot_every")
            + ("actor_weight_decay", "critic_weight_decay"),
            unit=("gamma", "gae_lambda", "actor_warmup_ratio", "critic_warmup_ratio"),
        )
        if self.lambda_init == 0 and self.lambda_lr > 0:
            raise ValueError("lambda_init: must be > 0 while lambda is learned (lambda_lr > 0); 0 needs lambda_lr 0")
        if self.cost_over not in ("all", "harmful"):
            raise ValueError(f"cost_over: expected 'all' or 'harmful', got {self.cost_over!r}")
        from bfpo.train_config import LR_SCHEDULERS

        for key in ("actor_lr_scheduler", "critic_lr_scheduler"):
            if getattr(self, key) not in LR_SCHEDULERS:
                raise ValueError(f"{key}: expected one of {', '.join(LR_SCHEDULERS)}, got {getattr(self, key)!r}")

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
    return sequences.token_logps(logits, seq[:, start:])


def _load_prompts(path: str, harmful_column: bool = False) -> tuple[list[str], list[bool]]:
    """The distinct prompts of ``path`` (sorted), and whether each is harmful: read from a boolean
    ``harmful`` column when ``harmful_column`` (``cost_over: harmful``), else all True."""
    p = Path(path)
    if p.is_dir():
        rows = bdata.load(p).to_list()
    elif p.is_file():
        rows = [r for _, r in bdata.read_jsonl(p)]
    else:
        raise FileNotFoundError(f"prompts: {path} is neither a saved dataset folder nor a file")
    prompts = {}
    for line, r in enumerate(rows, start=1):
        if not isinstance(r.get("prompt"), str) or not r["prompt"].strip():
            raise bdata.DataError(path, line, "prompt", "empty or not text")
        harmful = True
        if harmful_column:
            harmful = r.get("harmful")
            if not isinstance(harmful, bool):
                problem = f"cost_over 'harmful' needs true or false, got {harmful!r}"
                raise bdata.DataError(path, line, "harmful", problem)
        prompts[r["prompt"]] = harmful
    if not prompts:
        raise bdata.DataError(path, None, None, "no records (the file is empty)")
    if not any(prompts.values()):
        raise bdata.DataError(path, None, "harmful", "cost_over 'harmful': no prompt is marked harmful")
    order = sorted(prompts)
    return order, [prompts[q] for q in order]


def _pad_left(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask [B, P], made on ``device`` in one transfer."""
    width = max(map(len, rows))
    ids = [[pad_id] * (width - len(r)) + r for r in rows]
    attn = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return torch.tensor(ids, dtype=torch.long, device=device), torch.tensor(attn, dtype=torch.long, device=device)


@dataclass
class _Models:
    """What PPO-Lagrangian reads but never updates: the tokenizer, the reference policy, the two score
    models, and the parameter counts for the FLOPs."""

    tokenizer: object
    ref: torch.nn.Module
    scorers: dict  # "reward" -> R, "cost" -> C (scalar heads)
    n_actor: int
    n_score: int
    n_critic: int
    precision: str  # "bf16" or "no" (mixed_precision resolved): the forward passes' autocast
    device: torch.device  # the run's device (cfg.device resolved): every model and tensor lives there


@dataclass
class PPOState:
    """What PPO-Lagrangian updates, i.e. what a checkpoint holds (with the random state)."""

    actor: torch.nn.Module
    actor_opt: torch.optim.Optimizer
    critics: dict  # "reward" -> V_R, "cost" -> V_C (per-token heads)
    critic_opts: dict
    multiplier: LagrangeMultiplier
    episode_costs: deque
    flops: compute.FlopCounter
    schedulers: dict  # "actor", "reward", "cost" -> learning-rate schedule of that optimizer
    start_cost: float | None = None  # J_C of the start, measured before the first iteration
    device: torch.device = torch.device("cpu")  # the run's device (its random state is kept too)

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critics": {k: c.state_dict() for k, c in self.critics.items()},
            "critic_opts": {k: o.state_dict() for k, o in self.critic_opts.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "log_lambda": float(self.multiplier.log_lambda.detach()),
            "lambda_opt": self.multiplier.optimizer.state_dict() if self.multiplier.optimizer else None,
            "threshold": self.multiplier.threshold,
            "start_cost": self.start_cost,
            "episode_costs": list(self.episode_costs),
            "flops": self.flops.as_dict(),
            "torch_rng": devices.rng_state(self.device),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        for k in self.critics:
            self.critics[k].load_state_dict(state["critics"][k])
            self.critic_opts[k].load_state_dict(state["critic_opts"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.multiplier.log_lambda.data.fill_(state["log_lambda"])
        if self.multiplier.optimizer is not None:
            self.multiplier.optimizer.load_state_dict(state["lambda_opt"])
        self.multiplier.threshold, self.start_cost = state["threshold"], state["start_cost"]
        self.episode_costs.extend(state["episode_costs"])
        self.flops.add(state["flops"])
        devices.set_rng_state(state["torch_rng"], self.device)


@dataclass
class Rollout:
    """One batch of sampled responses, scored: every tensor is [B, G] over response tokens (scores [B])."""

    prompt_length: int  # P: the (left-padded) prompt width
    seq: torch.Tensor  # [B, P + G] prompt and response ids
    attn: torch.Tensor  # [B, P + G]
    resp: torch.Tensor  # [B, G] response ids, padded after EOS
    mask: torch.Tensor  # [B, G] 1 up to and including EOS
    logps: torch.Tensor  # log pi_old(y_t)
    ref_logps: torch.Tensor  # log pi_ref(y_t)
    scores: dict  # R(x, y), C(x, y), clipped
    values: dict  # V_R, V_C per token
    advantages: dict  # A_R, A_C (GAE)
    returns: dict  # G_R, G_C
    tokens: tuple[int, int, int]  # prompt, new, all


def _load(cfg: PPOConfig) -> tuple[_Models, PPOState]:
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    device = devices.resolve(cfg.device)
    tokenizer = models.load_tokenizer(cfg.actor)
    actor = models.load_model(cfg.actor, device=device)
    ref = models.load_model(cfg.actor, device=device).eval().requires_grad_(False)
    scorers = {}
    for kind, path in (("reward", cfg.reward_model), ("cost", cfg.cost_model)):
        try:
            scorers[kind] = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).to(device)
        except OSError as e:
            raise FileNotFoundError(f"{kind}_model: cannot load {path!r} ({e})") from e
        scorers[kind].eval().requires_grad_(False)
    # the critics start from the score models, as in Safe RLHF
    critics = {
        k: AutoModelForTokenClassification.from_pretrained(p, num_labels=1).to(device)
        for k, p in (("reward", cfg.reward_model), ("cost", cfg.cost_model))
    }
    from transformers import get_scheduler

    actor_opt = torch.optim.AdamW(actor.parameters(), lr=cfg.actor_lr, weight_decay=cfg.actor_weight_decay)
    critic_opts = {
        k: torch.optim.AdamW(c.parameters(), lr=cfg.critic_lr, weight_decay=cfg.critic_weight_decay)
        for k, c in critics.items()
    }
    # every optimizer step advances its schedule: the actor steps once per PPO epoch, and once more for PTX
    actor_steps = cfg.iterations * cfg.ppo_epochs * (2 if cfg.ptx_data else 1)
    critic_steps = cfg.iterations * cfg.ppo_epochs
    schedulers = {
        "actor": get_scheduler(
            cfg.actor_lr_scheduler, actor_opt, math.ceil(cfg.actor_warmup_ratio * actor_steps), actor_steps
        ),
        **{
            k: get_scheduler(
                cfg.critic_lr_scheduler, o, math.ceil(cfg.critic_warmup_ratio * critic_steps), critic_steps
            )
            for k, o in critic_opts.items()
        },
    }
    state = PPOState(
        actor,
        actor_opt,
        critics,
        critic_opts,
        LagrangeMultiplier(cfg.lambda_init, cfg.lambda_lr, cfg.cost_threshold, cfg.lambda_max),
        deque(maxlen=cfg.episode_cost_window),
        compute.FlopCounter(),
        schedulers,
        device=device,
    )
    sizes = (
        models.count_parameters(actor)[0],
        models.count_parameters(scorers["reward"])[0],
        models.count_parameters(critics["reward"])[0],
    )
    mixed_precision = precision.resolve(cfg.mixed_precision, cfg.num_threads, device)
    for model in (actor, ref, *scorers.values(), *critics.values()):
        precision.fit_attention(model, mixed_precision, device)
    return _Models(tokenizer, ref, scorers, *sizes, mixed_precision, device), state


@torch.no_grad()
def _sample(cfg: PPOConfig, actor, m: _Models, prompt_ids: list[list[int]]):
    """Sampled responses to ``prompt_ids``: (P, prompt attention [B, P], seq [B, P + G], attn, resp [B, G], mask [B, G])
    with the response masked after its EOS."""
    pad, eos = m.tokenizer.pad_token_id, m.tokenizer.eos_token_id
    p_ids, p_attn = _pad_left(prompt_ids, pad, m.device)
    actor.eval()
    # the tokens generate(do_sample=True, top_k=0) draws, without its per-step overhead
    resp = sampling.sample(actor, p_ids, p_attn, cfg.max_new_tokens, cfg.temperature, pad, eos)  # [B, G]
    ended = (resp == eos).long().cumsum(-1)
    mask = ((ended == 0) | ((ended == 1) & (resp == eos))).float()  # up to and including EOS
    resp = torch.where(mask.bool(), resp, torch.full_like(resp, pad))
    seq = torch.cat([p_ids, resp], 1)
    attn = torch.cat([p_attn, mask.long()], 1)
    return p_ids.shape[1], p_attn, seq, attn, resp, mask


def _score(model, seq, attn, clip: float) -> torch.Tensor:
    """A score model's scalar at the last token, clipped to +-``clip`` (score_clip): [B]."""
    logits = model(input_ids=seq, attention_mask=attn, position_ids=_positions(attn)).logits
    return logits[:, 0].float().clamp(-clip, clip)


@torch.no_grad()
def start_cost(cfg: PPOConfig, state: PPOState, m: _Models, prompt_ids, harmful: list[bool]) -> tuple[float, int]:
    """J_C of the start: the cost model's mean (clipped) score C(x, y) on the policy's own samples
    y ~ pi(. | x), one per prompt, over a fixed sample of at most ``start_cost_prompts`` prompts (with
    ``cost_over: harmful`` only harmful ones). Returns (J_C, prompts used). The draws come from the seed
    and leave the run's random stream as it was."""
    pool = [i for i, h in enumerate(harmful) if h or cfg.cost_over == "all"]
    chosen = sorted(random.Random(f"start-cost-{cfg.seed}").sample(pool, min(len(pool), cfg.start_cost_prompts)))
    costs = []
    with devices.fork_rng(m.device):
        torch.manual_seed(cfg.seed)
        for k in range(0, len(chosen), cfg.rollout_batch_size):
            batch = [prompt_ids[i] for i in chosen[k : k + cfg.rollout_batch_size]]
            with precision.autocast(m.precision, m.device):
                _, p_attn, seq, attn, _, mask = _sample(cfg, state.actor, m, batch)
                costs += _score(m.scorers["cost"], seq, attn, cfg.score_clip).tolist()
            state.flops.generate("start_cost", m.n_actor, int(p_attn.sum()), int(mask.sum()))
            state.flops.forward("start_cost", m.n_score, int(attn.sum()))
    return sum(costs) / len(costs), len(chosen)


@torch.no_grad()
def rollout(cfg: PPOConfig, state: PPOState, m: _Models, prompt_ids: list[list[int]]) -> Rollout:
    """Sample a response to each prompt, then score every token with the actor, the reference and the
    critics, and the whole response with R and C:

        r_t = -beta_kl KL_t (+ R(x, y) at the last token),  c_t = +beta_kl KL_t (+ C(x, y) at the last token)
        (A_R, G_R) = GAE(r, V_R),  (A_C, G_C) = GAE(c, V_C)
    """
    actor = state.actor
    P, p_attn, seq, attn, resp, mask = _sample(cfg, actor, m, prompt_ids)
    logps = _token_logps(actor, seq, attn, P)
    ref_logps = _token_logps(m.ref, seq, attn, P)
    scores = {k: _score(s, seq, attn, cfg.score_clip) for k, s in m.scorers.items()}
    values = {
        k: c(input_ids=seq, attention_mask=attn, position_ids=_positions(attn)).logits[:, P - 1 : -1, 0].float()
        for k, c in state.critics.items()
    }
    rewards = shaped_rewards(scores["reward"], logps, ref_logps, mask, cfg.kl_coef, sign=-1.0)
    costs = shaped_rewards(scores["cost"], logps, ref_logps, mask, cfg.kl_coef, sign=+1.0)
    adv_r, ret_r = gae(rewards, values["reward"], mask, cfg.gamma, cfg.gae_lambda)
    adv_c, ret_c = gae(costs, values["cost"], mask, cfg.gamma, cfg.gae_lambda)
    tokens = (int(p_attn.sum()), int(mask.sum()), int(attn.sum()))
    return Rollout(
        P,
        seq,
        attn,
        resp,
        mask,
        logps,
        ref_logps,
        scores,
        values,
        {"reward": adv_r, "cost": adv_c},
        {"reward": ret_r, "cost": ret_c},
        tokens,
    )


def update(cfg: PPOConfig, state: PPOState, m: _Models, ro: Rollout, lam: float, ptx_items: list, rng) -> dict:
    """``ppo_epochs`` PPO steps on one rollout: the actor on the combined advantage
    A = (A_R - lambda A_C) / (1 + lambda), each critic on its returns, then the optional PTX step.
    Returns the last epoch's losses."""
    actor, n_actor, n_critic = state.actor, m.n_actor, m.n_critic
    seq, attn, P, mask, tokens_all = ro.seq, ro.attn, ro.prompt_length, ro.mask, ro.tokens[2]
    # A = (A_R - lambda A_C) / (1 + lambda): the combined advantage of the Lagrangian
    advantages = (ro.advantages["reward"] - lam * ro.advantages["cost"]) / (1 + lam)
    actor.train()
    for _ in range(cfg.ppo_epochs):
        with precision.autocast(m.precision, m.device):
            new_logps = _token_logps(actor, seq, attn, P)
        actor_loss = ppo_actor_loss(new_logps, ro.logps, advantages, mask, cfg.clip_range)
        state.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        torch.nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
        state.actor_opt.step()
        state.schedulers["actor"].step()
        state.flops.train("actor_train", n_actor, tokens_all)
        critic_losses = {}
        for k, critic in state.critics.items():
            with precision.autocast(m.precision, m.device):
                v = critic(input_ids=seq, attention_mask=attn, position_ids=_positions(attn)).logits
            loss = ppo_critic_loss(v[:, P - 1 : -1, 0].float(), ro.values[k], ro.returns[k], mask, cfg.clip_range_value)
            state.critic_opts[k].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
            state.critic_opts[k].step()
            state.schedulers[k].step()
            critic_losses[k] = float(loss.detach())
            state.flops.train("critic_train", n_critic, tokens_all)
        if ptx_items:  # the pre-training term: coefficient * NLL on SFT data, its own step
            mb = [ptx_items[rng.randrange(len(ptx_items))] for _ in range(cfg.rollout_batch_size)]
            ids, am, rm = sequences.collate(sequences.micro_batch_sequences(mb), m.tokenizer.pad_token_id, m.device)
            with precision.autocast(m.precision, m.device):
                lp, nt = sequences.sequence_logps(actor, ids, am, rm)
            ptx_loss = cfg.ptx_coef * (-lp.sum() / nt.sum())  # gamma_ptx * NLL per token on SFT data
            state.actor_opt.zero_grad(set_to_none=True)
            ptx_loss.backward()
            torch.nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
            state.actor_opt.step()
            state.schedulers["actor"].step()
            state.flops.train("ptx_train", n_actor, int(am.sum()))
    return {
        "actor_loss": float(actor_loss.detach()),
        "reward_critic_loss": critic_losses["reward"],
        "cost_critic_loss": critic_losses["cost"],
    }


def ppo_lagrangian(cfg: PPOConfig, judge=None) -> dict:
    """Run (or resume) PPO-Lagrangian; writes ``model/``, ``metrics.jsonl`` (lambda, reward, cost, KL
    every iteration) and ``ppo_summary.json``. Checkpoints every ``save_every`` iterations. With a
    ``judge`` (a :class:`bfpo.evaluation.Judge`, e.g. the SafeHelp gold judge), the share of each
    rollout batch it finds harmful is logged as ``gold_unsafe_rate``."""
    if (done := runs.start(cfg, "ppo_summary.json")) is not None:
        return done
    with locks.hold(cfg.output_dir, "python -m bfpo.safe_rlhf ppo"):  # one writer per run folder
        if (done := runs.finished(cfg, "ppo_summary.json")) is not None:  # finished while we waited to start
            return done
        return _ppo_lagrangian(cfg, judge)


def _ppo_lagrangian(cfg: PPOConfig, judge) -> dict:
    """:func:`ppo_lagrangian` once the output folder is this process's."""
    out = Path(cfg.output_dir)
    prompts, harmful = _load_prompts(cfg.prompts, cfg.cost_over == "harmful")  # checked before any model loads
    out.mkdir(parents=True, exist_ok=True)
    # which checkpoint to resume (known before any expensive work): one of this config, intact
    if any(not _checkpoint_of(c, cfg) for _, c in checkpoints.listed(out)):
        log.warning("%s holds checkpoints of another config; starting afresh", out)
        checkpoints.clear(out)
    resume, damaged = checkpoints.latest_intact(out, cfg.start_over)
    checkpoints.discard(damaged)
    m, state = _load(cfg)
    prompt_ids = [sequences.encode_prompt(m.tokenizer, p, cfg.max_prompt_length) for p in prompts]
    ptx_items = []
    if cfg.ptx_data:
        ptx = sequences.load_examples(cfg.ptx_data, "sft", "ptx_data")
        ptx_items, _ = sequences.tokenize(ptx, m.tokenizer, sequences.Encoding(), "sft")

    metrics_path, start = out / "metrics.jsonl", 0
    if resume is not None:
        ckpt, manifest = resume
        state.load_state_dict(torch.load(ckpt / "state.pt", weights_only=False))
        start = manifest["step"]
        runs.truncate_metrics(metrics_path, start, key="iteration")
        log.info("resuming PPO-Lagrangian from %s at iteration %d", ckpt, start)
    else:
        if metrics_path.exists():
            metrics_path.unlink()
        # Safe RLHF's premise: the start violates the constraint, J_C(start) > d
        state.start_cost, n_prompts = start_cost(cfg, state, m, prompt_ids, harmful)
        if cfg.cost_threshold_margin is not None:
            state.multiplier.threshold = state.start_cost - cfg.cost_threshold_margin  # d = J_C(start) - m
        d = state.multiplier.threshold
        rule = f"J_C(start) - {cfg.cost_threshold_margin:g}" if cfg.cost_threshold_margin is not None else "given"
        print(
            f"PPO-Lagrangian {out}: J_C(start) = {state.start_cost:.3f} (cost model, {n_prompts} {cfg.cost_over} "
            f"prompts), d = {d:.3f} ({rule})"
        )
        if d >= state.start_cost:
            log.warning(
                "%s: d = %.3f >= J_C(start) = %.3f: the constraint does not bind at the start, so lambda will "
                "shrink and PPO trades cost for reward until J_C reaches d (set cost_threshold_margin)",
                out,
                d,
                state.start_cost,
            )

    trackers = tracking.Trackers(cfg.report_to, out, out.name, configs.as_json(cfg), start)
    bar = tqdm(total=cfg.iterations, initial=start, desc="PPO-Lagrangian", disable=not cfg.progress)
    record = None  # the last iteration's metrics
    for it in range(start, cfg.iterations):
        record = _iteration(cfg, state, m, it, prompts, prompt_ids, harmful, ptx_items, judge)
        append_line(metrics_path, json.dumps(record))
        trackers.log(record, step=it + 1)
        bar.update(1)
        bar.set_postfix(lam=f"{record['lambda']:.3f}", R=f"{record['reward']:.2f}", C=f"{record['cost']:.2f}")
        if cfg.snapshot_every and (it + 1) % cfg.snapshot_every == 0 and it + 1 < cfg.iterations:
            extra = {"flops": state.flops.as_dict(), "lambda": record["lambda"]}
            checkpoints.save_snapshot(out, it + 1, lambda path, r=record: _save_actor(cfg, state, m, path, r), extra)
        if cfg.save_every and (it + 1) % cfg.save_every == 0 and it + 1 < cfg.iterations:
            tmp = checkpoints.staging(out, it + 1)
            with checkpoints.space_guard(out, tmp, it + 1):
                torch.save(state.state_dict(), tmp / "state.pt")
                checkpoints.commit(out, tmp, it + 1, {"config": configs.as_json(cfg)}, cfg.keep_checkpoints)
    bar.close()
    trackers.finish()
    _save_actor(cfg, state, m, out / "model", record)
    summary = {
        "config": dataclasses.asdict(cfg),
        "iterations": cfg.iterations,
        "resumed_from": start,
        "final_lambda": state.multiplier.value,
        "start_cost": state.start_cost,  # J_C of the SFT start (the cost model on its own samples)
        "cost_threshold": state.multiplier.threshold,  # d as used
        "constraint_binds_at_start": state.start_cost > state.multiplier.threshold,
        "flops": state.flops.as_dict(),
        "parameters": {"actor": m.n_actor, "score_model": m.n_score, "critic": m.n_critic},
        "mixed_precision": m.precision,
        "device": str(m.device),
    }
    write_json(out / "ppo_summary.json", summary)
    checkpoints.clear(out)
    return summary


def _save_actor(cfg: PPOConfig, state: PPOState, m: _Models, path, metrics: dict | None) -> None:
    """The actor and tokenizer, with a model card holding the config and ``metrics`` (an iteration's)."""
    card = cards.model_card(
        method="ppo_lagrangian",
        base_model=cfg.actor,
        config=configs.as_json(cfg),
        datasets=[cfg.prompts, cfg.ptx_data],
        metrics=metrics,
    )
    models.save(state.actor, m.tokenizer, path, card)


def _iteration(cfg, state: PPOState, m: _Models, it: int, prompts, prompt_ids, harmful, ptx_items, judge) -> dict:
    """One iteration: roll out on a batch of prompts fixed by (seed, iteration), update the multiplier
    on the window of episode costs, then the PPO steps; returns the iteration's metrics."""
    t0 = time.perf_counter()
    rng = random.Random(f"ppo-{cfg.seed}-{it}")
    batch_prompts = [rng.randrange(len(prompts)) for _ in range(cfg.rollout_batch_size)]
    with precision.autocast(m.precision, m.device):
        ro = rollout(cfg, state, m, [prompt_ids[i] for i in batch_prompts])
    tokens_prompt, tokens_new, tokens_all = ro.tokens
    state.flops.generate("rollout_generation", m.n_actor, tokens_prompt, tokens_new)
    state.flops.forward("rollout_scoring", m.n_actor, 2 * tokens_all)  # actor + reference log-probs
    state.flops.forward("rollout_scoring", m.n_score, 2 * tokens_all)  # reward + cost model
    state.flops.forward("rollout_scoring", m.n_critic, 2 * tokens_all)  # both critics
    # the multiplier first: log lambda <- log lambda + lr (J_C - d) lambda, J_C the window's mean cost
    # J_C over the window (with cost_over "harmful", only the rollouts of harmful prompts count)
    costs = ro.scores["cost"].tolist()
    state.episode_costs.extend(c for c, i in zip(costs, batch_prompts, strict=True) if harmful[i])
    mean_cost = sum(state.episode_costs) / len(state.episode_costs) if state.episode_costs else state.start_cost
    lam = state.multiplier.update(mean_cost)
    losses_ = update(cfg, state, m, ro, lam, ptx_items, rng)
    record = {
        "iteration": it + 1,
        "lambda": lam,
        "reward": float(ro.scores["reward"].mean()),
        "cost": float(ro.scores["cost"].mean()),
        "episode_cost_window": mean_cost,
        "cost_threshold": state.multiplier.threshold,
        "actor_lr": state.schedulers["actor"].get_last_lr()[0],
        "kl": float(((ro.logps - ro.ref_logps) * ro.mask).sum(-1).mean()),
        **losses_,
        "response_length": float(ro.mask.sum(-1).mean()),
    }
    if judge is not None:
        texts = m.tokenizer.batch_decode(ro.resp, skip_special_tokens=True)
        harmless = judge.harmless([prompts[i] for i in batch_prompts], texts)
        record["gold_unsafe_rate"] = sum(not h for h in harmless) / len(harmless)
    record["seconds"] = time.perf_counter() - t0
    return record


def constraint_summary(run_dir) -> dict:
    """Whether the constraint bound in a finished run: J_C of the start and d (from ``ppo_summary.json``),
    the final and largest lambda, and the share of iterations whose window cost J_C was above d."""
    summary = json.loads((Path(run_dir) / "ppo_summary.json").read_text())
    metrics = runs.read_metrics(run_dir)
    d = summary["cost_threshold"]
    return {
        "start_cost": summary["start_cost"],
        "cost_threshold": d,
        "binds_at_start": summary["constraint_binds_at_start"],
        "final_lambda": summary["final_lambda"],
        "max_lambda": max(m["lambda"] for m in metrics),
        "share_above_d": sum(m["episode_cost_window"] > d for m in metrics) / len(metrics),
    }


def _checkpoint_of(ckpt: Path, cfg: PPOConfig) -> bool:
    """Whether ``ckpt`` was written by a run of ``cfg`` (an unreadable manifest counts as yes: the
    damage check then reports it)."""
    try:
        saved = json.loads((ckpt / checkpoints.MANIFEST).read_text())["state"]["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return configs.same_run(saved, cfg)
