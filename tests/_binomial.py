"""Thresholds for counts on fresh random images, from the binomial distribution.

Tests that score a model on images drawn fresh each run (held_out_images, a new offset per session)
see a count of misses (wrong labels, int8 top-1 flips) that varies from run to run. A fixed threshold
picked from one run fails now and then by chance (0.97 top-1 agreement on 80 images: one run in 130).
``min_fraction`` gives the threshold at which a model that misses at ``miss_rate`` fails with
probability at most ``false_alarm``; a real regression (a broken scale, a wrong layer) misses far
more often and still fails.
"""

from __future__ import annotations

import math

#: the chance of a false failure per assertion that the thresholds below allow
FALSE_ALARM = 1e-6

#: top-1 flips of the reference ViT's int8 QDQ file (quantize, 30 calibration images, the conftest
#: fixture) against PyTorch: 12 of 2400 held-out images (start 20000..22399, 2026-12-07), doubled
INT8_FLIP_RATE = 0.01
#: errors of the reference models on held-out images (2400 from start 30000, 2026-12-07):
#: elfatt_vit_micro 150 (0.0625), elfatt_cswin_micro 54 (0.0225); the ViT's, times 1.5
REFERENCE_ERROR_RATE = 0.094


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(X > k) for X ~ Binomial(n, p)."""
    return max(0.0, 1.0 - sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)))


def min_fraction(n: int, miss_rate: float, false_alarm: float = FALSE_ALARM) -> float:
    """The lowest fraction of ``n`` to accept: more misses than ``n * (1 - it)`` have probability
    <= ``false_alarm`` when each of ``n`` independent draws misses with probability ``miss_rate``."""
    if not (n > 0 and 0 <= miss_rate < 1 and 0 < false_alarm < 1):
        raise ValueError(f"need n > 0, 0 <= miss_rate < 1, 0 < false_alarm < 1; got {n}, {miss_rate}, {false_alarm}")
    allowed = next(k for k in range(n + 1) if binomial_tail(n, miss_rate, k) <= false_alarm)
    return (n - allowed) / n
