#!/usr/bin/env python3
"""Verify and time the ElfattAttention CUDA kernels on a GPU machine.

    python bench/kernels_gpu.py --quick --out DIR          # < 5 min with the build: every path on a
                                                           # reduced grid, then the issue-10 timings
    python bench/kernels_gpu.py --out DIR                  # the full grid, fp16 and bf16 timings
    python bench/kernels_gpu.py --quick --sanitize --out DIR   # + compute-sanitizer on small odd shapes
    python bench/kernels_gpu.py --self-test --out DIR      # no GPU: this script's own plumbing (CI)

Order of work, each step printed as it happens (stdout is line-buffered):
1. Preflight, in seconds: a CUDA build of PyTorch, a visible GPU, nvcc (and that its CUDA major
   matches PyTorch's), nvcc's support for the GPU's architecture and that the architectures to
   build include the GPU's, ninja, Python.h, a C++ compiler, the kernel sources, a writable build
   folder. A failure prints every check with the fix and exits 3 before anything is built.
2. The extension (elfatt_deploy.op.cuda_backend: the plugin's kernel sources plus
   plugins/torch/elfatt_torch.cpp), built for the present GPU's architecture only (unless
   TORCH_CUDA_ARCH_LIST says otherwise); the seconds it took are recorded ("build").
3. Verification of every kernel path (auto, tiled, generic, tensorcore, fused) and dtype against
   the eager reference run in float64 on the same GPU, on outputs poisoned with NaN first:
   rel-L2 <= 1e-5 (float32) / 2e-3 (float16, bfloat16), or 1.25x the error of the exact answer
   rounded to the dtype where that is larger (elfatt_deploy.validation.tolerances.op_rtol_l2).
   16-bit cases run with LePE in the dtype and in float32 (autocast) in turn. Then the binding's
   rules through the op (float64 -> reference, autocast LePE, non-contiguous qkv, overlap refusal).
4. Timings of TIMED_CASES (bench/kernel_cases.py) for v1 (path tensorcore), v2 (path fused), the
   eager reference and SDPA flash (vanilla attention over all heads at the same token count and
   width), with the memory floor (qkv read once + output written once at the device-to-device
   copy bandwidth measured in this run). Kernels and SDPA: a CUDA graph of many back-to-back
   launches (inputs rotating over enough buffers to exceed L2), timed by CUDA events around each
   replay, per-launch time = replay time / launches; the eager reference: event pairs around a
   few back-to-back calls (it runs eagerly in a model). The timed v1/v2 outputs are checked too,
   and the CUDA kernels each row launched are listed (torch.profiler) so that a v2 row that ran
   v1's kernels says so.
5. With --sanitize: compute-sanitizer (memcheck by default) on small odd shapes, one process per
   case under --sanitize-timeout; a device that refuses the sanitizer gives "skipped" rows.

Robustness: every case runs in its own try block; an error (a CUDA error, an out-of-memory, a
refused SDPA backend) is recorded in its row and the run goes on. After a sticky CUDA error (the
context is lost) or a case that outlives --case-timeout, the script re-executes itself with
--resume on the JSON file and skips what is done (at most --max-restarts times). The JSON file is
rewritten atomically after every case, so a run stopped at any point leaves every finished case.
Past --deadline (420 s from the start with --quick) the cases not yet run are recorded as "skipped" and
the run ends with its summary; `--resume DIR/kernels_gpu.json` later runs just those.

JSON (DIR/kernels_gpu.json; the keys and case names are stable, bench/kernels_model.py --measured
reads them):
    {"schema": "elfatt-kernels-gpu/2", "status": "running" | "complete" | "preflight failed" | ...,
     "started", "updated": ISO times, "argv": [...], "settings": {...},
     "environment": {"gpu", "capability", "sm_count", "l2_bytes", "memory_bytes", "driver",
                     "cuda_torch", "nvcc", "torch", "python", "platform", "kernels_version",
                     "gpu_state_start", "gpu_state_end"},
     "preflight": [{"check", "ok", "detail"}],
     "build": {"seconds", "archs", "arch_flags", "library", "cached"},
     "copy_bandwidth": {"GBps", "bytes", "median_us"},
     "verification": [{"key", "case", "dtype", "lepe_dtype", "path", "status": "ok"|"fail"|"error",
                       "rel_l2", "limit", "non_finite", "error", <shape fields>}],
     "binding": [{"key", "check", "status", "detail", "error"}],
     "cases": [{"key", "case", "kernel": "v1"|"v2"|"reference"|"sdpa", "kernel_path", "dtype",
                "lepe_dtype", <shape fields: batch height width channels global_heads local_heads
                head_dim window_h window_w lepe scale>, "status": "ok"|"error", "error",
                "median_us", "min_us", "max_us", "q1_us", "q3_us", "samples",
                "launches_per_sample", "timing": "cuda-graph"|"event-loop", "floor_bytes",
                "floor_us", "fraction_of_floor", "rel_l2", "limit", "kernels", "note"}],
     "sanitizer": [{"key", "tool", "case", "status": "clean"|"errors"|"skipped"|"timeout"|"error",
                    "seconds", "detail"}]}
A PNG (DIR/kernels_gpu.png) plots the timings; the table is printed last.

Exit status: 0 every check passed; 1 a verification, binding check, timed-output check or
sanitizer run failed, or a case errored; 2 bad arguments; 3 the preflight or the build failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# bench/ modules (after the path setup): the cases, the job runner, the preflight, the timing.
from gpu_jobs import ContextLost, Job, ResultsFile, cuda_context_alive, finite, log, now, run_jobs  # noqa: E402
from gpu_preflight import Probe, find_sanitizer, print_preflight, run_preflight  # noqa: E402
from gpu_timing import copy_bandwidth, kernel_names, time_launches  # noqa: E402
from kernel_cases import (  # noqa: E402
    QUICK_SANITIZE_NAMES,
    QUICK_VERIFY_CASES,
    SANITIZE_CASES,
    TIMED_CASES,
    VERIFY_CASES,
    Case,
)

SCHEMA = "elfatt-kernels-gpu/2"
JSON_NAME = "kernels_gpu.json"
PNG_NAME = "kernels_gpu.png"
DTYPES = ("float32", "float16", "bfloat16")
ALL_PATHS = ("auto", "tiled", "generic", "tensorcore", "fused")
#: The timed implementations: JSON "kernel" name -> kernel path (None: not our kernels).
TIMED_KERNELS = {"v1": "tensorcore", "v2": "fused", "reference": None, "sdpa": None}
#: Kernels of the v1 library (global_attention.cu, local_attention*.cu): a v2 row that ran only
#: these ran no v2 kernel.
V1_KERNEL_NAMES = ("globalContextPartialKernel", "globalContextMergeKernel", "globalOutputKernel",
                   "localTiledKernel", "localGenericKernel", "localTensorCoreKernel")
SANITIZER_REFUSALS = ("device not supported", "not supported on this device", "unsupported device",
                      "error 999", "cuda_error_unknown", "could not be initialized")
EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_ENVIRONMENT = 0, 1, 2, 3


# ----------------------------------------------------------------------------- inputs and checks

def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
            "float64": torch.float64}[name]


def make_inputs(case: Case, dtype: str, lepe_dtype: str, device, generator):
    import torch

    c = case.channels
    qkv = torch.randn(case.batch, case.height, case.width, 3 * c, device=device, generator=generator)
    qkv[..., : 2 * c] *= case.magnitude
    weight = bias = None
    if case.lepe:
        weight = (0.3 * torch.randn(c, 1, 3, 3, device=device, generator=generator)).to(torch_dtype(lepe_dtype))
        bias = (0.1 * torch.randn(c, device=device, generator=generator)).to(torch_dtype(lepe_dtype))
    return qkv.to(torch_dtype(dtype)), weight, bias


def rel_l2(out, ref) -> float:
    diff = (out.double() - ref).norm().item()
    norm = ref.norm().item()
    return diff / norm if norm > 0 else diff


def reference64(case: Case, qkv, weight, bias):
    from elfatt_deploy.op.reference import elfatt_attention_reference

    f64 = lambda t: None if t is None else t.double()  # noqa: E731
    return elfatt_attention_reference(f64(qkv), f64(weight), f64(bias), *case.args())


def check_output(case: Case, dtype: str, out, ref) -> dict:
    """NaN-poisoned output vs the float64 reference: rel-L2 against the contract's limit."""
    import torch

    from elfatt_deploy.validation.tolerances import op_rtol_l2

    non_finite = int((~torch.isfinite(out)).sum().item())
    err = rel_l2(out, ref) if non_finite == 0 else float("nan")
    limit = op_rtol_l2(dtype, rel_l2(ref.to(torch_dtype(dtype)), ref)) * case.tol_factor
    ok = non_finite == 0 and err <= limit
    return {"status": "ok" if ok else "fail", "rel_l2": finite(err), "limit": limit, "non_finite": non_finite}


def run_kernel(module, case: Case, qkv, weight, bias, path: str, poison: bool = True):
    import torch

    from elfatt_deploy.op.cuda_backend import KERNEL_PATHS

    out = torch.empty(case.batch, case.height, case.width, case.channels, device=qkv.device, dtype=qkv.dtype)
    if poison:
        out.fill_(float("nan"))
    module.attention_into(out, qkv, weight, bias, *case.args(), KERNEL_PATHS[path])
    return out


def verify_jobs(module, cases: list[Case], dtypes: list[str], paths: list[str], seed: int, device="cuda") -> list[Job]:
    """One job per (case, dtype, LePE dtype, path); 16-bit dtypes alternate LePE in the dtype / in float32."""
    import torch

    jobs = []
    for case in cases:
        for dtype in dtypes:
            lepe_dtypes = [dtype] if dtype == "float32" or not case.lepe else [dtype, "float32"]
            for lepe_dtype in lepe_dtypes:
                for path in paths:
                    key = f"{case.name}|{dtype}|lepe-{lepe_dtype}|{path}"
                    gen_seed = seed * 1_000_003 + len(jobs)

                    def run(case=case, dtype=dtype, lepe_dtype=lepe_dtype, path=path, gen_seed=gen_seed):
                        gen = torch.Generator(device=device).manual_seed(gen_seed)
                        qkv, weight, bias = make_inputs(case, dtype, lepe_dtype, device, gen)
                        ref = reference64(case, qkv, weight, bias)
                        out = run_kernel(module, case, qkv, weight, bias, path)
                        if device == "cuda":
                            torch.cuda.synchronize()
                        return check_output(case, dtype, out, ref)

                    base = {"case": case.name, "dtype": dtype, "lepe_dtype": lepe_dtype if case.lepe else None,
                            "path": path, **case.shape()}
                    jobs.append(Job("verification", key, run, base))
    return jobs


def empty_problem_jobs(module, device="cuda") -> list[Job]:
    import torch

    jobs = []
    for shape in ((0, 5, 5), (2, 0, 5), (2, 5, 0)):
        def run(shape=shape):
            out = module.attention(torch.randn(*shape, 3 * 64, device=device), None, None, 1, 1, 7, 7, 0.0, -1)
            ok = tuple(out.shape) == (*shape, 64)
            return {"status": "ok" if ok else "fail", "rel_l2": 0.0, "limit": 0.0, "non_finite": 0,
                    "error": None if ok else f"output shape {tuple(out.shape)}"}

        name = "empty-" + "x".join(map(str, shape))
        jobs.append(Job("verification", f"{name}|float32|-|auto", run,
                        {"case": name, "dtype": "float32", "lepe_dtype": None, "path": "auto"}))
    return jobs


def binding_jobs(module, seed: int) -> list[Job]:
    """The binding's dispatch rules through the op on the GPU (issue 10 part 4)."""
    import torch

    import elfatt_deploy as ed
    from elfatt_deploy.op import cuda_backend
    from elfatt_deploy.op.reference import elfatt_attention_reference

    case = Case("binding", 2, 9, 13, 96, 1, 2, 7, 7)
    gen = torch.Generator(device="cuda").manual_seed(seed + 17)

    def op(qkv, w, b):
        return ed.elfatt_attention(qkv, w, b, global_heads=1, local_heads=2, window=(7, 7))

    def registered() -> str:
        # The op registers the kernels on first CUDA use; without them every check below tests the reference.
        if not cuda_backend.registered():
            raise RuntimeError("the CUDA kernels are not registered for elfatt::attention (a warning above says why)")
        return "kernels registered"

    def float64_runs_reference():
        qkv, w, b = make_inputs(case, "float32", "float32", "cuda", gen)
        qkv, w, b = qkv.double(), w.double(), b.double()
        out = op(qkv, w, b)
        ref = elfatt_attention_reference(qkv, w, b, *case.args())
        ok = out.dtype == torch.float64 and torch.equal(out, ref)
        return {"status": "ok" if ok else "fail", "detail": f"{registered()}; dtype {out.dtype}, max |out - ref| "
                f"{(out - ref).abs().max().item():.3g} (the reference itself: 0)"}

    def autocast_lepe_stays_float32():
        from elfatt_deploy.validation.tolerances import op_rtol_l2

        # What a model hands the op under fp16 autocast: fp16 qkv (from the Linear), fp32 LePE parameters.
        qkv, w, b = make_inputs(case, "float16", "float32", "cuda", gen)
        with torch.autocast("cuda", dtype=torch.float16):
            out = op(qkv, w, b)
            out_rounded = op(qkv, w.half(), b.half())  # what a binding that rounds the weights would compute
        err = rel_l2(out, reference64(case, qkv, w, b))
        limit = op_rtol_l2("float16")
        differs = int((out != out_rounded).sum().item())
        ok = out.dtype == torch.float16 and err <= limit and differs > 0
        return {"status": "ok" if ok else "fail",
                "detail": f"{registered()}; rel-L2 {err:.3g} vs the float64 reference with the fp32 weights (limit "
                          f"{limit:g}); {differs} of {out.numel()} outputs differ from those with fp16-rounded weights "
                          "(0 would mean the weights were rounded)"}

    def non_contiguous_qkv():
        qkv, w, b = make_inputs(case, "float16", "float16", "cuda", gen)
        strided = qkv.transpose(1, 2).contiguous().transpose(1, 2)
        ok = (not strided.is_contiguous()) and torch.equal(op(strided, w, b), op(qkv, w, b))
        return {"status": "ok" if ok else "fail", "detail": "same output bits as the contiguous qkv" if ok else
                "differs from the contiguous qkv"}

    def overlapping_out_refused():
        qkv, w, b = make_inputs(case, "float16", "float16", "cuda", gen)
        out = qkv.view(-1)[: qkv.numel() // 3].view(case.batch, case.height, case.width, case.channels)
        try:
            module.attention_into(out, qkv, w, b, *case.args(), 0)
        except RuntimeError as exc:
            ok = "shares memory with qkv" in str(exc)
            return {"status": "ok" if ok else "fail", "detail": str(exc)[:300]}
        return {"status": "fail", "detail": "an out inside qkv was accepted"}

    checks = [("float64 CUDA input runs the eager reference", float64_runs_reference),
              ("fp16 autocast: fp32 LePE used unrounded", autocast_lepe_stays_float32),
              ("non-contiguous qkv", non_contiguous_qkv),
              ("out overlapping qkv is refused", overlapping_out_refused)]
    return [Job("binding", name, fn, {"check": name}) for name, fn in checks]


# 2 x 70 x 70 tokens, 1 global + 1 local head of 64: 20 chunks per (b, head), a 3-level merge tree (groups of one at
# the edge) in each of 2 trees; kernels v2 run it on fp16 and bf16.
STATE_CASE = Case("state-tree", 2, 70, 70, 128, 1, 1, 7, 7)


def state_jobs(module, seed: int, device="cuda", case: Case = STATE_CASE) -> list[Job]:
    """The TensorRT plugin's call (enqueueWithState, which no memset precedes) through the extension's
    attention_with_state: two calls on one zeroed state, each right against the float64 reference and the state
    zero after each (the merge trees' counters and max keys are zeroed by the blocks that consume them). On a GPU
    this checks under real concurrency what the host emulation checks in logic only."""
    import torch

    from elfatt_deploy.op.cuda_backend import KERNEL_PATHS

    name = "persistent state: 2 calls on one zeroed state, both right, state zero after each"

    def run():
        gen = torch.Generator(device=device).manual_seed(seed + 29)
        details, ok = [], True
        for dtype in ("float16", "bfloat16"):
            if device == "cuda" and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
                details.append("bfloat16 not supported: skipped")
                continue
            qkv, w, b = make_inputs(case, dtype, "float32", device, gen)
            ref = reference64(case, qkv, w, b)
            size = module.state_size(qkv, w, b, *case.args())
            if size == 0:
                return {"status": "fail", "detail": f"{dtype}: state_size is 0, so kernels v2 do not run this case"}
            state = torch.zeros(size, dtype=torch.uint8, device=device)
            for call in (1, 2):
                out = torch.full((case.batch, case.height, case.width, case.channels), float("nan"), dtype=qkv.dtype,
                                 device=device)
                module.attention_with_state(out, qkv, w, b, *case.args(), state, KERNEL_PATHS["fused"])
                if device == "cuda":
                    torch.cuda.synchronize()
                checked = check_output(case, dtype, out, ref)
                dirty = int(state.count_nonzero().item())
                ok = ok and checked["status"] == "ok" and dirty == 0
                details.append(f"{dtype} call {call}: rel-L2 {checked['rel_l2']:.3g} (limit {checked['limit']:.3g}), "
                               f"{dirty} of {size} state bytes nonzero")
        return {"status": "ok" if ok else "fail", "detail": "; ".join(details)}

    return [Job("binding", name, run, {"check": name})]


def v2_note(names: Optional[list[str]]) -> Optional[str]:
    """A note when a v2 (fused) row launched only kernels of the v1 library."""
    if names and all(any(k in n for k in V1_KERNEL_NAMES) for n in names):
        return "the fused path ran only v1 kernels: kernels v2 are not in this build"
    return None


def bench_jobs(module, cases: list[Case], dtypes: list[str], kernels: list[str], seed: int, samples: int,
               bandwidth: dict, l2_bytes: int) -> list[Job]:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from elfatt_deploy.op.cuda_backend import KERNEL_PATHS
    from elfatt_deploy.op.reference import elfatt_attention_reference

    jobs = []
    for case in cases:
        for dtype in dtypes:
            element = torch.tensor([], dtype=torch_dtype(dtype)).element_size()
            floor_bytes = case.floor_bytes(element)
            floor_us = floor_bytes / (bandwidth["GBps"] * 1e9) * 1e6
            for kernel in kernels:
                path = TIMED_KERNELS[kernel]
                key = f"{case.name}|{kernel}|{dtype}"

                def run(case=case, dtype=dtype, kernel=kernel, path=path, floor_us=floor_us):
                    gen = torch.Generator(device="cuda").manual_seed(seed + zlib.crc32(case.name.encode()))
                    one = make_inputs(case, dtype, "float32", "cuda", gen)
                    per_call = case.floor_bytes(one[0].element_size())
                    copies = max(2, min(256, math.ceil(3 * l2_bytes / per_call)))
                    # The buffers live in one dict that is cleared at the end: the closures below hold it.
                    buffers = {"i": 0, "inputs": [one] + [make_inputs(case, dtype, "float32", "cuda", gen)
                                                          for _ in range(copies - 1)],
                               "out": torch.empty(case.batch, case.height, case.width, case.channels, device="cuda",
                                                  dtype=one[0].dtype)}

                    def next_inputs():
                        buffers["i"] = (buffers["i"] + 1) % copies
                        return buffers["inputs"][buffers["i"]]

                    extra: dict = {}
                    if path is not None:
                        number = KERNEL_PATHS[path]

                        def fn():
                            qkv, w, b = next_inputs()
                            module.attention_into(buffers["out"], qkv, w, b, *case.args(), number)

                        checked = run_kernel(module, case, *one, path)
                        torch.cuda.synchronize()
                        check = check_output(case, dtype, checked, reference64(case, *one))
                        extra.update(rel_l2=check["rel_l2"], limit=check["limit"], output_ok=check["status"] == "ok")
                        del checked
                        timing = time_launches(fn, rotate=copies, samples=samples)
                        extra["kernels"] = kernel_names(fn)
                        if kernel == "v2":
                            notes = [n for n in (v2_note(extra["kernels"]), timing.get("note")) if n]
                            extra["note"] = "; ".join(notes) or None
                    elif kernel == "reference":
                        def fn():
                            qkv, w, b = next_inputs()
                            elfatt_attention_reference(qkv, w, b, *case.args())

                        timing = time_launches(fn, rotate=1, samples=max(3, samples // 3), warmup=1, graph=False,
                                               target_ms=1.0)
                    else:  # vanilla attention over all heads, same tokens and width, flash backend
                        heads, d, n = case.heads, case.head_dim, case.tokens

                        def fn():
                            qkv = next_inputs()[0]
                            q, k, v = (t.reshape(case.batch, n, heads, d).transpose(1, 2)
                                       for t in qkv.split(case.channels, dim=-1))
                            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                                F.scaled_dot_product_attention(q, k, v)

                        timing = time_launches(fn, rotate=copies, samples=samples)
                        extra["kernels"] = kernel_names(fn)
                    buffers.clear()
                    torch.cuda.empty_cache()
                    status = "ok" if extra.get("output_ok", True) else "fail"
                    row = {"status": status, **timing, **extra}
                    row["fraction_of_floor"] = floor_us / row["median_us"]
                    return row

                base = {"case": case.name, "kernel": kernel, "kernel_path": path, "dtype": dtype,
                        "lepe_dtype": "float32" if case.lepe else None, **case.shape(),
                        "floor_bytes": floor_bytes, "floor_us": floor_us}
                jobs.append(Job("cases", key, run, base))
    return jobs


# ----------------------------------------------------------------------------- sanitizer


def classify_sanitizer(rc: Optional[int], output: str, timed_out: bool) -> tuple[str, str]:
    """(status, detail) of one compute-sanitizer run: clean, errors, skipped (device refuses), timeout, error."""
    lower = output.lower()
    refusal = next((line.strip() for line in output.splitlines()
                    if any(r in line.lower() for r in SANITIZER_REFUSALS)), None)
    if timed_out:
        return "timeout", "did not finish in time; " + (output.strip().splitlines() or ["no output"])[-1][:300]
    if refusal and rc != 0:
        return "skipped", f"the device refuses compute-sanitizer: {refusal[:300]}"
    summary = re.search(r"ERROR SUMMARY: (\d+) error", output)
    if rc == 0 and (summary is None or summary.group(1) == "0"):
        return "clean", summary.group(0) if summary else "exit 0"
    if summary and summary.group(1) != "0":
        return "errors", output.strip()[-3000:]
    if "traceback" in lower or rc != 0:
        return "error", f"exit {rc}: " + output.strip()[-2000:]
    return "clean", "exit 0"


def sanitize_case(module, name: str) -> int:
    """Runs one small case for every dtype and kernel path (no checks: the sanitizer judges)."""
    import torch

    case = SANITIZE_CASES[name]
    gen = torch.Generator(device="cuda").manual_seed(0)
    launches = 0
    for dtype in DTYPES:
        for lepe_dtype in sorted({dtype, "float32"}):
            for path in ALL_PATHS:
                qkv, weight, bias = make_inputs(case, dtype, lepe_dtype, "cuda", gen)
                run_kernel(module, case, qkv, weight, bias, path, poison=False)
                launches += 1
    torch.cuda.synchronize()
    log(f"sanitize case {name}: ran {launches} calls")
    return 0


def sanitizer_jobs(tools: list[str], names: list[str], timeout: float, script_args: list[str]) -> list[Job]:
    sanitizer = find_sanitizer()
    state = {"refused": None}
    jobs = []
    for tool in tools:
        for name in names:
            def run(tool=tool, name=name):
                if sanitizer is None:
                    return {"status": "skipped", "seconds": 0.0,
                            "detail": "compute-sanitizer not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)"}
                if state["refused"]:
                    return {"status": "skipped", "seconds": 0.0, "detail": state["refused"]}
                cmd = [sanitizer, "--tool", tool, "--error-exitcode", "3", sys.executable, str(Path(__file__).resolve()),
                       "--sanitize-case", name, *script_args]
                start = time.monotonic()
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                    status, detail = classify_sanitizer(proc.returncode, proc.stdout + proc.stderr, False)
                except subprocess.TimeoutExpired as exc:
                    out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
                    status, detail = classify_sanitizer(None, out, True)
                if status == "skipped":
                    state["refused"] = detail
                log(f"compute-sanitizer --tool {tool} {name}: {status}")
                return {"status": status, "seconds": time.monotonic() - start, "detail": detail}

            jobs.append(Job("sanitizer", f"{tool}|{name}", run, {"tool": tool, "case": name}))
    return jobs


# ----------------------------------------------------------------------------- tables and plot

def print_verify(rows: list[dict]) -> bool:
    failed = [r for r in rows if r.get("status") != "ok"]
    if not rows:
        return True
    width = max(len(r["case"]) for r in rows)
    log(f"{'case':<{width}}  dtype     LePE      path        rel-L2     limit   result")
    for r in rows:
        if r.get("status") == "ok" and len(rows) > 60:
            continue  # long grids: print the failures only
        err = "-" if r.get("rel_l2") is None else f"{r['rel_l2']:.2e}"
        limit = "-" if r.get("limit") is None else f"{r['limit']:.1e}"
        status = r.get("status", "?")
        if status == "fail" and r.get("non_finite"):
            status = f"UNWRITTEN/NaN x{r['non_finite']}"
        elif status == "error":
            status = f"ERROR {r.get('error', '')[:120]}"
        log(f"{r['case']:<{width}}  {r['dtype']:<8}  {str(r.get('lepe_dtype') or '-'):<8}  {r['path']:<10}  "
            f"{err:>9}  {limit:>7}  {status}")
    log(f"verification: {len(rows) - len(failed)}/{len(rows)} passed")
    return not failed


def bench_table(rows: list[dict]) -> list[str]:
    """One line per (case, dtype): v1, v2, reference, SDPA, floor (us), v1/v2 fraction of floor, v2 vs SDPA."""
    by = {}
    for r in rows:
        by.setdefault((r["case"], r["dtype"]), {})[r["kernel"]] = r

    def us(row):
        if row is None:
            return f"{'-':>9}"
        if row.get("status") == "error" or row.get("median_us") is None:
            return f"{'ERROR':>9}"
        return f"{row['median_us']:9.1f}"

    def pct(row):
        if row is None or row.get("median_us") is None:
            return f"{'-':>6}"
        return f"{100 * row['fraction_of_floor']:5.1f}%"

    width = max([len(c) for c, _ in by] + [4])
    lines = [f"{'case':<{width}}  dtype      v1 us     v2 us    ref us   sdpa us  floor us  v1 %fl  v2 %fl  v2/sdpa"]
    for (case, dtype), k in by.items():
        floor = next((r["floor_us"] for r in k.values() if r.get("floor_us") is not None), None)
        v2, sdpa = k.get("v2"), k.get("sdpa")
        speed = "-"
        if v2 and sdpa and v2.get("median_us") and sdpa.get("median_us"):
            speed = f"{sdpa['median_us'] / v2['median_us']:.2f}x"
        flags = [f"{name} output FAIL" for name in ("v1", "v2") if k.get(name, {}).get("status") == "fail"]
        notes = [k[name]["note"] for name in ("v2",) if k.get(name, {}).get("note")]
        tail = ("  " + "; ".join(flags + notes)) if flags or notes else ""
        lines.append(f"{case:<{width}}  {dtype:<8} {us(k.get('v1'))} {us(v2)} {us(k.get('reference'))} {us(sdpa)} "
                     f"{'-' if floor is None else f'{floor:9.1f}':>9}  {pct(k.get('v1'))}  {pct(v2)}  {speed:>7}{tail}")
    return lines


def print_bench(rows: list[dict], environment: dict, bandwidth: Optional[dict]) -> None:
    if bandwidth:
        log(f"device-to-device copy bandwidth {bandwidth['GBps']:.0f} GB/s (read + write); "
            f"floor = (qkv + out bytes) / that bandwidth")
    log(f"GPU {environment.get('gpu')} (sm_{str(environment.get('capability', '?')).replace('.', '')}), driver "
        f"{environment.get('driver')}, torch {environment.get('torch')} (CUDA {environment.get('cuda_torch')}); "
        "median us per call; kernels and SDPA from CUDA-graph replays, reference eager")
    for line in bench_table(rows):
        log(line)


def save_plot(rows: list[dict], path: Path, title: str) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: PNG skipped (pip install matplotlib)")
        return None
    from elfatt_deploy.atomic import atomic_output

    groups = []
    for r in rows:
        if (r["case"], r["dtype"]) not in groups:
            groups.append((r["case"], r["dtype"]))
    series = [("v1 (tensorcore)", "v1"), ("v2 (fused)", "v2"), ("eager reference", "reference"),
              ("SDPA flash (vanilla)", "sdpa"), ("memory floor", "floor")]
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(groups)), 5))
    try:
        width = 0.16
        for i, (label, kernel) in enumerate(series):
            values = []
            for case, dtype in groups:
                match = [r for r in rows if (r["case"], r["dtype"]) == (case, dtype)]
                if kernel == "floor":
                    values.append(next((r["floor_us"] for r in match if r.get("floor_us")), 0.0))
                else:
                    values.append(next((r.get("median_us") or 0.0 for r in match if r["kernel"] == kernel), 0.0))
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
            ax.bar(xs, values, width, label=label)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{c}\n{d}" for c, d in groups], fontsize=7)
        ax.set_ylabel("us per call (median)")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    log(f"wrote {path}")
    return path


# ----------------------------------------------------------------------------- environment

def gpu_state() -> Optional[str]:
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu,"
                               "utilization.gpu", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else None
    except Exception:
        return None


def environment(module) -> dict:
    import torch

    from elfatt_deploy.op import cuda_backend

    props = torch.cuda.get_device_properties(0)
    env = {"gpu": torch.cuda.get_device_name(0), "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
           "sm_count": props.multi_processor_count, "l2_bytes": int(getattr(props, "L2_cache_size", 0)) or None,
           "memory_bytes": props.total_memory, "torch": torch.__version__, "cuda_torch": torch.version.cuda,
           "python": platform.python_version(), "platform": platform.platform(),
           "kernels_version": module.version(), "gpu_state_start": gpu_state()}
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except Exception:
        env["driver"] = "unknown (nvidia-smi not available)"
    try:
        nvcc = cuda_backend.find_cuda_home() / "bin" / "nvcc"
        env["nvcc"] = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True,
                                     timeout=20).stdout.strip().splitlines()[-1]
    except Exception:
        env["nvcc"] = "unknown"
    return env


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="reduced verification grid, fp16 timings of the issue's cases: < 5 min with the build")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--verify-only", action="store_true", help="no timings")
    only.add_argument("--bench-only", action="store_true", help="no verification grid")
    parser.add_argument("--sanitize", action="store_true", help="also run compute-sanitizer on small odd shapes")
    parser.add_argument("--sanitize-tools", default="memcheck",
                        help="comma-separated compute-sanitizer tools (memcheck, racecheck, initcheck, synccheck)")
    parser.add_argument("--sanitize-timeout", type=float, default=180.0, help="seconds per sanitizer case")
    parser.add_argument("--sanitize-case", choices=sorted(SANITIZE_CASES), help=argparse.SUPPRESS)
    parser.add_argument("--dtypes", help="verification dtypes (default float32,float16,bfloat16)")
    parser.add_argument("--paths", help=f"kernel paths to verify (default {','.join(ALL_PATHS)})")
    parser.add_argument("--bench-dtypes", help="timing dtypes (default float16; full mode float16,bfloat16)")
    parser.add_argument("--samples", type=int, help="timed samples per row (default 15 quick, 30 full)")
    parser.add_argument("--case-timeout", type=float, default=None,
                        help="seconds one case may run before the run restarts past it (default 60 with --quick, "
                             "else 120; 0: no watchdog)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds from the start after which the cases not yet run are recorded as skipped and "
                             "the run ends with its summary (default 420 with --quick, to fit a 15-minute device "
                             "budget with a rerun; else none; 0: none); kept across restarts")
    parser.add_argument("--max-restarts", type=int, default=2, help="fresh processes after a lost CUDA context")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="folder for JSON and PNG")
    parser.add_argument("--verbose-build", action="store_true")
    parser.add_argument("--resume", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--restarts", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--self-test", action="store_true",
                        help="CPU-only check of this script (fakes; eager reference standing in for the kernels)")
    args = parser.parse_args(argv)
    for name in ("samples",):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name}={value} must be >= 1")
    for name, allowed in (("dtypes", DTYPES), ("paths", ALL_PATHS), ("bench_dtypes", ("float16", "bfloat16"))):
        value = getattr(args, name)
        if value is not None:
            items = [v for v in value.split(",") if v]
            bad = [v for v in items if v not in allowed]
            if bad or not items:
                parser.error(f"--{name.replace('_', '-')}={value!r}: {', '.join(bad) or 'empty'} not in "
                             f"{', '.join(allowed)}")
    return args


def _restart(args, json_path: Path, reason: str) -> None:
    """Continues the run in a fresh process (a new CUDA context), skipping what the JSON has."""
    if args.restarts >= args.max_restarts:
        log(f"not restarting again ({args.restarts} restarts, --max-restarts {args.max_restarts}): {reason}")
        return
    log(f"restarting in a fresh process ({reason})")
    argv = [a for a in sys.argv[1:]]
    for flag in ("--resume", "--restarts"):
        while flag in argv:
            i = argv.index(flag)
            del argv[i:i + 2]
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ["PYTHONUNBUFFERED"] = "1"
    os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv, "--resume", str(json_path),
                              "--restarts", str(args.restarts + 1)])


def main(argv=None) -> int:
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    args = parse_args(argv)
    if args.sanitize_case:  # the child process compute-sanitizer runs
        from elfatt_deploy.op import cuda_backend

        return sanitize_case(cuda_backend.build_extension(), args.sanitize_case)
    from elfatt_deploy.atomic import check_output_path

    json_path = args.out / JSON_NAME
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        check_output_path(json_path, what="--out")
    except (OSError, ValueError) as exc:
        print(f"error: --out {args.out}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.self_test:
        from kernels_gpu_selftest import self_test

        return self_test(args.out)

    results = ResultsFile.resume(args.resume, SCHEMA) if args.resume else ResultsFile(json_path, SCHEMA)
    if args.case_timeout is None:
        args.case_timeout = 60.0 if args.quick else 120.0
    if args.deadline is None:
        args.deadline = 420.0 if args.quick else 0.0
    # an automatic restart (--restarts > 0) keeps the first process's deadline; a rerun by hand gets a new one
    deadline_at = results.data.get("deadline_at") if args.resume and args.restarts > 0 else None
    if deadline_at is None and args.deadline > 0:
        deadline_at = time.time() + args.deadline
    results.set(deadline_at=deadline_at)
    mode = "quick" if args.quick else "full"
    dtypes = (args.dtypes or ",".join(DTYPES)).split(",")
    paths = (args.paths or ",".join(ALL_PATHS)).split(",")
    bench_dtypes = (args.bench_dtypes or ("float16" if args.quick else "float16,bfloat16")).split(",")
    samples = args.samples or (15 if args.quick else 30)
    results.set(argv=sys.argv, settings={"mode": mode, "dtypes": dtypes, "paths": paths, "bench_dtypes": bench_dtypes,
                                         "samples": samples, "seed": args.seed, "sanitize": args.sanitize,
                                         "restarts": args.restarts, "timed_kernels": TIMED_KERNELS,
                                         "case_timeout_s": args.case_timeout, "deadline_s": args.deadline})

    start = time.monotonic()
    log(f"[{now()}] preflight")
    checks = run_preflight(Probe(), sanitize=args.sanitize)
    print_preflight(checks)
    results.set(preflight=[c.__dict__ for c in checks])
    if not all(c.ok for c in checks):
        results.set(status="preflight failed")
        log(f"preflight failed after {time.monotonic() - start:.1f} s: fix the FAIL lines above; wrote {json_path}")
        return EXIT_ENVIRONMENT

    import torch

    from elfatt_deploy.op import cuda_backend

    log(f"[{now()}] building the extension (kernel sources of plugins/CMakeLists.txt + plugins/torch)")
    try:
        module = cuda_backend.build_extension(verbose=args.verbose_build)
    except cuda_backend.CudaBackendError as exc:
        results.set(status="build failed", build={"error": str(exc)[-6000:]})
        log(f"error: {exc}")
        return EXIT_ENVIRONMENT
    info = cuda_backend.build_info()
    build = dict(info)
    if args.resume and results.data.get("build"):  # keep what the first process measured
        build["first_process"] = results.data["build"].get("first_process", results.data["build"])
    results.set(build=build)
    log(f"extension {'built' if info.get('built') else 'loaded from the cache'} in {info['seconds']:.1f} s for "
        f"{info.get('archs') or 'torch default archs'}: {info.get('library')}")
    env = environment(module)
    results.set(environment={**results.data.get("environment", {}), **env})
    log(json.dumps(env))

    def on_timeout(job: Job) -> None:
        results.add(job.section, {"key": job.key, **job.base, "status": "error",
                                  "error": f"timeout: still running after --case-timeout {args.case_timeout:g} s"})
        _restart(args, json_path, f"{job.key} timed out")
        os._exit(EXIT_CHECK_FAILED)

    guard = dict(context_alive=cuda_context_alive, case_timeout=args.case_timeout, on_timeout=on_timeout,
                 deadline=deadline_at)
    try:
        if not args.bench_only:
            cases = QUICK_VERIFY_CASES if args.quick else VERIFY_CASES
            log(f"[{now()}] verification: {len(cases)} cases x {dtypes} x {paths}")
            if "bfloat16" in dtypes and not torch.cuda.is_bf16_supported():
                dtypes = [d for d in dtypes if d != "bfloat16"]
                log("bfloat16 not supported on this GPU: skipped")
            run_jobs(verify_jobs(module, cases, dtypes, paths, args.seed) + empty_problem_jobs(module), results,
                     desc="verify", **guard)
            print_verify(results.data["verification"])
            log(f"[{now()}] binding checks")
            run_jobs(binding_jobs(module, args.seed) + state_jobs(module, args.seed), results,
                     on_row=lambda r: log(f"  {r['status']:<5} {r['check']}: {r.get('detail') or r.get('error')}"),
                     **guard)
        if not args.verify_only:
            props = torch.cuda.get_device_properties(0)
            l2 = int(getattr(props, "L2_cache_size", 0)) or (50 << 20)
            if "copy_bandwidth" not in results.data:
                results.set(copy_bandwidth=copy_bandwidth(l2))
            bandwidth = results.data["copy_bandwidth"]
            log(f"[{now()}] timings ({len(TIMED_CASES)} cases x {bench_dtypes}; copy bandwidth "
                f"{bandwidth['GBps']:.0f} GB/s)")
            run_jobs(bench_jobs(module, TIMED_CASES, bench_dtypes, list(TIMED_KERNELS), args.seed, samples,
                                bandwidth, l2), results,
                     on_row=lambda r: log(f"  {r['case']:<18} {r['kernel']:<9} {r['dtype']:<8} "
                                          + (f"{r['median_us']:9.1f} us" if r.get("median_us") else
                                             f"{r['status']}: {r.get('error')}")), **guard)
        if args.sanitize:
            names = list(QUICK_SANITIZE_NAMES if args.quick else SANITIZE_CASES)
            tools = [t for t in args.sanitize_tools.split(",") if t]
            log(f"[{now()}] compute-sanitizer: {tools} x {names} (timeout {args.sanitize_timeout:g} s each)")
            run_jobs(sanitizer_jobs(tools, names, args.sanitize_timeout, ["--out", str(args.out / "sanitizer")]),
                     results, context_alive=lambda: True, deadline=deadline_at)
    except ContextLost as exc:
        results.set(status=f"restarting: {exc}")
        _restart(args, json_path, str(exc))
        results.set(status=f"aborted: {exc}")
        return EXIT_CHECK_FAILED

    env_end = {**results.data["environment"], "gpu_state_end": gpu_state()}
    data = results.data
    failed = ([r for r in data["verification"] + data["binding"] if r.get("status") != "ok"]
              + [r for r in data["cases"] if r.get("status") != "ok"]
              + [r for r in data["sanitizer"] if r.get("status") in ("errors", "error", "timeout")])
    seconds = time.monotonic() - start + (data.get("seconds") or 0.0 if args.resume else 0.0)
    results.set(environment=env_end, status="complete", seconds=seconds)
    if data["cases"]:
        save_plot(data["cases"], args.out / PNG_NAME, f"ElfattAttention on {env.get('gpu')} (median us per call)")
    if data["sanitizer"]:
        for r in data["sanitizer"]:
            log(f"sanitizer {r['tool']:<9} {r['case']:<16} {r['status']}: {str(r.get('detail'))[:160]}")
    if data["verification"] and len(data["verification"]) > 60:
        log(f"verification: {sum(r.get('status') == 'ok' for r in data['verification'])}/"
            f"{len(data['verification'])} passed")
    log(f"extension {'build' if data['build'].get('built') else 'load'} {data['build'].get('seconds', 0):.1f} s; "
        f"whole run {seconds:.1f} s; wrote {json_path}")
    if data["cases"]:
        print_bench(data["cases"], env_end, data.get("copy_bandwidth"))
    skipped = [r for r in failed if r.get("status") == "skipped"]
    if skipped:
        log(f"{len(skipped)} checks skipped at the deadline (--deadline {args.deadline:g} s): rerun with --resume "
            f"{json_path} and a later --deadline for them")
    for r in failed[:20]:
        log(f"FAILED {r.get('key')}: {r.get('status')} {str(r.get('error') or r.get('detail') or '')[:200]}")
    log("ALL CHECKS PASSED" if not failed else f"{len(failed)} CHECKS FAILED")
    return EXIT_OK if not failed else EXIT_CHECK_FAILED


if __name__ == "__main__":
    sys.exit(main())
