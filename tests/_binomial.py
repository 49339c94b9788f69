"""Thresholds for counts on fresh random images, from the binomial distribution.

Tests that score a model on images drawn fresh each run (held_out_images, a new offset per session)
see a count of misses (wrong labels, int8 top-1 flips) that varies from run to run. A fixed threshold
picked from one run fails now and then by chance (0.97 top-1 agreement on 80 images: one run in 130).
``min_fraction`` gives the threshold at which a model that misses at the measured rate fails with
probability at most ``FALSE_ALARM``. The rate is the Clopper-Pearson upper bound (99.9 %) of a
measurement on 2400 images, so the threshold holds for the true rate too; a real regression (a broken
scale, a wrong layer) misses several times more often and fails.
"""

from __future__ import annotations

import math

#: the chance of a false failure per assertion that the thresholds allow
FALSE_ALARM = 1e-4
#: the confidence of the upper bound on a measured rate
CONFIDENCE = 0.999

#: top-1 flips of the reference ViT's int8 QDQ file (quantize, 30 calibration images, the conftest
#: fixture) against PyTorch, on held-out images from start 20000 (2026-12-07): (flips, images)
INT8_FLIPS = (12, 2400)
#: errors of the reference ViT (the weaker of the two reference models) on held-out images from start
#: 30000 (2026-12-07; elfatt_cswin_micro: 54): (errors, images)
REFERENCE_ERRORS = (150, 2400)
#: errors of the reference ViT on its weakest class (square) on 12000 held-out images (2026-12-07)
CLASS_ERRORS = (193, 1200)


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(X > k) for X ~ Binomial(n, p), summed in log space (no overflow for large n)."""
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0 if k < n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k + 1, n + 1)]
    if not terms:
        return 0.0
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def upper_rate(misses: int, n: int, confidence: float = CONFIDENCE) -> float:
    """The Clopper-Pearson upper confidence bound of a rate measured as ``misses`` in ``n``: the rate at
    which ``misses`` or fewer would be seen with probability ``1 - confidence`` (bisection)."""
    low, high = misses / n, 1.0
    for _ in range(100):
        mid = (low + high) / 2
        if 1.0 - binomial_tail(n, mid, misses) > 1.0 - confidence:
            low = mid
        else:
            high = mid
    return high


def min_fraction(n: int, measured: tuple[int, int], false_alarm: float = FALSE_ALARM) -> float:
    """The lowest fraction of ``n`` draws to accept: with each draw missing at (at most) the upper bound of
    the ``measured`` (misses, draws) rate, more misses than ``n * (1 - it)`` have probability <= ``false_alarm``."""
    misses, draws = measured
    if not (n > 0 and 0 <= misses <= draws and draws > 0 and 0 < false_alarm < 1):
        raise ValueError(f"need n > 0, 0 <= misses <= draws, 0 < false_alarm < 1; got n={n}, measured={measured}, "
                         f"false_alarm={false_alarm}")
    rate = upper_rate(misses, draws)
    allowed = next(k for k in range(n + 1) if binomial_tail(n, rate, k) <= false_alarm)
    return (n - allowed) / n


def max_misses(n: int, measured: tuple[int, int], false_alarm: float = FALSE_ALARM) -> int:
    """The most misses of ``n`` draws to accept (``min_fraction`` as a count)."""
    return round(n * (1 - min_fraction(n, measured, false_alarm)))
