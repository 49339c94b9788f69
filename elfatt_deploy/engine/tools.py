"""Finding NVIDIA's command-line tools (trtexec) without a hard-coded install path.

Order: ``$TRTEXEC``; ``trtexec`` on PATH; ``$TENSORRT_ROOT/bin`` (a tarball install); the files of the
Debian package that ships it (``libnvinfer-bin`` on JetPack and in NGC images, which install it
outside PATH). docker/parity.sh looks in the same places.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

TRTEXEC_PACKAGES = ("libnvinfer-bin", "tensorrt")


def _from_package(tool: str) -> Optional[str]:
    query = shutil.which("dpkg-query")
    if query is None:
        return None
    for package in TRTEXEC_PACKAGES:
        try:
            proc = subprocess.run([query, "-L", package], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in proc.stdout.splitlines() if proc.returncode == 0 else ():
            if line.endswith("/" + tool) and os.access(line, os.X_OK):
                return line
    return None


def find_trtexec(env: Optional[dict] = None) -> Optional[str]:
    """The trtexec executable, or None."""
    env = os.environ if env is None else env
    explicit = env.get("TRTEXEC")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("trtexec", path=env.get("PATH"))
    if found:
        return found
    root = env.get("TENSORRT_ROOT")
    if root and os.access(Path(root) / "bin" / "trtexec", os.X_OK):
        return str(Path(root) / "bin" / "trtexec")
    return _from_package("trtexec")
