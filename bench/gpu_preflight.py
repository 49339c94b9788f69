"""The preflight of bench/kernels_gpu.py: everything the extension build and the GPU run need,
checked in seconds before anything is built, each check with what it found or the fix.

Probe is what the checks look at on this machine; the self-test hands run_preflight a fake.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from gpu_jobs import log


@dataclass
class Check:
    check: str
    ok: bool
    detail: str


class Probe:
    """What the preflight looks at on this machine; --self-test substitutes a fake."""

    def torch(self):
        import torch

        return torch

    def cuda_home(self) -> Path:
        from elfatt_deploy.op import cuda_backend

        return cuda_backend.find_cuda_home()

    def run(self, cmd: list[str], timeout: float = 30.0) -> tuple[int, str]:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError as exc:
            return 127, str(exc)
        except subprocess.TimeoutExpired:
            return 124, f"{cmd[0]} did not answer in {timeout:.0f} s"
        return proc.returncode, proc.stdout + proc.stderr

    def which(self, name: str) -> Optional[str]:
        return shutil.which(name)

    def python_include(self) -> Path:
        return Path(sysconfig.get_paths()["include"])

    def arch_flags(self) -> tuple[list[str], list[str]]:
        from elfatt_deploy.op import cuda_backend

        return cuda_backend.cuda_arch_flags()

    def sources(self) -> list[Path]:
        from elfatt_deploy.op import cuda_backend

        return cuda_backend.source_files()

    def build_root(self) -> Path:
        env = os.environ.get("TORCH_EXTENSIONS_DIR")
        return Path(env) if env else Path.home() / ".cache" / "torch_extensions"

    def free_bytes(self, path: Path) -> int:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free


def _arch(text: str) -> tuple[int, int]:
    """(major, minor) of "9.0" / "9.0a"."""
    major, minor = re.match(r"(\d+)\.(\d+)", text).groups()
    return int(major), int(minor)


def _version(text: str) -> Optional[tuple[int, int]]:
    match = re.search(r"release (\d+)\.(\d+)", text) or re.search(r"^(\d+)\.(\d+)", text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def run_preflight(probe: Probe, sanitize: bool = False) -> list[Check]:
    """Every check, each with what was found or the fix. Fast: a few subprocess calls with timeouts."""
    checks: list[Check] = []

    def add(name, ok, detail):
        checks.append(Check(name, bool(ok), detail))
        return ok

    torch = probe.torch()
    cuda_torch = torch.version.cuda
    if not add("PyTorch with CUDA", cuda_torch is not None,
               f"torch {torch.__version__}, CUDA {cuda_torch}" if cuda_torch else
               f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None): install a CUDA build "
               "of PyTorch (https://pytorch.org/get-started/locally/)"):
        return checks
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not add("CUDA GPU visible", count > 0,
               f"{count} GPU(s); device 0: {torch.cuda.get_device_name(0)}, compute capability "
               f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}" if count else
               "no CUDA GPU visible (torch.cuda.is_available() is False): check nvidia-smi, the driver and "
               "CUDA_VISIBLE_DEVICES"):
        return checks
    capability = torch.cuda.get_device_capability(0)
    gpu_arch = f"{capability[0]}.{capability[1]}"

    nvcc = None
    try:
        nvcc = probe.cuda_home() / "bin" / "nvcc"
    except Exception as exc:  # CudaBackendError with the fix
        add("nvcc", False, str(exc))
    if nvcc is not None:
        rc, out = probe.run([str(nvcc), "--version"])
        found = _version(out) if rc == 0 else None
        if add("nvcc", found is not None, f"{nvcc}: CUDA {found[0]}.{found[1]}" if found else
               f"{nvcc} --version failed (exit {rc}): {out.strip()[-300:]}; set CUDA_HOME to a working CUDA toolkit"):
            wanted = _version(cuda_torch)
            add("nvcc matches PyTorch's CUDA", wanted is None or found[0] == wanted[0],
                f"nvcc {found[0]}.{found[1]}, PyTorch built with CUDA {cuda_torch}" if wanted is None or
                found[0] == wanted[0] else
                f"nvcc is CUDA {found[0]}.{found[1]} but PyTorch was built with CUDA {cuda_torch}: torch's extension "
                f"builder refuses another major version; set CUDA_HOME to a CUDA {wanted[0]}.x toolkit")
            try:
                flags, archs = probe.arch_flags()
            except Exception as exc:
                add("architectures to build", False, str(exc))
                archs = None
            if archs is not None:
                # Machine code for the GPU's arch, or PTX of an arch at or below it (the driver compiles it).
                covered = any(_arch(a) == _arch(gpu_arch) for a in archs) or any(
                    f"code=compute_{a.replace('.', '')}" in " ".join(flags) and _arch(a) <= _arch(gpu_arch)
                    for a in archs)
                add("architectures to build", not archs or covered,
                    f"{', '.join('sm_' + a.replace('.', '') for a in archs) or 'torch default'} "
                    f"(GPU: sm_{gpu_arch.replace('.', '')})" if not archs or covered else
                    f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')!r} leaves out this GPU's "
                    f"{gpu_arch}: the kernels would not load on it; unset TORCH_CUDA_ARCH_LIST (build for the GPUs "
                    f"present) or add {gpu_arch}")
                rc, out = probe.run([str(nvcc), "--list-gpu-arch"])
                known = set(re.findall(r"compute_(\d+[a-z]?)", out)) if rc == 0 else set()
                targets = archs or [gpu_arch]
                missing = [a for a in targets if a.replace(".", "") not in known]
                add("nvcc knows the architectures", rc == 0 and not missing,
                    f"nvcc --list-gpu-arch has {', '.join('compute_' + a.replace('.', '') for a in targets)}"
                    if rc == 0 and not missing else
                    f"this nvcc ({found[0]}.{found[1]}) cannot build for "
                    f"{', '.join('sm_' + a.replace('.', '') for a in missing) or gpu_arch} "
                    f"(--list-gpu-arch exit {rc}): use a newer CUDA toolkit (CUDA_HOME)")
    ninja = probe.which("ninja")
    add("ninja", ninja is not None, ninja or "ninja is not on PATH: torch builds extensions with it; "
        "python3 -m pip install ninja (or apt-get install ninja-build)")
    header = probe.python_include() / "Python.h"
    add("Python.h", Path(header).is_file(), str(header) if Path(header).is_file() else
        f"{header} is missing: install the Python development headers (python3-dev / python3-devel) for "
        f"Python {platform.python_version()}")
    cxx = os.environ.get("CXX") or "c++"
    found_cxx = probe.which(cxx)
    add("C++ compiler", found_cxx is not None, found_cxx or f"{cxx} is not on PATH (CXX={os.environ.get('CXX')!r}): "
        "install g++ or set CXX")
    try:
        sources = probe.sources()
        missing = [str(p) for p in sources if not Path(p).is_file()]
        add("kernel sources", not missing, f"{len(sources)} files" if not missing else
            f"missing {', '.join(missing)}: run from a complete checkout of elfatt-deploy")
    except Exception as exc:
        add("kernel sources", False, str(exc))
    root = probe.build_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        test_file = root / f".elfatt-preflight-{os.getpid()}"
        test_file.write_text("")
        test_file.unlink()
        free = probe.free_bytes(root)
        add("build folder", free >= 1 << 30, f"{root} ({free / 2**30:.1f} GiB free)" if free >= 1 << 30 else
            f"{root} has {free / 2**20:.0f} MiB free; the build needs about 1 GiB (set TORCH_EXTENSIONS_DIR elsewhere)")
    except OSError as exc:
        add("build folder", False, f"cannot write in {root} ({exc}); set TORCH_EXTENSIONS_DIR to a writable folder")
    if sanitize:
        found_sanitizer = find_sanitizer(probe)
        # Not fatal: the sanitizer rows are then skipped.
        checks.append(Check("compute-sanitizer (optional)", True, found_sanitizer or
                            "not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin): sanitizer runs will be skipped"))
    return checks


def print_preflight(checks: list[Check]) -> None:
    width = max(len(c.check) for c in checks)
    for c in checks:
        log(f"  {'ok  ' if c.ok else 'FAIL'}  {c.check:<{width}}  {c.detail}")


def find_sanitizer(probe: Optional[Probe] = None) -> Optional[str]:
    which = probe.which if probe is not None else shutil.which
    found = which("compute-sanitizer")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "compute-sanitizer").is_file():
            return str(Path(root) / "bin" / "compute-sanitizer")
    return None
