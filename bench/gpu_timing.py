"""Timing on a CUDA device for bench/kernels_gpu.py: many back-to-back launches per event pair,
captured in a CUDA graph where the call allows it, per-launch medians and spreads, the
device-to-device copy bandwidth, and the names of the kernels a call launches.
"""

from __future__ import annotations

import math
import statistics
from typing import Optional

from gpu_jobs import error_text


def summarize(per_launch_us: list[float]) -> dict:
    """Median and spread of per-launch times (microseconds)."""
    values = sorted(per_launch_us)
    if not values:
        raise ValueError("no timing samples")
    quartiles = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median_us": statistics.median(values), "min_us": values[0], "max_us": values[-1],
            "q1_us": quartiles[0], "q3_us": quartiles[2], "samples": len(values)}


def per_launch_us(sample_ms: list[float], launches: int) -> list[float]:
    """Event-pair milliseconds around `launches` back-to-back launches -> microseconds per launch."""
    if launches < 1:
        raise ValueError(f"launches={launches} must be >= 1")
    return [1000.0 * ms / launches for ms in sample_ms]


def launches_for(estimate_us: float, at_least: int, target_ms: float = 2.0, cap: int = 2000) -> int:
    """Launches per timed sample: enough for ~target_ms of device work, and at least `at_least`."""
    wanted = math.ceil(target_ms * 1000.0 / max(estimate_us, 0.1))
    return int(min(cap, max(at_least, wanted, 1)))


def _events_ms(fn, repeats: int) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_launches(fn, *, rotate: int, samples: int, warmup: int = 3, graph: bool = True,
                  target_ms: float = 2.0) -> dict:
    """Per-launch time of fn() (which enqueues one launch on the current stream, advancing its inputs).

    graph=True: one CUDA graph holds `launches` back-to-back calls (>= rotate, so every input
    buffer is used each replay); each sample is one replay between two events. graph=False or a
    failed capture: event pairs around `launches` eager calls.
    """
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    estimate_us = 1000.0 * _events_ms(fn, max(1, rotate)) / max(1, rotate)
    launches = launches_for(estimate_us, at_least=rotate, target_ms=target_ms)
    method, note = "event-loop", None
    replay = None
    if graph:
        try:
            g = torch.cuda.CUDAGraph()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                fn()  # warm-up on the side stream, as capture needs
            torch.cuda.current_stream().wait_stream(stream)
            torch.cuda.synchronize()
            with torch.cuda.graph(g):
                for _ in range(launches):
                    fn()
            g.replay()
            torch.cuda.synchronize()
            replay, method = g.replay, "cuda-graph"
        except Exception as exc:  # capture unsupported for this call: time it eagerly
            torch.cuda.synchronize()
            note = f"graph capture failed ({error_text(exc)[:200]}); timed eagerly"
    if replay is not None:
        times = [_events_ms(replay, 1) for _ in range(samples)]
        del g
    else:
        times = [_events_ms(fn, launches) for _ in range(samples)]
    row = summarize(per_launch_us(times, launches))
    row.update(launches_per_sample=launches, timing=method, note=note)
    return row


def copy_bandwidth(l2_bytes: int) -> dict:
    """Device-to-device copy bandwidth (bytes read + written per second) on buffers of >= 8x L2."""
    import torch

    n = max(512 << 20, 8 * l2_bytes)
    buffers = {"src": torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)}
    buffers["dst"] = torch.empty_like(buffers["src"])
    row = time_launches(lambda: buffers["dst"].copy_(buffers["src"]), rotate=1, samples=10, graph=False,
                        target_ms=5.0)
    buffers.clear()
    torch.cuda.empty_cache()
    return {"GBps": 2 * n / (row["median_us"] * 1e-6) / 1e9, "bytes": 2 * n, "median_us": row["median_us"]}


def kernel_names(fn) -> Optional[list[str]]:
    """Names of the CUDA kernels one fn() call launches (torch.profiler); None where profiling fails."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        names = []
        for event in prof.events():
            if getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA and event.name not in names:
                names.append(event.name)
        return names or None
    except Exception:
        return None
