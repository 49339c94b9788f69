"""bench/kernels_gpu.py runs on GPU machines only. Here, without a GPU: its --self-test (the
preflight's failure messages on fake machines, the incremental JSON and per-case error
recording, a lost CUDA context and a resume, the watchdog, the timing arithmetic, the
sanitizer classification, the verification plumbing with the eager reference standing in
for the kernels, the table and the plot on made-up timings); the preflight on this machine
(a CPU-only torch fails it in seconds, exit 3, with the fix, and the JSON says so); argument
errors; and that the timed cases are the issue's shapes, the CSWin-T ones read off the model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "kernels_gpu.py"
sys.path.insert(0, str(REPO / "bench"))

import kernel_cases  # noqa: E402
from gpu_jobs import ResultsFile  # noqa: E402


def run_script(*args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def test_self_test_passes(tmp_path):
    proc = run_script("--self-test", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    for step in ("preflight: 13 failure messages", "incremental JSON, per-case errors, context loss + resume",
                 "timing arithmetic, sanitizer classification", "self-test passed"):
        assert step in out, out[-3000:]
    report = json.loads((tmp_path / "self_test.json").read_text())
    rows = report["verification"]
    assert {r["case"] for r in rows} >= {c.name for c in kernel_cases.QUICK_VERIFY_CASES}
    assert all(r["status"] == "ok" for r in rows)
    # The per-case errors of the raising stand-in are in their own file, one row per case.
    errors = json.loads((tmp_path / "self_test_errors.json").read_text())["verification"]
    assert len(errors) == 4
    assert {r["case"]: r["status"] for r in errors} == {c.name: "error" if (c.height, c.width) == (9, 13) else "ok"
                                                         for c in kernel_cases.QUICK_VERIFY_CASES[:4]}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib not installed" in out
    else:
        png = tmp_path / "self_test_plot.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch has CUDA: the CPU-only preflight failure "
                                                             "does not apply")
def test_preflight_fails_fast_without_a_cuda_torch(tmp_path):
    proc = run_script("--quick", "--out", str(tmp_path), timeout=300)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAIL  PyTorch with CUDA" in proc.stdout and "CPU-only build" in proc.stdout
    assert "install a CUDA build of PyTorch" in proc.stdout and "preflight failed" in proc.stdout
    assert "building the extension" not in proc.stdout  # nothing was built
    report = json.loads((tmp_path / "kernels_gpu.json").read_text())
    assert report["status"] == "preflight failed" and report["schema"] == "elfatt-kernels-gpu/2"
    assert report["preflight"] == [{"check": "PyTorch with CUDA", "ok": False, "detail": report["preflight"][0]["detail"]}]
    assert report["settings"]["mode"] == "quick" and report["cases"] == []


@pytest.mark.parametrize("args, message", [
    (["--paths", "auto,fast"], "--paths='auto,fast': fast not in auto, tiled, generic, tensorcore, fused"),
    (["--dtypes", "float64"], "--dtypes='float64': float64 not in float32, float16, bfloat16"),
    (["--bench-dtypes", "float32"], "--bench-dtypes='float32': float32 not in float16, bfloat16"),
    (["--samples", "0"], "--samples=0 must be >= 1"),
])
def test_bad_arguments_exit_2_naming_the_value(tmp_path, args, message):
    proc = run_script(*args, "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    proc = run_script("--quick", "--out", str(target), timeout=120)
    assert proc.returncode == 2 and f"--out {target}" in proc.stderr, proc.stderr[-2000:]


def test_resume_refuses_another_schema(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema": "elfatt-kernels-gpu/1"}))
    with pytest.raises(ValueError, match="schema 'elfatt-kernels-gpu/1' is not 'elfatt-kernels-gpu/2'"):
        ResultsFile.resume(path, "elfatt-kernels-gpu/2")


def test_results_file_is_strict_json(tmp_path):
    results = ResultsFile(tmp_path / "r.json", "s/1")
    results.add("cases", {"key": "a", "rel_l2": float("nan"), "median_us": float("inf"), "x": [float("nan"), 1.0]})
    row = json.loads((tmp_path / "r.json").read_text())["cases"][0]  # json.loads accepts NaN: check the values
    assert row == {"key": "a", "rel_l2": None, "median_us": None, "x": [None, 1.0]}
    assert "NaN" not in (tmp_path / "r.json").read_text()


def test_jobs_past_the_deadline_are_recorded_as_skipped_and_run_on_resume(tmp_path):
    """--deadline: cases left when it passes are written as "skipped" without running, so that a run ends with
    its summary inside its device time; a resumed run runs them (and keeps what was done)."""
    import time

    from gpu_jobs import Job, run_jobs

    ran = []

    def job(key, sleep=0.0):
        def run():
            ran.append(key)
            time.sleep(sleep)
            return {"status": "ok"}
        return Job("cases", key, run)

    results = ResultsFile(tmp_path / "r.json", "s/1")
    deadline = time.time() + 0.3
    run_jobs([job("a", 0.5), job("b"), job("c")], results, context_alive=lambda: True, deadline=deadline)
    rows = {r["key"]: r for r in json.loads((tmp_path / "r.json").read_text())["cases"]}
    assert ran == ["a"] and rows["a"]["status"] == "ok"
    assert rows["b"]["status"] == rows["c"]["status"] == "skipped" and "deadline" in rows["c"]["error"]
    resumed = ResultsFile.resume(tmp_path / "r.json", "s/1")
    run_jobs([job("a"), job("b"), job("c")], resumed, context_alive=lambda: True, deadline=time.time() + 60)
    rows = {r["key"]: r for r in json.loads((tmp_path / "r.json").read_text())["cases"]}
    assert ran == ["a", "b", "c"] and {r["status"] for r in rows.values()} == {"ok"}


def test_verification_grids_cover_what_the_kernels_distinguish():
    full = {c.name: c for c in kernel_cases.VERIFY_CASES}
    for needed in ("partial-7x7-d32", "stripes-7x256-d32", "global-only-d32", "local-only-d32", "h1", "w1",
                   "generic-d5", "batch-8", "partial-7x7-d32-nolepe", "vertical-stripes-d32"):
        assert needed in full
    dims = {c.head_dim for c in full.values()}
    assert {16, 32, 64} <= dims and dims - {16, 32, 64}, dims
    quick = kernel_cases.QUICK_VERIFY_CASES
    assert {32, 64} <= {c.head_dim for c in quick} and {c.head_dim for c in quick} - {16, 32, 64}
    assert any(c.window_w == 0 and c.window_h for c in quick) and any(c.window_h == 0 and c.window_w for c in quick)
    assert any(c.local_heads == 0 for c in quick) and any(c.global_heads == 0 for c in quick)
    assert any(c.height == 1 for c in quick) and any(c.width == 1 for c in quick) and any(not c.lepe for c in quick)
    # Off the window grid: partial edge windows.
    assert any(c.window_h and c.height % c.window_h for c in quick)
    assert set(kernel_cases.QUICK_SANITIZE_NAMES) <= set(kernel_cases.SANITIZE_CASES)


def test_timed_vit_cases_are_the_issues():
    cases = {c.name: c for c in kernel_cases.TIMED_CASES}
    for name, tokens, batch in (("vit-s-64x64-b1", 64, 1), ("vit-s-128x128-b1", 128, 1), ("vit-s-64x64-b8", 64, 8)):
        c = cases[name]
        assert (c.batch, c.height, c.width, c.channels, c.global_heads, c.local_heads, c.head_dim, c.window_h,
                c.window_w, c.lepe) == (batch, tokens, tokens, 384, 3, 3, 64, 7, 7, True)
    assert cases["vit-s-64x64-b1"].floor_bytes(2) == 64 * 64 * 4 * 384 * 2  # qkv read + out written, fp16


@pytest.mark.parametrize("image", [512, 1024])
def test_timed_cswin_cases_are_the_models_stages(image, monkeypatch):
    """Stages 1-3 of elfatt_cswin_tiny at this input: the op calls of a forward pass on the meta device."""
    import elfatt_deploy as ed
    import elfatt_deploy.nn.attention as attention

    calls = set()
    real = attention.elfatt_attention

    def record(qkv, w, b, **kw):
        calls.add((tuple(qkv.shape), kw["global_heads"], kw["local_heads"], tuple(kw["window"])))
        return real(qkv, w, b, **kw)

    monkeypatch.setattr(attention, "elfatt_attention", record)
    model = ed.create_model("elfatt_cswin_tiny").eval().to("meta")
    with torch.no_grad():
        model.forward_features(torch.empty(1, 3, image, image, device="meta"))
    for stage in (1, 2, 3):
        c = next(c for c in kernel_cases.TIMED_CASES if c.name == f"cswin-t-s{stage}-{image}")
        assert c.head_dim == 32 and c.batch == 1 and c.lepe
        # The model alternates horizontal and vertical stripes; the timed case is the horizontal one.
        call = ((1, c.height, c.width, 3 * c.channels), c.global_heads, c.local_heads, (c.window_h, c.window_w))
        assert call in calls, (c, sorted(calls))
