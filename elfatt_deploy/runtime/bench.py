"""Latency statistics and measurement helpers for ``elfatt-deploy bench`` and docker/parity.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence


@dataclass(frozen=True)
class LatencyStats:
    iterations: int
    batch: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    throughput_per_s: float  # images per second at the mean latency

    def to_dict(self) -> dict:
        return asdict(self)


def latency_stats(latencies_s: Sequence[float], *, batch: int = 1) -> LatencyStats:
    """Percentiles (linear interpolation, numpy's default) of per-iteration latencies in seconds."""
    import numpy as np  # noqa: PLC0415

    values = np.asarray(list(latencies_s), dtype=np.float64) * 1e3
    if values.size == 0:
        raise ValueError("no latencies measured: run at least one iteration (--iterations >= 1)")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("latencies must be finite and non-negative")
    if batch < 1:
        raise ValueError(f"batch {batch} must be >= 1")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    mean = float(values.mean())
    return LatencyStats(
        iterations=int(values.size), batch=int(batch), mean_ms=mean, std_ms=float(values.std()),
        min_ms=float(values.min()), p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), max_ms=float(values.max()),
        throughput_per_s=(batch * 1e3 / mean) if mean > 0 else float("inf"),
    )


def measure(fn: Callable[[], object], *, iterations: int, warmup: int, sync: Optional[Callable[[], None]] = None,
            progress: bool = True, desc: str = "bench") -> list[float]:
    """Runs ``fn`` ``warmup`` times, then ``iterations`` timed times; ``sync`` waits for the device each time."""
    if iterations < 1:
        raise ValueError(f"--iterations {iterations} must be >= 1")
    if warmup < 0:
        raise ValueError(f"--warmup {warmup} must be >= 0")
    from tqdm.auto import tqdm  # noqa: PLC0415

    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in tqdm(range(iterations), desc=desc, disable=None if progress else True, leave=False):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def process_gpu_memory_mb(pid: Optional[int] = None) -> Optional[float]:
    """This process's device memory per nvidia-smi (includes TensorRT's own allocations), or None."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        proc = subprocess.run([smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    pid = os.getpid() if pid is None else pid
    for line in proc.stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid) and fields[1].replace(".", "", 1).isdigit():
            return float(fields[1])
    return None


def gpu_memory(torch_module=None) -> dict:
    """Peak torch allocations and this process's device memory (nvidia-smi), whichever are available."""
    result: dict = {"torch_max_allocated_mb": None, "process_used_mb": None, "notes": []}
    if torch_module is not None and torch_module.cuda.is_available():
        result["torch_max_allocated_mb"] = torch_module.cuda.max_memory_allocated() / 2**20
        result["notes"].append("torch_max_allocated_mb counts torch allocations only (inputs/outputs, not TensorRT's own)")
    result["process_used_mb"] = process_gpu_memory_mb()
    if result["process_used_mb"] is None:
        result["notes"].append("nvidia-smi per-process memory unavailable (no GPU, or a Jetson, where it is not reported)")
    return result
