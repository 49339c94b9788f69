#!/usr/bin/env python3
"""Verify and time the ElfattAttention CUDA kernels on a GPU machine.

    python bench/kernels_gpu.py                     # verify (all dtypes, every kernel path) + sanitize + bench
    python bench/kernels_gpu.py --verify-only
    python bench/kernels_gpu.py --bench-only --out results/
    python bench/kernels_gpu.py --sanitize-only [--sanitize-tools memcheck,racecheck]
    python bench/kernels_gpu.py --sanitize-case odd-partial   # one case, meant to run under compute-sanitizer

Verification: the extension (built from plugins/ by elfatt_deploy.op.cuda_backend)
against the eager reference run in float64 on the same GPU, over a grid of
shapes (partial windows, stripes, whole-axis windows, global-only, local-only,
LePE on/off, head dims 16/32/64 and generic ones, B up to 8, H or W = 1).
rel-L2 limit: 1e-5 for float32, 2e-3 for float16/bfloat16 (or 1.25x the error of
the exact answer rounded to the dtype, where that is larger). The output is
poisoned with NaN first, so an element the kernels never write fails the check.

Benchmark (fp16, B=8): CSWin-T stages 1-3 at 512x512, ViT-S/16 at 1024x1024 with
7x7 windows, a 256x256-token high-resolution layer (7x7 windows, 7-row stripes).
For each: the kernels (auto = tensor cores for fp16, and the SIMT tiled kernel
side by side), the eager reference, torch SDPA (flash backend, vanilla
attention over all heads of the same qkv), and the memory floor = bytes
read + written / device copy bandwidth measured in the same run. Inputs rotate
over enough buffers to exceed the L2 cache. Results: a table on stdout, JSON
(and a PNG when matplotlib is installed) written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

try:
    from tqdm import tqdm
except ImportError:  # optional
    def tqdm(iterable, **_kwargs):
        return iterable

TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-3}
PATHS = {"auto": 0, "tiled": 1, "generic": 2, "tensorcore": 3}


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    height: int
    width: int
    channels: int
    global_heads: int
    local_heads: int
    window_h: int
    window_w: int
    lepe: bool = True
    scale: float = 0.0
    magnitude: float = 1.0  # std of q and k (large values stress the max-subtracted softmax)
    tol_factor: float = 1.0  # logits of size ~L carry float32 rounding errors ~L * eps: looser limit

    @property
    def head_dim(self) -> int:
        return self.channels // (self.global_heads + self.local_heads)

    def args(self):
        return (self.global_heads, self.local_heads, self.window_h, self.window_w, self.scale)


# The verification grid. Head dims: 16/32/64 take the tiled local kernel; others the generic one.
VERIFY_CASES = [
    Case("partial-7x7-d32", 2, 9, 13, 96, 1, 2, 7, 7),
    Case("partial-7x7-d32-nolepe", 2, 9, 13, 96, 1, 2, 7, 7, lepe=False),
    Case("partial-7x7-d16", 3, 15, 11, 48, 1, 2, 7, 7),
    Case("partial-7x7-d64", 2, 20, 22, 256, 2, 2, 7, 7),
    Case("stripes-2rows-d32", 2, 14, 20, 64, 1, 1, 2, 0),
    Case("stripes-7rows-d32", 1, 30, 17, 128, 2, 2, 7, 0),
    Case("stripes-7x256-d32", 1, 14, 256, 64, 1, 1, 7, 0),
    Case("stripes-1row-d64", 2, 9, 70, 128, 1, 1, 1, 0),
    Case("vertical-stripes-d32", 2, 12, 12, 64, 0, 2, 0, 3),
    Case("whole-grid-window-d32", 1, 40, 40, 64, 1, 1, 0, 0),
    Case("window-larger-than-grid", 2, 5, 6, 64, 1, 1, 9, 11),
    Case("global-only-d32", 3, 16, 16, 64, 2, 0, 0, 0),
    Case("global-only-d64-many-chunks", 1, 200, 200, 64, 1, 0, 0, 0),
    Case("global-only-d64-nolepe", 2, 33, 65, 128, 2, 0, 0, 0, lepe=False),
    Case("local-only-d32", 2, 15, 15, 128, 0, 4, 7, 7),
    Case("local-only-d64-scale", 2, 15, 15, 128, 0, 2, 7, 7, scale=0.37),
    Case("batch-8", 8, 7, 7, 64, 1, 1, 7, 7),
    Case("h1", 2, 1, 37, 64, 1, 1, 7, 7),
    Case("w1", 2, 23, 1, 64, 1, 1, 0, 0),
    Case("h1-w1", 3, 1, 1, 64, 1, 1, 7, 7),
    Case("generic-d24", 2, 11, 9, 48, 1, 1, 4, 5),
    Case("generic-d48", 2, 11, 9, 96, 1, 1, 7, 7),
    Case("generic-d80", 1, 10, 12, 160, 1, 1, 5, 0),
    Case("generic-d128", 1, 17, 9, 256, 1, 1, 7, 7),
    Case("generic-d5", 2, 8, 8, 15, 1, 2, 3, 3),
    Case("d192-global", 1, 12, 12, 384, 1, 1, 7, 7),
    Case("large-logits", 2, 14, 14, 64, 1, 1, 7, 7, magnitude=12.0, tol_factor=10.0),
    Case("high-res-multichunk", 1, 128, 130, 64, 1, 1, 7, 7),
]

# Small odd shapes for compute-sanitizer (fast under instrumentation).
SANITIZE_CASES = {
    "odd-partial": Case("odd-partial", 2, 9, 13, 96, 1, 2, 7, 7),
    "odd-stripes": Case("odd-stripes", 1, 11, 70, 64, 1, 1, 3, 0),
    "odd-generic": Case("odd-generic", 2, 5, 7, 15, 1, 2, 2, 3),
    "odd-h1": Case("odd-h1", 2, 1, 33, 64, 1, 1, 7, 7),
    "odd-global-d100": Case("odd-global-d100", 1, 19, 23, 200, 1, 1, 0, 0),
    "odd-chunks": Case("odd-chunks", 1, 45, 47, 32, 1, 0, 0, 0),
}

# Benchmark layers (B = 8, fp16, LePE on).
BENCH_CASES = [
    Case("cswin-t-s1 (128x128, C64, 1+1, 1-row stripes)", 8, 128, 128, 64, 1, 1, 1, 0),
    Case("cswin-t-s2 (64x64, C128, 2+2, 2-row stripes)", 8, 64, 64, 128, 2, 2, 2, 0),
    Case("cswin-t-s3 (32x32, C256, 4+4, 7-row stripes)", 8, 32, 32, 256, 4, 4, 7, 0),
    Case("vit-s16@1024 (64x64, C384, 3+3, 7x7)", 8, 64, 64, 384, 3, 3, 7, 7),
    Case("high-res (256x256, C64, 1+1, 7x7)", 8, 256, 256, 64, 1, 1, 7, 7),
    Case("high-res (256x256, C64, 1+1, 7-row stripes)", 8, 256, 256, 64, 1, 1, 7, 0),
]


def _dtype(name):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def make_inputs(case: Case, dtype, device, generator):
    import torch

    c = case.channels
    qkv = torch.randn(case.batch, case.height, case.width, 3 * c, device=device, generator=generator)
    qkv[..., : 2 * c] *= case.magnitude
    weight = bias = None
    if case.lepe:
        weight = 0.3 * torch.randn(c, 1, 3, 3, device=device, generator=generator)
        bias = 0.1 * torch.randn(c, device=device, generator=generator)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(qkv), cast(weight), cast(bias)


def run_kernel(module, case, qkv, weight, bias, path, poison=True):
    import torch

    out = torch.empty(case.batch, case.height, case.width, case.channels, device=qkv.device, dtype=qkv.dtype)
    if poison:
        out.fill_(float("nan"))
    module.attention_into(out, qkv, weight, bias, *case.args(), PATHS[path])
    return out


def rel_l2(out, ref) -> float:
    diff = (out.double() - ref).norm().item()
    norm = ref.norm().item()
    return diff / norm if norm > 0 else diff


def verify(module, dtypes, paths, seed, device="cuda") -> list[dict]:
    import torch

    from elfatt_deploy.op.reference import elfatt_attention_reference
    from elfatt_deploy.validation.tolerances import op_rtol_l2

    gen = torch.Generator(device=device).manual_seed(seed)
    rows = []
    jobs = [(c, d, p) for c in VERIFY_CASES for d in dtypes for p in paths]
    for case, dname, path in tqdm(jobs, desc="verify", leave=False):
        qkv, weight, bias = make_inputs(case, _dtype(dname), device, gen)
        ref = elfatt_attention_reference(
            qkv.double(), None if weight is None else weight.double(), None if bias is None else bias.double(),
            *case.args())
        out = run_kernel(module, case, qkv, weight, bias, path)
        if device == "cuda":
            torch.cuda.synchronize()
        unwritten = int((~torch.isfinite(out)).sum().item())
        err = rel_l2(out, ref) if unwritten == 0 else float("nan")
        # The contract's limit, or 1.25x the error of the exact answer merely rounded to dtype where that
        # is larger (small bfloat16 outputs; elfatt_deploy.validation.tolerances.op_rtol_l2).
        limit = op_rtol_l2(dname, rel_l2(ref.to(_dtype(dname)), ref)) * case.tol_factor
        ok = unwritten == 0 and err <= limit
        rows.append(dict(case=case.name, dtype=dname, path=path, rel_l2=err, limit=limit,
                         non_finite=unwritten, ok=ok, shape=[case.batch, case.height, case.width, case.channels],
                         heads=[case.global_heads, case.local_heads], window=[case.window_h, case.window_w],
                         head_dim=case.head_dim))
    # Empty problems: no launch, empty output.
    for shape in ((0, 5, 5), (2, 0, 5), (2, 5, 0)):
        qkv = torch.randn(*shape, 3 * 64, device=device)
        out = module.attention(qkv, None, None, 1, 1, 7, 7, 0.0, -1)
        ok = tuple(out.shape) == (*shape, 64)
        rows.append(dict(case=f"empty-{shape}", dtype="float32", path="auto", rel_l2=0.0, limit=0.0,
                         non_finite=0, ok=ok, shape=list(shape) + [64], heads=[1, 1], window=[7, 7], head_dim=32))
    return rows


def print_verify(rows) -> bool:
    failed = [r for r in rows if not r["ok"]]
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  dtype     path     rel-L2     limit   result")
    for r in rows:
        status = "ok" if r["ok"] else ("UNWRITTEN/NaN x%d" % r["non_finite"] if r["non_finite"] else "FAIL")
        print(f"{r['case']:<{width}}  {r['dtype']:<8}  {r['path']:<7}  {r['rel_l2']:.2e}  {r['limit']:.1e}  {status}")
    print(f"verification: {len(rows) - len(failed)}/{len(rows)} passed")
    return not failed


# ----------------------------------------------------------------------------- sanitizer

def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "compute-sanitizer").is_file():
            return str(Path(root) / "bin" / "compute-sanitizer")
    return None


def sanitize_case(module, name: str) -> int:
    """Runs one small case for every dtype and kernel path (no checks: the sanitizer judges)."""
    import torch

    case = SANITIZE_CASES[name]
    gen = torch.Generator(device="cuda").manual_seed(0)
    for dname in TOLERANCE:
        for path in PATHS:
            qkv, weight, bias = make_inputs(case, _dtype(dname), "cuda", gen)
            run_kernel(module, case, qkv, weight, bias, path, poison=False)
    torch.cuda.synchronize()
    print(f"sanitize case {name}: ran {len(TOLERANCE) * len(PATHS)} launches")
    return 0


def sanitize_all(tools) -> list[dict]:
    sanitizer = find_sanitizer()
    if sanitizer is None:
        print("compute-sanitizer not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin): sanitizer runs skipped")
        return [dict(tool="-", case="-", ok=None, note="compute-sanitizer not found")]
    rows = []
    for tool in tools:
        for name in tqdm(SANITIZE_CASES, desc=f"sanitize {tool}", leave=False):
            cmd = [sanitizer, "--tool", tool, "--error-exitcode", "3", sys.executable, str(Path(__file__).resolve()),
                   "--sanitize-case", name]
            start = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            ok = proc.returncode == 0
            rows.append(dict(tool=tool, case=name, ok=ok, rc=proc.returncode, seconds=time.monotonic() - start,
                             log_tail="" if ok else (proc.stdout + proc.stderr)[-3000:]))
            print(f"compute-sanitizer --tool {tool} {name}: {'clean' if ok else 'ERRORS (rc %d)' % proc.returncode}")
            if not ok:
                print(rows[-1]["log_tail"])
    return rows


# ----------------------------------------------------------------------------- benchmark

def time_cuda(fn, warmup: int, reps: int) -> float:
    """Median milliseconds of fn() over reps runs, timed with CUDA events, after warmup runs."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(l2_bytes: int) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), on buffers far bigger than L2."""
    import torch

    n = max(512 << 20, 8 * l2_bytes)
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = time_cuda(lambda: dst.copy_(src), warmup=3, reps=20)
    del src, dst
    return 2 * n / (ms * 1e-3)


def bench(module, seed, reps, ref_reps, skip_reference) -> tuple[list[dict], dict]:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from elfatt_deploy.op.reference import elfatt_attention_reference

    props = torch.cuda.get_device_properties(0)
    l2 = int(getattr(props, "L2_cache_size", 50 << 20))
    bandwidth = copy_bandwidth(l2)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    rows = []
    for case in tqdm(BENCH_CASES, desc="bench", leave=False):
        dtype = torch.float16
        c = case.channels
        in_bytes = case.batch * case.height * case.width * 3 * c * 2
        out_bytes = case.batch * case.height * case.width * c * 2
        copies = max(2, math.ceil(3 * l2 / in_bytes))  # rotate so that the working set exceeds L2
        inputs = [make_inputs(case, dtype, "cuda", gen) for _ in range(copies)]
        out = torch.empty(case.batch, case.height, case.width, c, device="cuda", dtype=dtype)
        state = {"i": 0}

        def next_inputs():
            state["i"] = (state["i"] + 1) % copies
            return inputs[state["i"]]

        def ours():
            qkv, w, b = next_inputs()
            module.attention_into(out, qkv, w, b, *case.args(), PATHS["auto"])

        ours_ms = time_cuda(ours, warmup=5, reps=reps)

        def ours_simt():
            qkv, w, b = next_inputs()
            module.attention_into(out, qkv, w, b, *case.args(), PATHS["tiled"])

        simt_ms = time_cuda(ours_simt, warmup=5, reps=reps)

        ref_ms = None
        if not skip_reference:
            def reference():
                qkv, w, b = next_inputs()
                elfatt_attention_reference(qkv, w, b, *case.args())

            try:
                ref_ms = time_cuda(reference, warmup=1, reps=ref_reps)
            except torch.OutOfMemoryError:
                ref_ms = None
            torch.cuda.empty_cache()

        heads = case.global_heads + case.local_heads
        d = case.head_dim
        n = case.height * case.width

        def sdpa():
            qkv = next_inputs()[0]
            q, k, v = (t.reshape(case.batch, n, heads, d).transpose(1, 2) for t in qkv.split(c, dim=-1))
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                F.scaled_dot_product_attention(q, k, v)

        try:
            sdpa_ms = time_cuda(sdpa, warmup=2, reps=max(5, reps // 4))
        except RuntimeError as exc:  # flash unsupported for this head dim / GPU
            sdpa_ms = None
            print(f"SDPA flash unavailable for {case.name}: {exc}", file=sys.stderr)
        floor_ms = (in_bytes + out_bytes) / bandwidth * 1e3
        rows.append(dict(case=case.name, shape=[case.batch, case.height, case.width, c],
                         heads=[case.global_heads, case.local_heads], window=[case.window_h, case.window_w],
                         ours_ms=ours_ms, ours_simt_ms=simt_ms, reference_ms=ref_ms, sdpa_flash_ms=sdpa_ms, floor_ms=floor_ms,
                         fraction_of_floor=floor_ms / ours_ms, bytes=in_bytes + out_bytes))
        del inputs, out
        torch.cuda.empty_cache()
    return rows, {"copy_bandwidth_GBps": bandwidth / 1e9, "l2_bytes": l2}


def print_bench(rows, extra):
    fmt = lambda v: f"{'-':>8}" if v is None else f"{v:8.3f}"  # noqa: E731
    width = max(len(r["case"]) for r in rows)
    print(f"copy bandwidth {extra['copy_bandwidth_GBps']:.0f} GB/s, L2 {extra['l2_bytes'] / 2**20:.0f} MiB")
    print(f"{'layer (B=8, fp16)':<{width}}  ours ms  simt ms  ref ms   sdpa ms  floor ms  %floor  vs sdpa  vs ref")
    for r in rows:
        speed = "-" if r["sdpa_flash_ms"] is None else f"{r['sdpa_flash_ms'] / r['ours_ms']:.2f}x"
        vs_ref = "-" if r["reference_ms"] is None else f"{r['reference_ms'] / r['ours_ms']:.1f}x"
        print(f"{r['case']:<{width}}  {fmt(r['ours_ms'])} {fmt(r.get('ours_simt_ms'))} {fmt(r['reference_ms'])} "
              f"{fmt(r['sdpa_flash_ms'])} {fmt(r['floor_ms'])}  {100 * r['fraction_of_floor']:5.1f}%  {speed:>7}  {vs_ref}")


def environment() -> dict:
    import torch

    env = {"torch": torch.__version__, "cuda_torch": torch.version.cuda, "python": platform.python_version(),
           "gpu": torch.cuda.get_device_name(0), "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except Exception:
        env["driver"] = "unknown (nvidia-smi not available)"
    try:
        from elfatt_deploy.op import cuda_backend

        nvcc = cuda_backend.find_cuda_home() / "bin" / "nvcc"
        env["nvcc"] = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except Exception:
        env["nvcc"] = "unknown"
    return env


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (elfatt_deploy.atomic), creating the directory first."""
    from elfatt_deploy.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def save_plot(rows, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: PNG skipped (pip install matplotlib)")
        return
    labels = [r["case"].split(" (")[0] + "\n" + r["case"].split(" (")[-1].rstrip(")") for r in rows]
    series = [("ours (auto)", "ours_ms"), ("ours (SIMT tiled)", "ours_simt_ms"), ("eager reference", "reference_ms"),
              ("SDPA flash (vanilla)", "sdpa_flash_ms"), ("memory floor", "floor_ms")]
    fig, ax = plt.subplots(figsize=(13, 5))
    width = 0.16
    for i, (label, key) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, [r.get(key) or 0.0 for r in rows], width, label=label)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("ms (median, B=8, fp16)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    from elfatt_deploy.atomic import atomic_output

    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    print(f"wrote {path}")


class _StandInModule:
    """The eager reference (float32) behind the extension's interface: --self-test checks this
    script's plumbing on the CPU, where the kernels cannot run. ``skip`` leaves elements unwritten."""

    def __init__(self, skip_last_channel=False):
        self.skip_last_channel = skip_last_channel

    def attention(self, qkv, weight, bias, gh, lh, wh, ww, scale, path):
        from elfatt_deploy.op.reference import elfatt_attention_reference

        return elfatt_attention_reference(qkv, weight, bias, gh, lh, wh, ww, scale)

    def attention_into(self, out, qkv, weight, bias, gh, lh, wh, ww, scale, path):
        result = self.attention(qkv, weight, bias, gh, lh, wh, ww, scale, path)
        if self.skip_last_channel:
            out[..., :-1] = result[..., :-1]
        else:
            out.copy_(result)


def self_test(out_dir: Path) -> int:
    """CPU check of the verification plumbing: a correct stand-in passes, a lazy one is caught."""
    good = verify(_StandInModule(), ["float32"], ["auto"], seed=0, device="cpu")
    assert print_verify(good), "the eager reference must pass against itself"
    lazy = verify(_StandInModule(skip_last_channel=True), ["float32"], ["auto"], seed=0, device="cpu")
    unwritten = [r for r in lazy if r["case"] in {c.name for c in VERIFY_CASES}]
    assert all(not r["ok"] and r["non_finite"] > 0 for r in unwritten), "NaN poisoning must catch unwritten output"
    write_atomic(out_dir / "self_test.json", json.dumps({"verification": good}, default=str))
    # Table and plot plumbing on made-up timings (labelled as such; nothing here is a measurement).
    fake = [dict(case=c.name, ours_ms=1.0, ours_simt_ms=2.0, reference_ms=None if i else 9.0, sdpa_flash_ms=8.0,
                 floor_ms=0.5, fraction_of_floor=0.5) for i, c in enumerate(BENCH_CASES)]
    print("plumbing check of the benchmark table (made-up timings):")
    print_bench(fake, {"copy_bandwidth_GBps": 0.0, "l2_bytes": 0})
    save_plot(fake, out_dir / "self_test_plot.png")
    print("self-test passed")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--verify-only", action="store_true")
    mode.add_argument("--bench-only", action="store_true")
    mode.add_argument("--sanitize-only", action="store_true")
    mode.add_argument("--sanitize-case", choices=sorted(SANITIZE_CASES), help="run one small case (under a sanitizer)")
    parser.add_argument("--no-sanitize", action="store_true", help="skip the compute-sanitizer runs")
    parser.add_argument("--sanitize-tools", default="memcheck",
                        help="comma-separated compute-sanitizer tools (memcheck, racecheck, initcheck, synccheck)")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument("--paths", default="auto,tiled,generic",
                        help="kernel paths to verify (auto, tiled, generic, tensorcore); auto = tensor cores for "
                             "float16/bfloat16 where the GPU has them")
    parser.add_argument("--reps", type=int, default=50, help="timed runs per benchmark (median)")
    parser.add_argument("--ref-reps", type=int, default=5, help="timed runs of the eager reference")
    parser.add_argument("--skip-reference", action="store_true", help="do not time the eager reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="folder for JSON and PNG")
    parser.add_argument("--verbose-build", action="store_true")
    parser.add_argument("--self-test", action="store_true",
                        help="CPU-only check of this script (eager reference standing in for the kernels)")
    args = parser.parse_args(argv)

    import torch

    if args.self_test:
        return self_test(args.out)

    if not torch.cuda.is_available():
        print("no CUDA GPU visible: this script needs one (CI covers the CPU-side checks)", file=sys.stderr)
        return 2
    from elfatt_deploy.op import cuda_backend

    try:
        module = cuda_backend.build_extension(verbose=args.verbose_build)
    except cuda_backend.CudaBackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.sanitize_case:
        return sanitize_case(module, args.sanitize_case)

    report = {"environment": environment(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(json.dumps(report["environment"]))
    ok = True
    if not (args.bench_only or args.sanitize_only):
        dtypes = [d for d in args.dtypes.split(",") if d]
        if "bfloat16" in dtypes and not torch.cuda.is_bf16_supported():
            dtypes.remove("bfloat16")
            print("bfloat16 not supported on this GPU: skipped")
        rows = verify(module, dtypes, [p for p in args.paths.split(",") if p], args.seed)
        ok &= print_verify(rows)
        report["verification"] = rows
    if not (args.bench_only or args.verify_only or args.no_sanitize):
        rows = sanitize_all([t for t in args.sanitize_tools.split(",") if t])
        ok &= all(r["ok"] is not False for r in rows)
        report["sanitizer"] = rows
    if not (args.verify_only or args.sanitize_only):
        rows, extra = bench(module, args.seed, args.reps, args.ref_reps, args.skip_reference)
        print_bench(rows, extra)
        report["benchmark"] = rows
        report["benchmark_setup"] = extra
    report["ok"] = bool(ok)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.out / f"kernels_gpu-{stamp}.json"
    write_atomic(json_path, json.dumps(report, indent=2, default=str))
    print(f"wrote {json_path}")
    if report.get("benchmark"):
        save_plot(report["benchmark"], args.out / f"kernels_gpu-{stamp}.png")
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
