"""bench/onnxruntime_cpu.py --before-rev: a file's ElfattAttention body swapped for an older revision's, for
the one-function bodies before function overloads and the per-layout overloads since (f785d92)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from elfatt_deploy.export.op_model import single_op_model
from elfatt_deploy.op.spec import ElfattAttrs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _has_revision(rev: str) -> bool:
    done = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize("rev", ["3cc31c1", "f785d92"])
def test_old_body_replaces_the_function_and_computes_the_same(rev, tmp_path, rng):
    import onnxruntime as ort
    import onnxruntime_cpu

    if not _has_revision(rev):
        pytest.skip(f"revision {rev} is not in this clone's history (a shallow clone)")
    new = tmp_path / "new.onnx"
    onnx.save(single_op_model(ElfattAttrs(1, 2, 3, 2), 48), new)
    old = tmp_path / "old.onnx"
    onnxruntime_cpu._with_old_body(new, old, rev)
    before, after = onnx.load(new), onnx.load(old)
    assert [len(f.node) for f in after.functions] != [len(f.node) for f in before.functions]  # another body
    feeds = {"qkv": rng.standard_normal((2, 8, 11, 144)).astype(np.float32),  # 8x11 tokens: partial 3x2 windows
             "lepe_weight": rng.standard_normal((48, 1, 3, 3)).astype(np.float32) * 0.3,
             "lepe_bias": rng.standard_normal(48).astype(np.float32)}
    (a,) = ort.InferenceSession(str(new)).run(None, feeds)
    (b,) = ort.InferenceSession(str(old)).run(None, feeds)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) <= 1e-5
