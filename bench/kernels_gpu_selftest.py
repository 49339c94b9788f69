"""--self-test of bench/kernels_gpu.py (no GPU, run in CI by tests/test_kernels_bench_script.py):
the preflight's failure messages on fake machines, the incremental JSON and per-case error
recording of the job runner (a CUDA-like error, a lost context and a resume, the watchdog), the
timing arithmetic, the sanitizer classification, the verification plumbing with the eager
reference standing in for the kernels (a lazy stand-in leaves outputs unwritten, a raising one
errors), and the table and plot code on made-up timings.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from gpu_jobs import ContextLost, Job, ResultsFile, log, run_jobs
from gpu_preflight import Probe, run_preflight
from gpu_timing import launches_for, per_launch_us, summarize
from kernel_cases import QUICK_VERIFY_CASES, TIMED_CASES

import kernels_gpu as kg


class _StandInModule:
    """The eager reference (float32) behind the extension's interface: --self-test checks this
    script's plumbing on the CPU, where the kernels cannot run. ``skip_last_channel`` leaves
    elements unwritten; ``fail_on`` raises a CUDA-like error for one case."""

    def __init__(self, skip_last_channel=False, fail_on=None):
        self.skip_last_channel = skip_last_channel
        self.fail_on = fail_on

    def attention(self, qkv, weight, bias, gh, lh, wh, ww, scale, path):
        from elfatt_deploy.op.reference import elfatt_attention_reference

        return elfatt_attention_reference(qkv, weight, bias, gh, lh, wh, ww, scale)

    def attention_into(self, out, qkv, weight, bias, gh, lh, wh, ww, scale, path):
        if self.fail_on is not None and qkv.shape[1:3] == self.fail_on:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (stand-in)")
        result = self.attention(qkv, weight, bias, gh, lh, wh, ww, scale, path)
        if self.skip_last_channel:
            out[..., :-1] = result[..., :-1]
        else:
            out.copy_(result)

    def state_size(self, qkv, weight, bias, gh, lh, wh, ww, scale):
        return 64

    def attention_with_state(self, out, qkv, weight, bias, gh, lh, wh, ww, scale, state, path):
        """``leave_state`` (set by the test) is written into the state, as kernels that forgot to zero it would."""
        self.attention_into(out, qkv, weight, bias, gh, lh, wh, ww, scale, path)
        state[0] = getattr(self, "leave_state", 0)


class _FakeTorch:
    """Stands in for torch in the preflight self-test."""

    def __init__(self, cuda="13.0", gpus=(("NVIDIA H200", (9, 0)),)):
        import types

        self.__version__ = "2.11.0+cu130" if cuda else "2.13.0+cpu"
        self.version = types.SimpleNamespace(cuda=cuda)
        self.cuda = types.SimpleNamespace(
            is_available=lambda: bool(gpus), device_count=lambda: len(gpus),
            get_device_name=lambda i: gpus[i][0], get_device_capability=lambda i: gpus[i][1])


class _FakeProbe(Probe):
    def __init__(self, root: Path, **overrides):
        self.root = root
        self.o = {"torch": _FakeTorch(), "cuda_home": root / "cuda", "nvcc_version": "Cuda compilation tools, "
                  "release 13.0, V13.0.88", "nvcc_archs": "compute_80\ncompute_87\ncompute_90\ncompute_100",
                  "which": {"ninja": "/usr/bin/ninja", "c++": "/usr/bin/c++", "compute-sanitizer": None},
                  "python_include": root / "include", "arch_flags": (["-gencode=arch=compute_90,code=sm_90"], ["9.0"]),
                  "sources": [], "build_root": root / "ext", "free": 50 << 30}
        self.o.update(overrides)
        (root / "include").mkdir(parents=True, exist_ok=True)
        (root / "include" / "Python.h").write_text("")

    def torch(self):
        return self.o["torch"]

    def cuda_home(self):
        if isinstance(self.o["cuda_home"], Exception):
            raise self.o["cuda_home"]
        return self.o["cuda_home"]

    def run(self, cmd, timeout=30.0):
        if cmd[-1] == "--version":
            return (0, self.o["nvcc_version"]) if self.o["nvcc_version"] else (127, "nvcc: not found")
        return 0, self.o["nvcc_archs"]

    def which(self, name):
        return self.o["which"].get(name)

    def python_include(self):
        return self.o["python_include"]

    def arch_flags(self):
        if isinstance(self.o["arch_flags"], Exception):
            raise self.o["arch_flags"]
        return self.o["arch_flags"]

    def sources(self):
        return self.o["sources"]

    def build_root(self):
        return self.o["build_root"]

    def free_bytes(self, path):
        return self.o["free"]


def _self_test_preflight(tmp: Path) -> None:
    from elfatt_deploy.op.cuda_backend import CudaBackendError

    def failures(**overrides):
        checks = run_preflight(_FakeProbe(tmp / f"p{len(os.listdir(tmp))}", **overrides), sanitize=True)
        return {c.check: c.detail for c in checks if not c.ok}

    assert failures() == {}, failures()
    expectations = [
        (dict(torch=_FakeTorch(cuda=None)), "PyTorch with CUDA", "CPU-only build"),
        (dict(torch=_FakeTorch(gpus=())), "CUDA GPU visible", "no CUDA GPU visible"),
        (dict(cuda_home=CudaBackendError("nvcc was not found (no CUDA_HOME, ...)")), "nvcc", "nvcc was not found"),
        (dict(nvcc_version=""), "nvcc", "--version failed"),
        (dict(nvcc_version="Cuda compilation tools, release 12.4, V12.4.1"), "nvcc matches PyTorch's CUDA",
         "set CUDA_HOME to a CUDA 13.x toolkit"),
        (dict(nvcc_archs="compute_80\ncompute_87"), "nvcc knows the architectures", "cannot build for sm_90"),
        (dict(arch_flags=(["-gencode=arch=compute_87,code=sm_87"], ["8.7"])), "architectures to build",
         "leaves out this GPU's 9.0"),
        (dict(arch_flags=CudaBackendError("TORCH_CUDA_ARCH_LIST='x' is not a list")), "architectures to build",
         "is not a list"),
        (dict(which={"c++": "/usr/bin/c++"}), "ninja", "pip install ninja"),
        (dict(python_include=tmp / "nowhere"), "Python.h", "python3-dev"),
        (dict(which={"ninja": "/usr/bin/ninja"}), "C++ compiler", "install g++"),
        (dict(sources=[tmp / "missing.cu"]), "kernel sources", "missing"),
        (dict(free=10 << 20), "build folder", "MiB free"),
    ]
    for overrides, check, text in expectations:
        got = failures(**overrides)
        assert check in got and text in got[check], (overrides, got)
    # A PTX entry at or below the GPU's arch covers it.
    assert failures(arch_flags=(["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_80,code=compute_80"],
                                ["8.0"]), nvcc_archs="compute_80\ncompute_90") == {}
    log(f"self-test: preflight: {len(expectations)} failure messages and the passing case ok")


def _self_test_jobs(tmp: Path) -> None:
    """Incremental writes, per-case error recording, context loss and resume, watchdog."""
    snapshots = []
    results = ResultsFile(tmp / "jobs.json", kg.SCHEMA, on_write=lambda p: snapshots.append(json.loads(p.read_text())))

    def ok(i):
        return lambda: {"status": "ok", "value": i}

    def broken():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    jobs = [Job("cases", "a", ok(1), {"case": "a"}), Job("cases", "b", broken, {"case": "b"}),
            Job("cases", "c", ok(3), {"case": "c"})]
    run_jobs(jobs, results, context_alive=lambda: True)
    assert [len(s["cases"]) for s in snapshots] == [1, 2, 3], "the file must be rewritten after every case"
    rows = {r["key"]: r for r in json.loads((tmp / "jobs.json").read_text())["cases"]}
    assert rows["b"]["status"] == "error" and "illegal memory access" in rows["b"]["error"] and rows["b"]["case"] == "b"
    assert rows["a"]["value"] == 1 and rows["c"]["value"] == 3, "a failing case must not stop the others"

    # A sticky error: recorded, then ContextLost; a resumed run skips what is done.
    results = ResultsFile(tmp / "sticky.json", kg.SCHEMA)
    try:
        run_jobs(jobs, results, context_alive=lambda: False)
        raise AssertionError("a lost context must raise ContextLost")
    except ContextLost as exc:
        assert "after b" in str(exc)
    done = [r["key"] for r in json.loads((tmp / "sticky.json").read_text())["cases"]]
    assert done == ["a", "b"], done
    resumed = ResultsFile.resume(tmp / "sticky.json", kg.SCHEMA)
    ran = []
    run_jobs([Job(j.section, j.key, (lambda j=j: ran.append(j.key) or {"status": "ok"})) for j in jobs], resumed,
             context_alive=lambda: True)
    assert ran == ["c"], ran
    assert [r["key"] for r in json.loads((tmp / "sticky.json").read_text())["cases"]] == ["a", "b", "c"]

    # The watchdog calls on_timeout for a case that outlives case_timeout.
    fired = []
    run_jobs([Job("cases", "slow", lambda: time.sleep(0.5) or {"status": "ok"})], ResultsFile(tmp / "slow.json", kg.SCHEMA),
             context_alive=lambda: True, case_timeout=0.1, on_timeout=lambda job: fired.append(job.key))
    assert fired == ["slow"], fired
    log("self-test: jobs: incremental JSON, per-case errors, context loss + resume, watchdog ok")


def _self_test_timing_and_sanitizer() -> None:
    assert per_launch_us([2.0, 4.0], 100) == [20.0, 40.0]
    s = summarize([30.0, 10.0, 20.0, 40.0, 50.0])
    assert (s["median_us"], s["min_us"], s["max_us"], s["q1_us"], s["q3_us"], s["samples"]) == (30, 10, 50, 20, 40, 5)
    assert launches_for(10.0, at_least=5) == 200 and launches_for(10_000.0, at_least=5) == 5
    assert kg.classify_sanitizer(0, "========= ERROR SUMMARY: 0 errors", False)[0] == "clean"
    assert kg.classify_sanitizer(3, "Invalid __global__ write\n========= ERROR SUMMARY: 2 errors", False)[0] == "errors"
    status, detail = kg.classify_sanitizer(255, "========= Error: Device not supported\nerror 999", False)
    assert status == "skipped" and "Device not supported" in detail
    assert kg.classify_sanitizer(None, "started", True)[0] == "timeout"
    assert kg.classify_sanitizer(1, "Traceback (most recent call last):\nImportError", False)[0] == "error"
    assert kg.v2_note(["globalOutputKernel<__half, true>", "localTensorCoreKernel<__half, 64>"]) is not None
    assert kg.v2_note(["fusedLocalKernel<__half, 64>", "globalOutputKernel<__half, true>"]) is None
    log("self-test: timing arithmetic, sanitizer classification, v2 note ok")


def self_test(out_dir: Path) -> int:
    """CPU check of this script's plumbing with fakes and the eager reference standing in for the kernels."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        _self_test_preflight(Path(tmp))
        _self_test_jobs(Path(tmp))
    _self_test_timing_and_sanitizer()

    # Verification plumbing: a correct stand-in passes, a lazy one is caught by the NaN poisoning,
    # a raising one is recorded per case and the others still run.
    results = ResultsFile(out_dir / "self_test.json", kg.SCHEMA)
    run_jobs(kg.verify_jobs(_StandInModule(), QUICK_VERIFY_CASES, ["float32"], ["auto"], seed=0, device="cpu")
             + kg.empty_problem_jobs(_StandInModule(), device="cpu"), results, context_alive=lambda: True)
    good = results.data["verification"]
    assert kg.print_verify(good), "the eager reference must pass against itself"
    lazy = ResultsFile(out_dir / "self_test_lazy.json", kg.SCHEMA)
    few = QUICK_VERIFY_CASES[:4]  # the first is 9 x 13 tokens
    run_jobs(kg.verify_jobs(_StandInModule(skip_last_channel=True), few, ["float32"], ["auto"], seed=0,
                         device="cpu"), lazy, context_alive=lambda: True)
    assert all(r["status"] == "fail" and r["non_finite"] > 0 for r in lazy.data["verification"]), \
        "NaN poisoning must catch unwritten output"
    failing = ResultsFile(out_dir / "self_test_errors.json", kg.SCHEMA)
    run_jobs(kg.verify_jobs(_StandInModule(fail_on=(9, 13)), few, ["float32"], ["auto"], seed=0,
                         device="cpu"), failing, context_alive=lambda: True)
    rows = failing.data["verification"]
    errors = [r for r in rows if r["status"] == "error"]
    assert errors and all((r["height"], r["width"]) == (9, 13) and "illegal memory" in r["error"] for r in errors)
    assert all(r["status"] == "ok" for r in rows if r not in errors) and len(rows) == len(few)
    assert not kg.print_verify(rows)

    # The persistent-state check: a stand-in that leaves the state zero passes, one that leaves a count behind fails.
    small = kg.Case("state-small", 1, 9, 11, 128, 1, 1, 7, 7)
    clean = ResultsFile(out_dir / "self_test_state.json", kg.SCHEMA)
    run_jobs(kg.state_jobs(_StandInModule(), seed=0, device="cpu", case=small), clean, context_alive=lambda: True)
    row = clean.data["binding"][0]
    assert row["status"] == "ok" and row["detail"].count("0 of 64 state bytes nonzero") == 4, row
    leaky = _StandInModule()
    leaky.leave_state = 3
    dirty = ResultsFile(out_dir / "self_test_state_dirty.json", kg.SCHEMA)
    run_jobs(kg.state_jobs(leaky, seed=0, device="cpu", case=small), dirty, context_alive=lambda: True)
    row = dirty.data["binding"][0]
    assert row["status"] == "fail" and "1 of 64 state bytes nonzero" in row["detail"], row

    # Table and plot on made-up timings (labelled as such; nothing here is a measurement).
    fake = []
    for i, case in enumerate(TIMED_CASES):
        floor = case.floor_bytes(2) / 4e12 * 1e6
        for j, kernel in enumerate(kg.TIMED_KERNELS):
            row = {"case": case.name, "kernel": kernel, "dtype": "float16", "floor_us": floor,
                   "median_us": floor * (2 + j), "status": "ok"}
            if kernel == "v2" and i == 0:
                row.update(status="error", median_us=None, error="CUDA error: stand-in")
            if kernel == "v2" and i == 1:
                row["note"] = kg.v2_note(["localTensorCoreKernel<__half, 64>"])
            if row.get("median_us"):
                row["fraction_of_floor"] = floor / row["median_us"]
            fake.append(row)
    log("plumbing check of the benchmark table (made-up timings):")
    kg.print_bench(fake, {"gpu": "stand-in", "capability": "9.0", "driver": "-", "torch": torch.__version__,
                       "cuda_torch": None}, {"GBps": 4000.0})
    table = kg.bench_table(fake)
    assert len(table) == 1 + len(TIMED_CASES) and "ERROR" in table[1] and "v1 kernels" in table[2], table[:3]
    plot = kg.save_plot(fake, out_dir / "self_test_plot.png", "self-test (made-up timings)")
    if plot is not None:
        assert plot.stat().st_size > 1000
    results.set(status="self-test", cases=fake)
    log("self-test passed")
    return kg.EXIT_OK
