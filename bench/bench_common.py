"""Helpers shared by the CPU benchmark scripts (onnxruntime_cpu.py, openvino_cpu.py).

Importing this module imports nothing heavy (no torch, no elfatt_deploy), so the
scripts' worker processes can measure their memory from a small baseline.
"""

from __future__ import annotations

import platform
import resource
from pathlib import Path
from typing import Mapping, Sequence


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    VmHWM of /proc/self/status belongs to this program's address space; ru_maxrss
    would carry over the (large) peak of the parent across fork + exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else platform.processor()."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def plot_latency_memory(sizes: Sequence[int], series: Mapping[str, dict], path: Path, title: str) -> bool:
    """Two log-scale panels (median latency, peak memory growth) against the input size.

    ``series``: label -> {"ms": [...], "mib": [...], "marker": "o", "style": "-"}. Writes the PNG
    atomically; returns False (and says so) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)")
        return False
    from elfatt_deploy.atomic import atomic_output

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10 if len(series) <= 2 else 11, 4))
    for label, line in series.items():
        style = line.get("style", "-")
        ax1.plot(sizes, line["ms"], style, marker=line.get("marker", "o"), label=label)
        ax2.plot(sizes, line["mib"], style, marker=line.get("marker", "o"), label=label)
    for ax, label in ((ax1, "median latency (ms)"), (ax2, "peak memory growth (MiB)")):
        ax.set_xlabel("input size (pixels, square)")
        ax.set_ylabel(label)
        ax.set_xticks(list(sizes))
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8 if len(series) > 2 else None)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return True
