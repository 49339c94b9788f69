import numpy as np
import pytest

from elfatt_deploy.runtime.bench import latency_stats, measure


def test_stats_against_numpy(rng):
    values = rng.uniform(0.001, 0.02, size=int(rng.integers(50, 500)))
    batch = int(rng.integers(1, 9))
    s = latency_stats(values, batch=batch)
    ms = values * 1e3
    assert s.iterations == len(values) and s.batch == batch
    assert s.p50_ms == pytest.approx(np.median(ms)) and s.p99_ms == pytest.approx(np.percentile(ms, 99))
    assert s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.throughput_per_s == pytest.approx(batch * 1e3 / ms.mean())


@pytest.mark.parametrize("values, batch, match", [([], 1, "at least one"), ([0.1, -1.0], 1, "non-negative"),
                                                   ([0.1, float("nan")], 1, "finite"), ([0.1], 0, "batch 0")])
def test_stats_errors(values, batch, match):
    with pytest.raises(ValueError, match=match):
        latency_stats(values, batch=batch)


def test_measure_counts_calls_and_syncs(rng):
    calls, syncs = [], []
    iterations, warmup = int(rng.integers(3, 20)), int(rng.integers(0, 5))
    times = measure(lambda: calls.append(1), iterations=iterations, warmup=warmup, sync=lambda: syncs.append(1), progress=False)
    assert len(times) == iterations and len(calls) == iterations + warmup and len(syncs) == iterations + 1
    assert all(t >= 0 for t in times)
    with pytest.raises(ValueError, match="--iterations 0"):
        measure(lambda: None, iterations=0, warmup=0)
    with pytest.raises(ValueError, match="--warmup -1"):
        measure(lambda: None, iterations=1, warmup=-1)
