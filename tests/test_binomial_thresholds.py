"""The thresholds for fresh-image counts (tests/_binomial.py) against the definitions they implement."""

import math

import pytest

from _binomial import binomial_tail, max_misses, min_fraction, upper_rate


@pytest.mark.parametrize("n,p", [(1, 0.3), (10, 0.05), (80, 0.01), (80, 0.0792), (200, 0.5)])
def test_the_tail_is_the_exact_sum(n, p):
    for k in range(-1, n + 1):
        exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1, n + 1))
        assert binomial_tail(n, p, k) == pytest.approx(exact, rel=1e-9, abs=1e-300)


def test_large_counts_do_not_overflow():
    assert 0.09 < binomial_tail(2400, 0.01, 30) < 0.1  # scipy.stats.binom.sf(30, 2400, 0.01) = 0.0948
    assert binomial_tail(100_000, 0.5, 60_000) < 1e-300


def test_the_upper_bound_is_the_rate_where_the_count_becomes_unlikely():
    for misses, n in [(0, 50), (12, 2400), (150, 2400)]:
        bound = upper_rate(misses, n)
        assert misses / n < bound < 1
        assert 1 - binomial_tail(n, bound, misses) == pytest.approx(1e-3, rel=1e-6)  # 99.9 % confidence


def test_thresholds_allow_what_the_rate_explains_and_no_more():
    measured = (12, 2400)
    fraction, allowed = min_fraction(80, measured), max_misses(80, measured)
    assert fraction == (80 - allowed) / 80 and 0 < allowed < 80
    rate = upper_rate(*measured)
    assert binomial_tail(80, rate, allowed) <= 1e-4 < binomial_tail(80, rate, allowed - 1)
    assert min_fraction(80, (150, 2400)) < fraction  # a higher rate allows more
    with pytest.raises(ValueError, match="measured=\\(3, 2\\)"):
        min_fraction(80, (3, 2))
