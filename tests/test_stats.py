"""Seed-level t intervals (and the bootstrap they replaced), paired differences, the verdict rule and the
power calculation, on hand-computed cases; and the coverage of both interval methods on simulated studies."""

import numpy as np
import pytest

from bfpo import stats


def test_constant_values_give_a_zero_width_interval():
    iv = stats.bootstrap(np.full((3, 5), 0.4))
    assert (iv.low, iv.mean, iv.high) == pytest.approx((0.4, 0.4, 0.4)) and (iv.seeds, iv.prompts) == (3, 5)


def test_two_seeds_constant_within_seed_by_hand():
    """Seed 0 scores 1 on both prompts, seed 1 scores 0: resampling prompts changes nothing, and
    resampling the two seeds gives a mean of 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4. So the
    2.5 % and 97.5 % percentiles are 0 and 1, and about half the replicates are 1/2."""
    values = [[1.0, 1.0], [0.0, 0.0]]
    iv = stats.bootstrap(values, n_boot=4000)
    assert (iv.mean, iv.low, iv.high) == (0.5, 0.0, 1.0)


def test_one_seed_bernoulli_prompts_by_hand():
    """One seed, 4 prompts scoring 1, 1, 1, 0: each replicate's mean is k/4, k ~ Binomial(4, 3/4).
    P(k <= 1) = 13/256 = 5.1 % and P(k = 0) = 0.4 %, so the 2.5 % percentile is 1/4; P(k = 4) =
    81/256 = 32 %, so the 97.5 % percentile is 1."""
    iv = stats.bootstrap([[1, 1, 1, 0]], n_boot=20000)
    assert (iv.mean, iv.low, iv.high) == (0.75, 0.25, 1.0)


def test_interval_narrows_with_more_seeds_and_contains_the_mean():
    rng = np.random.default_rng(1)
    few = stats.bootstrap(rng.normal(0.5, 0.2, size=(3, 20)))
    many = stats.bootstrap(rng.normal(0.5, 0.2, size=(30, 20)))
    assert few.low <= few.mean <= few.high and many.low <= many.mean <= many.high
    assert many.high - many.low < few.high - few.low


def test_paired_difference_cancels_shared_prompt_noise():
    """Prompt difficulty varies a lot, but A is exactly B + 0.1 on every (seed, prompt): the paired
    interval is the single point 0.1, while the unpaired intervals of A and B overlap widely."""
    b = np.tile(np.linspace(0, 0.8, 10), (4, 1))
    a = b + 0.1
    d = stats.paired_difference(a, b)
    assert (d.mean, d.low, d.high) == (pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1))
    assert stats.bootstrap(a).low < stats.bootstrap(b).high


def test_paired_difference_against_a_single_baseline_row():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    d = stats.paired_difference(a, [[0.0, 0.0]])
    assert d.mean == pytest.approx(0.75) and d.seeds == 2
    with pytest.raises(ValueError, match="same seeds and prompts"):
        stats.paired_difference(a, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        stats.bootstrap([[1.0, float("nan")]])


@pytest.mark.parametrize(
    "low, high, threshold, direction, expected",
    [
        (0.01, 0.2, 0.0, +1, "agrees"),
        (-0.2, -0.01, 0.0, +1, "does not agree"),
        (-0.05, 0.2, 0.0, +1, "inconclusive"),
        (0.0, 0.2, 0.0, +1, "inconclusive"),  # touching the threshold is not enough
        (-0.2, -0.01, 0.0, -1, "agrees"),  # a claimed fall
        (-0.04, 0.02, -0.05, +1, "agrees"),  # "kept": above -0.05
        (-0.09, 0.02, -0.05, +1, "inconclusive"),
    ],
)
def test_verdict_follows_the_interval(low, high, threshold, direction, expected):
    iv = stats.Interval((low + high) / 2, low, high, 5, 60)
    assert stats.verdict(iv, threshold, direction) == expected


@pytest.mark.parametrize(
    "df, level, expected",  # Student's t table values
    [(1, 0.95, 12.706), (2, 0.95, 4.303), (4, 0.95, 2.776), (9, 0.95, 2.262), (30, 0.95, 2.042), (4, 0.6, 0.941)],
)
def test_t_quantiles_match_the_table(df, level, expected):
    assert stats.t_two_sided(level, df) == pytest.approx(expected, abs=5e-4)


def test_seed_level_t_interval_by_hand():
    """Seed means 0.5, 1.0, 0.0 (over their prompts): mean 0.5, sd 0.5, half-width t(0.975, 2) 0.5 / sqrt(3)."""
    iv = stats.interval([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    half = 4.3027 * 0.5 / 3**0.5
    assert (iv.mean, iv.low, iv.high) == pytest.approx((0.5, 0.5 - half, 0.5 + half), abs=1e-4)
    assert (iv.seeds, iv.prompts) == (3, 2)
    one = stats.interval([[1.0, 0.0]])  # one seed: nothing known about the spread between seeds
    assert one.low == float("-inf") and one.high == float("inf") and stats.verdict(one) == "inconclusive"


def test_minimal_detectable_effect_by_hand():
    """(t(0.975, 9) + t(0.80, 9)) sd / sqrt(10) = (2.262 + 0.883) 0.1 / 3.162 = 0.0995 at 10 seeds."""
    assert stats.minimal_detectable_effect(0.1, 10) == pytest.approx((2.2622 + 0.8834) * 0.1 / 10**0.5, abs=1e-4)
    assert stats.minimal_detectable_effect(0.1, 20) < stats.minimal_detectable_effect(0.1, 10)
    assert stats.minimal_detectable_effect(0.1, 1) == float("inf")
    # half-width t(S-1) sd / sqrt(S) <= 0.08 at sd 0.24: 38 seeds (37 give 0.08002)
    assert stats.seeds_for_half_width(0.24, 0.08) == 38 and stats.seeds_for_half_width(0.08, 0.08) == 7


@pytest.mark.parametrize("seeds", [5, 10])
def test_the_seed_level_t_interval_covers_the_truth_95_percent_of_the_time(seeds):
    """2,000 simulated studies shaped like the SafeHelp study's harmlessness (a seed sd of 0.24 around 0.5, as
    BFPO's over 5 seeds; 36 harmful prompts with 4 answers each, as before; and 216 prompts): the 95 % t
    interval contains the true mean in 93-97 % of them (measured: 95.0 % and 94.4 % at 5 seeds, 93.9 % and
    94.6 % at 10; the two-level bootstrap below: 84.8 % at 5 seeds, 90.1 % at 10 on 216 prompts)."""
    for prompts, samples in ((36, 4), (216, 2)):
        simulated = stats.simulate_studies(2000, seeds, prompts, mean=0.5, seed_sd=0.24, samples=samples)
        assert 0.93 <= stats.coverage(stats.interval, simulated, truth=0.5) <= 0.97


def test_the_two_level_bootstrap_under_covers_over_5_seeds():
    """The interval the study used before, on the same kind of studies: at 5 seeds it covers the truth in
    about 85 % of them (measured 84.8 % with 1,000 resamples each), below the 93 % the t interval keeps, so
    the coverage test above would fail for it."""
    simulated = stats.simulate_studies(2000, 5, 36, mean=0.5, seed_sd=0.24, samples=4)
    covered = stats.coverage(lambda v: stats.bootstrap(v, n_boot=1000), simulated, truth=0.5)
    assert covered < 0.90
    with pytest.raises(ValueError, match="sd"):
        stats.simulate_studies(10, 5, 36, mean=0.5, seed_sd=0.6)
