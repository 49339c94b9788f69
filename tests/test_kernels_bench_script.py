"""bench/kernels_gpu.py runs on GPU machines only; its plumbing (case grid, NaN
poisoning, rel-L2 check, table, atomic JSON) is checked here on the CPU with the
eager reference standing in for the kernels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "kernels_gpu.py"


def test_self_test_passes_and_catches_unwritten_output(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--self-test", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "self-test passed" in proc.stdout
    rows = json.loads((tmp_path / "self_test.json").read_text())["verification"]
    names = {r["case"] for r in rows}
    # The grid covers what the kernels must handle.
    for needed in ("partial-7x7-d32", "stripes-7x256-d32", "global-only-d32", "local-only-d32", "h1", "w1",
                   "generic-d5", "batch-8", "partial-7x7-d32-nolepe"):
        assert needed in names
    dims = {r["head_dim"] for r in rows}
    assert {16, 32, 64} <= dims and dims - {16, 32, 64}, dims
    assert all(r["ok"] for r in rows)


def test_without_gpu_the_script_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: this test covers the no-GPU message only")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--verify-only", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr
