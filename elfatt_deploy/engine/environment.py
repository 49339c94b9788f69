"""What this machine runs: TensorRT version, GPU, Jetson (L4T / JetPack) release.

Each probe returns ``None`` (or a dict with an ``error``) when the thing is absent;
nothing here raises because a library or device is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")

#: L4T release (major.minor) -> JetPack release, for the ones this toolkit supports.
L4T_TO_JETPACK = {
    "36.3": "6.0",
    "36.4": "6.1/6.2",  # 36.4.0 = JetPack 6.1, 36.4.3 = 6.2, 36.4.4 = 6.2.1
    "38.2": "7.0",
}
_L4T_PATCH_TO_JETPACK = {"36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1"}


def tensorrt_version() -> Optional[str]:
    """The importable TensorRT Python package's version, or None."""
    try:
        import tensorrt as trt  # noqa: PLC0415
    except Exception:  # ImportError, or a broken install raising OSError on libnvinfer
        return None
    return str(getattr(trt, "__version__", "unknown"))


def parse_nv_tegra_release(text: str) -> Optional[dict]:
    """Parses ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 4.0, ...``)."""
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return None
    release = f"{match.group(1)}.{match.group(2)}"
    parts = release.split(".")
    major_minor = ".".join(parts[:2])
    if len(parts) == 2:
        release += ".0"
    board = re.search(r"BOARD:\s*([^,\s]+)", text)
    return {
        "l4t_release": release,
        "jetpack": _L4T_PATCH_TO_JETPACK.get(release) or L4T_TO_JETPACK.get(major_minor, "unknown"),
        "board": board.group(1) if board else None,
    }


def jetson_release(path: Path = NV_TEGRA_RELEASE) -> Optional[dict]:
    """L4T / JetPack release when running on a Jetson, else None."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    return parse_nv_tegra_release(text)


def _nvidia_smi_gpu(index: int = 0) -> Optional[dict]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        proc = subprocess.run(
            [smi, f"--id={index}", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    fields = [f.strip() for f in proc.stdout.strip().splitlines()[0].split(",")]
    if len(fields) < 2:
        return None
    return {"name": fields[0], "compute_capability": fields[1], "driver": fields[2] if len(fields) > 2 else None,
            "source": "nvidia-smi"}


def gpu_info(index: int = 0) -> Optional[dict]:
    """Name and compute capability (``"8.7"``) of CUDA device ``index``, or None without a GPU.

    Asks PyTorch first (works on Jetson, where nvidia-smi reports little), then nvidia-smi.
    """
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            major, minor = torch.cuda.get_device_capability(index)
            return {"name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}", "source": "torch"}
    except Exception:
        pass
    return _nvidia_smi_gpu(index)


def current_environment(plugin_version: Optional[str] = None, *, gpu_index: int = 0) -> dict:
    """The running environment in the shape :func:`compat.check_compatibility` compares."""
    return {
        "tensorrt_version": tensorrt_version(),
        "gpu": gpu_info(gpu_index),
        "jetson": jetson_release(),
        "plugin_version": plugin_version,
    }
