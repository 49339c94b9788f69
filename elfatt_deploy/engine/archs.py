"""Which CUDA architectures a shared library was compiled for (``cuobjdump --list-elf/--list-ptx``), vs a GPU."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional


def find_cuobjdump() -> Optional[str]:
    found = shutil.which("cuobjdump")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "cuobjdump").is_file():
            return str(Path(root) / "bin" / "cuobjdump")
    return None


def parse_cuobjdump_list(text: str) -> set[int]:
    """``ELF file 1: lib.1.sm_87.cubin`` / ``PTX file 1: lib.1.sm_87.ptx`` lines -> {87}."""
    return {int(m) for m in re.findall(r"\bsm_(\d+)[a-z]?\b", text)}


def library_archs(library: str | os.PathLike) -> dict:
    """``{"sass": [...], "ptx": [...]}`` from cuobjdump, or ``{"error": ...}`` saying why not."""
    tool = find_cuobjdump()
    if tool is None:
        return {"error": "cuobjdump not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin): architectures not checked"}
    result = {}
    for key, flag in (("sass", "--list-elf"), ("ptx", "--list-ptx")):
        try:
            proc = subprocess.run([tool, flag, str(library)], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"error": f"cuobjdump {flag} failed: {exc}"}
        if proc.returncode != 0 and "does not contain" not in proc.stderr:
            return {"error": f"`cuobjdump {flag} {library}` exited with {proc.returncode}: {proc.stderr.strip()[:200]}"}
        result[key] = sorted(parse_cuobjdump_list(proc.stdout))
    return result


def arch_verdict(sass: set[int], ptx: set[int], compute_capability: str) -> tuple[bool, str]:
    """Whether code for ``compute_capability`` ("8.7") is present: SASS for X.y runs on X.z with z >= y,
    PTX for an arch <= the GPU's is JIT-compiled at load."""
    major, minor = (int(p) for p in str(compute_capability).split(".")[:2])
    cc = major * 10 + minor
    listed = "SASS " + (", ".join(f"sm_{a}" for a in sorted(sass)) or "none") + "; PTX " + (
        ", ".join(f"compute_{a}" for a in sorted(ptx)) or "none")
    if cc in sass:
        return True, f"has SASS for sm_{cc} ({listed})"
    compatible = [a for a in sass if a // 10 == major and a % 10 <= minor]
    if compatible:
        return True, f"runs sm_{max(compatible)} SASS on sm_{cc} ({listed})"
    jit = [a for a in ptx if a <= cc]
    if jit:
        return True, f"no SASS for sm_{cc}: the driver JIT-compiles compute_{max(jit)} PTX at first load ({listed})"
    return False, f"no code for sm_{cc} ({listed}): rebuild the plugin with -DCMAKE_CUDA_ARCHITECTURES={cc}"
