"""bench/openvino_cpu.py on a tiny size: both runtimes, both models, interleaved, and the outputs agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed (the test extra has it)")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "openvino_cpu.py"


def test_bench_runs_both_runtimes_side_by_side(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", "elfatt_vit_tiny", "--sizes", "32", "--repeats", "2",
                           "--threads", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "openvino_cpu.json").read_text())
    (row,) = report["results"]
    assert row["size"] == 32 and row["tokens"] == 4
    for runtime in ("onnxruntime", "openvino"):
        for kind in ("elfatt", "vanilla"):
            cell = row[runtime][kind]
            assert len(cell["times_ms"]) == 2 and cell["median_ms"] > 0 and cell["peak_mem_mib"] >= 0
    assert row["openvino"]["elfatt"]["info"]["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert row["openvino"]["elfatt"]["info"]["config"]["INFERENCE_NUM_THREADS"] == "1"
    # both runtimes ran the same models (fp32 parity), so the timings compare like with like
    assert all(err <= 1e-5 for err in row["output_rel_l2_openvino_vs_onnxruntime"].values())
    env_report = report["environment"]
    assert env_report["openvino"] and env_report["onnxruntime"] and len(env_report["load_average"]["before"]) == 3
    assert "ORT/OV ELFATT" in proc.stdout and "worst relative L2" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json") == ["openvino_cpu.json"]


def test_bench_refuses_bad_sizes(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "16", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "every size >= 32" in proc.stderr
