"""Intervals that cover: seed-level Student's t intervals, paired differences, and a verdict that says
"inconclusive" whenever the interval straddles the claim's threshold.

Why seeds: float results differ between CPUs, so every training run diverges from the first step; the
spread between machines is about the spread between seeds. The unit of replication is therefore the
seed (its SFT start, data order and sampling), and the prompts are a fixed set the study is about. The
reported interval (:func:`interval`) is

    m_s   = mean over prompts p of x[s, p]                      (one number per seed)
    mean  = (1/S) sum_s m_s
    sd    = sqrt( sum_s (m_s - mean)^2 / (S - 1) )               (Bessel's correction)
    95 %  = mean -/+ t_{0.975, S-1} * sd / sqrt(S)               (Student's t, S - 1 degrees of freedom)

"A beats B" uses the *paired* difference: A and B on the same seeds and prompts, the difference taken
per (seed, prompt) first, so the shared noise of a prompt and of a seed's start cancels.

The two-level percentile bootstrap used before (:func:`bootstrap`: resample seeds, then prompts within
each seed) is kept for comparison: over 5 seeds it under-covers (its variance is the (S-1)/S plug-in one
and its quantiles are normal where t with S-1 degrees of freedom is due). :func:`coverage` measures both
on simulated studies with a known truth (tests/test_stats.py: t covers 93-97 %, the bootstrap does not).

Values are given as an array ``[S, P]``: one row per seed, one column per prompt (each cell the
mean over that prompt's sampled answers). ``NaN`` cells (a prompt a run did not answer) are not
allowed: compare runs on the same prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
N_BOOT = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate (the mean over every seed and prompt) with its 95 % interval."""

    mean: float
    low: float
    high: float
    seeds: int
    prompts: int

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "seeds": self.seeds, "prompts": self.prompts}


def _as_matrix(values) -> np.ndarray:
    m = np.asarray(values, dtype=float)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"values: expected an array [seeds, prompts], got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("values: every (seed, prompt) cell must be a finite number")
    return m


def t_two_sided(level: float, df: int) -> float:
    """The ``t`` with P(|T| <= t) = ``level`` for Student's t with ``df`` (integer >= 1) degrees of freedom.

    P(|T| <= t) has a closed form for integer df (Abramowitz & Stegun 26.7.3-4), with
    theta = arctan(t / sqrt(df)):  odd df: (2/pi) (theta + sin(theta) sum_k c_k cos^(2k+1)(theta));
    even df: sin(theta) sum_k d_k cos^(2k)(theta); inverted by bisection (no scipy needed).
    """
    if not (isinstance(df, int) and df >= 1) or not 0 < level < 1:
        raise ValueError(f"t quantile: need an integer df >= 1 and 0 < level < 1, got df={df!r}, level={level!r}")

    def inside(t: float) -> float:  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        c, s = math.cos(theta), math.sin(theta)
        if df % 2:
            term, total = c, c if df > 1 else 0.0
            for k in range(1, (df - 1) // 2):  # 1, 2/3 cos^2, 2*4/(3*5) cos^4, ... times cos
                term *= c * c * (2 * k) / (2 * k + 1)
                total += term
            return 2 / math.pi * (theta + s * total)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):  # 1, 1/2 cos^2, 1*3/(2*4) cos^4, ...
            term *= c * c * (2 * k - 1) / (2 * k)
            total += term
        return s * total

    low, high = 0.0, 1.0
    while inside(high) < level:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if inside(mid) < level else (low, mid)
    return (low + high) / 2


def interval(values, level: float = LEVEL) -> Interval:
    """The mean of ``values`` ``[S, P]`` with the seed-level Student's t interval (see the module doc).
    One seed gives an unbounded interval (nothing is known about the spread between seeds)."""
    m = _as_matrix(values)
    s, p = m.shape
    per_seed = m.mean(axis=1)  # [S] each seed's mean over its prompts
    mean = float(per_seed.mean())
    if s < 2:
        return Interval(mean, -math.inf, math.inf, s, p)
    half = t_two_sided(level, s - 1) * float(per_seed.std(ddof=1)) / math.sqrt(s)
    return Interval(mean, mean - half, mean + half, s, p)


def bootstrap(values, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """The mean of ``values`` ``[S, P]`` with the two-level percentile bootstrap interval: draw S seeds
    with replacement, then P prompts with replacement within each drawn seed; the 2.5 and 97.5
    percentiles of the replicate means. Kept for comparison: it under-covers over few seeds."""
    m = _as_matrix(values)
    s, p = m.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, s, size=(n_boot, s))  # [B, S] which seeds each replicate draws
    prompts = rng.integers(0, p, size=(n_boot, s, p))  # [B, S, P] which prompts, per drawn seed
    draws = m[seeds[:, :, None], prompts]  # [B, S, P]
    stats = draws.mean(axis=(1, 2))  # [B]
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Interval(float(m.mean()), float(low), float(high), s, p)


def paired_difference(a, b, level: float = LEVEL) -> Interval:
    """``mean(a - b)`` with its seed-level t interval, ``a`` and ``b`` measured on the same seeds and prompts.

    ``b`` may also be one row ``[1, P]`` (a baseline judged once, e.g. the shared SFT start): it is
    then compared with every seed of ``a``.
    """
    a, b = _as_matrix(a), _as_matrix(b)
    if b.shape[0] == 1 and a.shape[0] > 1:
        b = np.repeat(b, a.shape[0], axis=0)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: a and b must cover the same seeds and prompts, got {a.shape}, {b.shape}")
    return interval(a - b, level)


AGREES, DISAGREES, INCONCLUSIVE = "agrees", "does not agree", "inconclusive"


def verdict(iv: Interval, threshold: float = 0.0, direction: int = +1) -> str:
    """ "agrees" when the whole interval lies on the claimed side of ``threshold`` (above it for
    ``direction=+1``, below for ``-1``), "does not agree" when it lies wholly on the other side,
    else "inconclusive". An interval touching the threshold is inconclusive."""
    if direction not in (+1, -1):
        raise ValueError(f"direction: expected +1 or -1, got {direction}")
    low, high = (iv.low - threshold) * direction, (iv.high - threshold) * direction
    low, high = min(low, high), max(low, high)
    if low > 0:
        return AGREES
    if high < 0:
        return DISAGREES
    return INCONCLUSIVE


def minimal_detectable_effect(sd: float, seeds: int, level: float = LEVEL, power: float = 0.8) -> float:
    """The smallest true change a paired t test over ``seeds`` seeds detects with probability ``power``
    at two-sided ``level``, given the seed standard deviation ``sd`` of the paired differences:

        MDE = (t_{1-a/2, S-1} + t_{power, S-1}) * sd / sqrt(S)

    (the usual normal-theory formula with t quantiles; a one-sided ``power`` quantile is the two-sided
    one at ``2 * power - 1``)."""
    if seeds < 2:
        return math.inf
    df = seeds - 1
    return (t_two_sided(level, df) + t_two_sided(2 * power - 1, df)) * sd / math.sqrt(seeds)


def seeds_for_half_width(sd: float, target: float, level: float = LEVEL, most: int = 10_000) -> int:
    """The fewest seeds whose 95 % t interval has half-width ``t_{S-1} sd / sqrt(S) <= target`` at seed
    standard deviation ``sd`` (what a study would need to reach a precision target)."""
    if sd <= 0:
        return 2
    for n in range(2, most + 1):
        if t_two_sided(level, n - 1) * sd / math.sqrt(n) <= target:
            return n
    raise ValueError(f"seeds_for_half_width: more than {most} seeds for sd {sd} and half-width {target}")


def simulate_studies(
    studies: int, seeds: int, prompts: int, mean: float, seed_sd: float, samples: int = 4, rng_seed: int = 0
) -> np.ndarray:
    """``[studies, seeds, prompts]`` simulated per-prompt rates shaped like the SafeHelp study's: each
    seed's rate is drawn from a Beta distribution with the given ``mean`` and ``seed_sd`` (what the seed,
    its start and data order change), each prompt's value is the share of ``samples`` Bernoulli answers
    at that rate. The truth (the expected mean of a study) is ``mean``."""
    if not 0 < mean < 1 or not 0 < seed_sd**2 < mean * (1 - mean):
        raise ValueError(f"simulate_studies: need 0 < mean < 1 and 0 < sd^2 < mean (1 - mean), got {mean}, {seed_sd}")
    rng = np.random.default_rng(rng_seed)
    concentration = mean * (1 - mean) / seed_sd**2 - 1
    rates = rng.beta(mean * concentration, (1 - mean) * concentration, size=(studies, seeds, 1))
    return rng.binomial(samples, np.broadcast_to(rates, (studies, seeds, prompts))) / samples


def coverage(method, simulated: np.ndarray, truth: float) -> float:
    """The share of simulated studies (``[studies, seeds, prompts]``) whose interval from ``method``
    (``values -> Interval``) contains ``truth``."""
    hits = [(iv := method(study)).low <= truth <= iv.high for study in simulated]
    return float(np.mean(hits))
