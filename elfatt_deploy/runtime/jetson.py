"""Jetson power mode and clock state (``nvpmodel -q``, ``jetson_clocks --show``).

Latency on a Jetson depends on the power mode (nvpmodel) and on whether DVFS is
allowed to lower clocks (``sudo jetson_clocks`` pins CPU, GPU and EMC at their
maximum). Benchmarks record both and warn when clocks are not fixed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional

from ..engine.environment import NV_TEGRA_RELEASE, jetson_release


def is_jetson(release_file: Path = NV_TEGRA_RELEASE) -> bool:
    return Path(release_file).is_file()


def parse_nvpmodel(text: str) -> Optional[dict]:
    """``NV Power Mode: MAXN`` followed by the mode id on the next line."""
    match = re.search(r"NV Power Mode:\s*(.+?)\s*$", text, re.MULTILINE)
    if not match:
        return None
    mode_id = None
    rest = text[match.end():].strip().splitlines()
    if rest and rest[0].strip().isdigit():
        mode_id = int(rest[0].strip())
    return {"name": match.group(1), "id": mode_id}


def _freqs(line: str) -> dict:
    return {k.lower(): int(v) for k, v in re.findall(r"(MinFreq|MaxFreq|CurrentFreq|FreqOverride)=(\d+)", line)}


def parse_jetson_clocks(text: str) -> dict:
    """Parses ``jetson_clocks --show``: per-CPU, GPU and EMC min/max/current frequencies."""
    state: dict = {"cpus": {}, "gpu": None, "emc": None, "power_mode": None}
    for line in text.splitlines():
        line = line.strip()
        cpu = re.match(r"(cpu\d+):\s*Online=(\d)", line)
        if cpu:
            state["cpus"][cpu.group(1)] = dict(_freqs(line), online=cpu.group(2) == "1")
        elif line.startswith("GPU "):
            state["gpu"] = _freqs(line)
        elif line.startswith("EMC "):
            state["emc"] = _freqs(line)
        elif line.startswith("NV Power Mode:"):
            state["power_mode"] = line.split(":", 1)[1].strip()
    return state


def clocks_fixed(state: dict) -> Optional[bool]:
    """True when GPU and online CPUs run at min == max and EMC is overridden; None when unknown."""
    gpu = state.get("gpu")
    if not gpu or "minfreq" not in gpu:
        return None
    if gpu["minfreq"] != gpu.get("maxfreq"):
        return False
    for cpu in state.get("cpus", {}).values():
        if cpu.get("online") and cpu.get("minfreq") != cpu.get("maxfreq"):
            return False
    emc = state.get("emc") or {}
    if "freqoverride" in emc and emc["freqoverride"] != 1:
        return False
    return True


def _run(cmd: list[str], runner: Callable = subprocess.run) -> tuple[Optional[str], Optional[str]]:
    exe = shutil.which(cmd[0]) or (f"/usr/bin/{cmd[0]}" if Path(f"/usr/bin/{cmd[0]}").exists() else None)
    if exe is None:
        return None, f"{cmd[0]} not found on PATH"
    try:
        proc = runner([exe, *cmd[1:]], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{cmd[0]} failed: {exc}"
    if proc.returncode != 0:
        hint = " (needs root: run with sudo)" if "root" in (proc.stderr + proc.stdout).lower() or proc.returncode == 1 else ""
        return None, f"`{' '.join(cmd)}` exited with {proc.returncode}{hint}: {(proc.stderr or proc.stdout).strip()[:200]}"
    return proc.stdout, None


def power_state(runner: Callable = subprocess.run) -> Optional[dict]:
    """Power mode and clock state on a Jetson, None elsewhere. Never raises for a missing tool."""
    release = jetson_release()
    if release is None:
        return None
    state: dict = {"release": release, "nvpmodel": None, "clocks": None, "clocks_fixed": None, "notes": []}
    out, err = _run(["nvpmodel", "-q"], runner)
    if out is not None:
        state["nvpmodel"] = parse_nvpmodel(out)
    else:
        state["notes"].append(err)
    out, err = _run(["jetson_clocks", "--show"], runner)
    if out is not None:
        clocks = parse_jetson_clocks(out)
        state["clocks"] = clocks
        state["clocks_fixed"] = clocks_fixed(clocks)
        if state["nvpmodel"] is None and clocks.get("power_mode"):
            state["nvpmodel"] = {"name": clocks["power_mode"], "id": None}
    else:
        state["notes"].append(err)
    return state


def clock_warning(state: Optional[dict]) -> Optional[str]:
    """The warning to print for a benchmark on a Jetson whose clocks are not (known to be) fixed."""
    if state is None:
        return None
    mode = (state.get("nvpmodel") or {}).get("name", "unknown")
    if state.get("clocks_fixed") is True:
        return None
    if state.get("clocks_fixed") is False:
        return (f"Jetson clocks are not fixed (power mode {mode}): latency varies with DVFS; run `sudo jetson_clocks` "
                "before benchmarking (and `sudo nvpmodel -m 0` for the maximum power mode)")
    return (f"could not read the Jetson clock state (power mode {mode}): run the benchmark with sudo, or after "
            "`sudo jetson_clocks`, so that the result states fixed clocks")
