"""Intervals that survive another machine: a bootstrap over seeds and prompts, paired differences,
and a verdict that says "inconclusive" whenever the interval straddles the claim's threshold.

Why: float results differ between CPUs, so every training run diverges from the first step; the
spread between machines is about the spread between seeds. A number is therefore reported with a
95 % interval from a two-level (hierarchical) bootstrap, resampling what varies from run to run:

1. draw S seeds with replacement from the S seeds run;
2. within each drawn seed, draw P prompts with replacement from its P prompts;
3. the statistic is the mean over the drawn (seed, prompt) values;

repeated ``n_boot`` times; the interval holds the 2.5 and 97.5 percentiles (Efron's percentile
interval). "A beats B" uses the *paired* difference: A and B on the same seeds and prompts, the
difference taken per (seed, prompt) before resampling, so the shared noise of a prompt cancels.

Values are given as an array ``[S, P]``: one row per seed, one column per prompt (each cell the
mean over that prompt's sampled answers). ``NaN`` cells (a prompt a run did not answer) are not
allowed: compare runs on the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
N_BOOT = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate (the mean over every seed and prompt) with its bootstrap interval."""

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


def bootstrap(values, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """The mean of ``values`` ``[S, P]`` with a two-level bootstrap interval (see the module doc)."""
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


def paired_difference(a, b, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """``mean(a - b)`` with its interval, ``a`` and ``b`` measured on the same seeds and prompts.

    ``b`` may also be one row ``[1, P]`` (a baseline judged once, e.g. the shared SFT start): it is
    then compared with every seed of ``a``.
    """
    a, b = _as_matrix(a), _as_matrix(b)
    if b.shape[0] == 1 and a.shape[0] > 1:
        b = np.repeat(b, a.shape[0], axis=0)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: a and b must cover the same seeds and prompts, got {a.shape}, {b.shape}")
    return bootstrap(a - b, n_boot, level, seed)


AGREES, DISAGREES, INCONCLUSIVE = "agrees", "does not agree", "inconclusive"


def verdict(interval: Interval, threshold: float = 0.0, direction: int = +1) -> str:
    """"agrees" when the whole interval lies on the claimed side of ``threshold`` (above it for
    ``direction=+1``, below for ``-1``), "does not agree" when it lies wholly on the other side,
    else "inconclusive". An interval touching the threshold is inconclusive."""
    if direction not in (+1, -1):
        raise ValueError(f"direction: expected +1 or -1, got {direction}")
    low, high = (interval.low - threshold) * direction, (interval.high - threshold) * direction
    low, high = min(low, high), max(low, high)
    if low > 0:
        return AGREES
    if high < 0:
        return DISAGREES
    return INCONCLUSIVE
