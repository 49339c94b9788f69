"""The CUDA kernels themselves, run on the CPU: host emulation under AddressSanitizer and UBSan.

g++ compiles the very kernel sources (plugins/kernels/src/*.cu, as C++ with
-DELFATT_HOST_EMULATION) together with plugins/kernels/tests/emulation, which maps the
CUDA features the kernels use onto CPU threads: one std::thread per CUDA thread of a block,
__shared__ as function-local statics, real barriers for __syncthreads/__syncwarp/shuffles,
and nvcuda::wmma at tile level. A small program (elfatt_emulate) runs
elfatt::enqueueWithPath on exact-size heap buffers and the outputs are compared with the
float64 reference (elfatt_deploy.op.reference) on the same rounded inputs.

What this proves, on every case below: the kernels' indexing (batch, heads, windows,
stripes, partial edge windows, query/key tiles, 64-wide context blocks, token chunks of
the global heads), masking of padded keys and channels, the online softmax (tile maxima,
rescaling, chunk merge), that every output element is written (outputs start as NaN),
that barriers are present where threads exchange shared memory and reached by all of them
(a divergent barrier aborts; shared memory is NaN-filled at every block start; each case
runs in one of three schedules, free threads or one warp at a time in forward or reverse
warp order, and the last two make a missing __syncthreads between warps show every time),
that no kernel reads or writes out of bounds (ASan on exact-size buffers and exact-size
dynamic shared memory, UBSan on static arrays), the wmma usage rules (32-byte aligned
pointers, ldm multiples of 16 bytes), the kernel each path picks, and the numerics within
the contract's tolerances. Launch limits (block size, shared memory) are checked as on
the device.

What it cannot show: real warp scheduling and timing (a race inside a warp, or one that
needs an interleaving the three schedules do not produce, may pass; shuffles order a
warp's lanes like a __syncwarp here), device math ulps (expf/exp2f are glibc's), the real
tensor-core fragment layouts (here every lane holds the whole tile), memory-model
subtleties (fences, visibility without barriers), and performance. Blocks of one launch
run one after another, at most ELFATT_EMULATION_MAX_BLOCKS (default 3) of them, over the
same block-stride loops: the grid-stride logic is exercised, inter-block concurrency is not.

The programs are built once per session (about 11 s on 2 cores; the whole file takes about
40 s cold, 30 s with the build cached in .pytest_cache under a digest of every input;
ELFATT_EMULATION_REBUILD=1 forces a build). Skips without g++ or the CUDA headers
(cuda_fp16.h); see plugins/kernels/tests/emulation/README.md.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from _elfatt_cases import OP_CASES, OpCase
from _naive_elfatt import rel_l2
from conftest import make_op_inputs
from elfatt_deploy.op.reference import elfatt_attention_reference
from elfatt_deploy.validation.tolerances import op_rtol_l2

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "plugins" / "kernels"
EMULATION = KERNELS / "tests" / "emulation"

DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
TYPE_NAMES = {torch.float32: "float", torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}
SHORT = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
GLOBAL_OUT_SMEM_LIMIT = 48 * 1024  # plan.h kGLOBAL_OUT_SMEM_LIMIT
RUN_TIMEOUT_S = 300


def find_cuda_include() -> Path | None:
    """The CUDA include directory, found like test_kernels_nvcc.py finds nvcc."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(nvcc).resolve().parents[1]))
    roots.append("/usr/local/cuda")
    for root in roots:
        if root and (Path(root) / "include" / "cuda_fp16.h").is_file():
            return Path(root) / "include"
    return None


def compile_flags(cuda_include: Path) -> list[str]:
    return [
        "-std=c++20", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-pthread",
        "-DELFATT_HOST_EMULATION",
        # torch.utils.cpp_extension and test_kernels_nvcc.py compile the sources with these.
        "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-D__CUDA_NO_HALF2_OPERATORS__",
        # Warnings are errors in our files; #pragma unroll is nvcc's, unknown to g++. -isystem keeps
        # the CUDA headers' own warnings out.
        "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
        "-isystem", str(cuda_include), f"-I{KERNELS / 'include'}", f"-I{KERNELS / 'src'}", f"-I{EMULATION}",
    ]


def _digest(cxx: str, flags: list[str], cuda_include: Path, sources: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.encode())
    h.update("\0".join(flags).encode())
    for name in ("cuda_runtime_api.h", "cuda_fp16.hpp", "cuda_bf16.hpp"):
        stat = (cuda_include / name).stat() if (cuda_include / name).exists() else None
        h.update(f"{name}:{stat and (stat.st_size, stat.st_mtime_ns)}".encode())
    inputs = set(sources)
    for folder in (KERNELS / "src", KERNELS / "include", EMULATION):
        inputs.update(p for p in folder.rglob("*") if p.is_file() and p.suffix in {".h", ".cuh", ".cu", ".cpp"})
    for path in sorted(inputs):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:20]


@dataclass
class Emulator:
    program: Path
    selftest: Path
    seconds: float
    cached: bool


def _build(cxx: str, flags: list[str], kernel_sources: list[Path], out_dir: Path) -> tuple[Path, Path]:
    runtime = EMULATION / "emulation_runtime.cpp"
    jobs = [(src, ["-x", "c++"]) for src in kernel_sources]
    jobs += [(KERNELS / "src" / "plan.cpp", []), (runtime, []), (EMULATION / "emulate_main.cpp", []),
             (EMULATION / "emulation_selftest.cpp", [])]
    jobs.sort(key=lambda job: -job[0].stat().st_size)  # biggest first: the two cores finish together

    def compile_one(job):
        src, lang = job
        obj = out_dir / (src.name + ".o")
        proc = subprocess.run([cxx, *flags, *lang, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        return src, obj, proc

    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        results = list(pool.map(compile_one, jobs))
    errors = [f"{src.relative_to(REPO)}:\n{proc.stderr}" for src, _, proc in results if proc.returncode != 0]
    if errors:
        pytest.fail("host-emulation build failed (g++ " + " ".join(flags) + "):\n" + "\n".join(errors)[-20000:])
    objects = {src.name: obj for src, obj, _ in results}
    program, selftest = out_dir / "elfatt_emulate", out_dir / "elfatt_emulation_selftest"
    link = [cxx, "-fsanitize=address,undefined", "-pthread"]
    libs = ["-ldl"]  # dladdr (part of libc since glibc 2.34)
    shared = [objects[s.name] for s in kernel_sources] + [objects["plan.cpp"], objects[runtime.name]]
    for target, objs in ((program, shared + [objects["emulate_main.cpp"]]),
                         (selftest, [objects["emulation_selftest.cpp"], objects[runtime.name]])):
        proc = subprocess.run([*link, *map(str, objs), *libs, "-o", str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"host-emulation link failed:\n{proc.stderr[-20000:]}")
    return program, selftest


@pytest.fixture(scope="module")
def emulator(request, tmp_path_factory) -> Emulator:
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not found: the host emulation of the CUDA kernels needs it")
    cuda_include = find_cuda_include()
    if cuda_include is None:
        pytest.skip("CUDA headers (cuda_fp16.h) not found under CUDA_HOME, CUDA_PATH, nvcc's root or "
                    "/usr/local/cuda: the host emulation compiles the kernels against them")
    flags = compile_flags(cuda_include)
    kernel_sources = sorted((KERNELS / "src").glob("*.cu"))
    digest = _digest(cxx, flags, cuda_include, kernel_sources)
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("elfatt_emulation") if cache is not None else tmp_path_factory.mktemp("elfatt_emulation")
    root = Path(root)
    final = root / digest
    rebuild = bool(os.environ.get("ELFATT_EMULATION_REBUILD"))
    if (final / "elfatt_emulate").is_file() and (final / "elfatt_emulation_selftest").is_file() and not rebuild:
        return Emulator(final / "elfatt_emulate", final / "elfatt_emulation_selftest", 0.0, True)
    work = tmp_path_factory.mktemp("emulation_build")
    start = time.monotonic()
    program, selftest = _build(cxx, flags, kernel_sources, work)
    seconds = time.monotonic() - start
    # Publish atomically (a staging folder renamed into place), keep only this digest (~10 MB).
    staging = root / f".{digest}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for binary in (program, selftest):
        shutil.copy2(binary, staging / binary.name)
    for old in root.iterdir():
        stale_staging = old.name.startswith(".") and time.time() - old.stat().st_mtime > 3600
        if (old.name != digest and not old.name.startswith(".")) or stale_staging or (old == final and rebuild):
            shutil.rmtree(old, ignore_errors=True)
    try:
        staging.rename(final)
    except OSError:  # another session published the same digest first: use that one
        shutil.rmtree(staging, ignore_errors=True)
    return Emulator(final / "elfatt_emulate", final / "elfatt_emulation_selftest", seconds, False)


def emulation_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ELFATT_EMULATION_", "ELFATT_KERNEL_PATH"))}
    env.update(ELFATT_EMULATION_TRACE="1", ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
    env.update(extra)
    return env


@dataclass
class Run:
    out: torch.Tensor | None
    proc: subprocess.CompletedProcess
    ref: torch.Tensor | None = None

    @property
    def kernels(self) -> list[str]:
        return re.findall(r"^host emulation: launch (\S+(?:, \S+)?) grid=", self.proc.stderr, re.M)


def run_case(emulator: Emulator, case: OpCase, dtype: torch.dtype, path: str, work: Path, rng,
             bias: bool = True, env: dict[str, str] | None = None, lepe_float32: bool = False) -> Run:
    """Random inputs rounded to dtype -> the emulated kernels, and the float64 reference on the same inputs.
    lepe_float32: the LePE weight and bias stay float32 (AttentionParams::lepeFloat32, hasLepe = 2)."""
    qkv, weight, lepe_bias = make_op_inputs(case, rng, dtype)
    if lepe_float32 and case.lepe:
        _, weight, lepe_bias = make_op_inputs(case, rng, torch.float32)
    if not bias:
        lepe_bias = None
    work.mkdir(parents=True, exist_ok=True)
    for name in ("qkv", "lepe_weight", "lepe_bias", "out"):
        (work / f"{name}.bin").unlink(missing_ok=True)
    for name, tensor in (("qkv", qkv), ("lepe_weight", weight), ("lepe_bias", lepe_bias)):
        if tensor is not None:
            tensor.contiguous().view(torch.uint8).numpy().tofile(work / f"{name}.bin")
    args = [case.batch, case.height, case.width, case.channels, case.global_heads, case.local_heads,
            case.window_h, case.window_w, repr(float(case.scale)), DTYPES[dtype],
            (2 if lepe_float32 else 1) if case.lepe else 0, path, work]
    proc = subprocess.run([str(emulator.program), *map(str, args)], capture_output=True, text=True,
                          env=env or emulation_env(), timeout=RUN_TIMEOUT_S)
    if proc.returncode != 0:
        return Run(None, proc)
    raw = torch.from_numpy(np.fromfile(work / "out.bin", dtype=np.uint8))
    out = raw.view(dtype).reshape(case.batch, case.height, case.width, case.channels)
    f64 = lambda t: None if t is None else t.double()  # noqa: E731
    ref = elfatt_attention_reference(f64(qkv), f64(weight), f64(lepe_bias), case.global_heads, case.local_heads,
                                     case.window_h, case.window_w, case.scale)
    return Run(out, proc, ref)


def assert_matches(run: Run, dtype: torch.dtype, what: str = "") -> float:
    assert run.proc.returncode == 0, (
        f"{what}: elfatt_emulate exited {run.proc.returncode}\n{run.proc.stderr[-12000:]}")
    out = run.out.double()
    unwritten = int(torch.isnan(out).sum())
    assert unwritten == 0, f"{what}: {unwritten} of {out.numel()} output elements are NaN (never written?)"
    err = rel_l2(out.numpy(), run.ref.numpy())
    # The contract's limit, or 1.25x the error of the exact answer merely rounded to dtype where
    # that is larger (small bfloat16 outputs, see elfatt_deploy.validation.tolerances.op_rtol_l2).
    rounding = rel_l2(run.ref.to(dtype).double().numpy(), run.ref.numpy())
    limit = op_rtol_l2(str(dtype).removeprefix("torch."), rounding)
    assert err <= limit, f"{what}: relative L2 error {err:.3g} > {limit:.3g}"
    return err


def expected_kernels(case: OpCase, dtype: torch.dtype, path: str, sm: int = 90) -> list[str]:
    """Which kernels plan.cpp / the launchers pick (the names the emulation traces)."""
    t, d = TYPE_NAMES[dtype], case.head_dim
    kd = 16 if d <= 16 else (32 if d <= 32 else 64)
    if path in ("fused", "auto") and fused_runs(case, dtype, sm):
        return [f"fusedPassKernel<{t}, {d}>"] + ([f"fusedOutputKernel<{t}, {d}>"] if case.global_heads else [])
    if path == "fused":
        path = "tensorcore"  # kernels v2 do not cover it: v1 runs
    names = []
    if case.global_heads:
        shared = path != "generic" and 4 * (d * d + 8 * d) <= GLOBAL_OUT_SMEM_LIMIT
        names.append(f"globalOutputKernel<{t}, {'true' if shared else 'false'}>")
    if case.local_heads:
        tensor_cores = (dtype == torch.float16 and sm >= 70) or (dtype == torch.bfloat16 and sm >= 80)
        if path == "generic" or d > 64:
            names.append(f"localGenericKernel<{t}>")
        elif path in ("auto", "tensorcore") and tensor_cores:
            names.append(f"localTensorCoreKernel<{t}, {kd}>")
        else:
            names.append(f"localTiledKernel<{t}, {kd}>")
    return names


def fused_runs(case: OpCase, dtype: torch.dtype, sm: int = 90) -> bool:
    """Whether kernels v2 run (plan.cpp fusedEligible, enqueue.cu): 16-bit types, d 32 or 64, sm_80+."""
    return dtype != torch.float32 and case.head_dim in (32, 64) and sm >= 80


# ------------------------------------------------------------------------------------------------
# The case grid: the binding-independent cases plus the shapes that stress the kernels' tiling.
# ------------------------------------------------------------------------------------------------
EXTRA_CASES = [
    OpCase("row-stripes-1x0", 1, 6, 9, 16, 1, 1, 1, 0),
    OpCase("col-stripes-0x2", 2, 7, 5, 32, 1, 1, 0, 2),
    OpCase("d24", 2, 5, 7, 24, 1, 2, 3, 3),
    OpCase("d20-unaligned-rows", 1, 5, 6, 20, 1, 1, 3, 4),  # d % 8 != 0: no 16-byte loads
    OpCase("d48", 1, 6, 6, 48, 1, 1, 4, 5, scale=0.3),
    OpCase("d80-generic-local", 1, 5, 6, 80, 1, 1, 3, 4),  # > 64: generic local kernel; 2 ctx blocks of 64
    OpCase("d128-ctx-not-in-smem", 1, 4, 5, 128, 1, 1, 2, 2, lepe=False),  # 69 KB ctx: global-memory path
    OpCase("big-windows", 1, 10, 13, 32, 0, 1, 9, 0),  # 117-token windows: 2 query tiles, 4 key tiles
    OpCase("sharp-softmax", 1, 6, 7, 32, 1, 1, 6, 7, scale=3.0),  # tile maxima move a lot
    OpCase("chunks-23x23", 1, 23, 23, 16, 1, 1, 7, 7),  # 529 tokens: 3 global-head chunks, the last shorter
    OpCase("chunks-global-only", 2, 17, 16, 16, 1, 0, 0, 0),  # 2 x 272 tokens: 2 chunks per batch item
]
ALL_CASES = OP_CASES + EXTRA_CASES
# Kernels v2 cover head dims 32 and 64: the grid's cases at d = 16 and 24 run there at d = 32,
# plus shapes of their own tiling (query rectangles of stripes, several key tiles per window,
# the LePE halo tile, several reduction chunks, output tiles at the grid's edges).
FUSED_CASES = [replace(c, id=f"{c.id}-d32", head_dim=32) if c.head_dim in (16, 20, 24) else c
               for c in ALL_CASES if c.head_dim <= 64] + [
    OpCase("stripes-7-rows-d32", 1, 9, 30, 32, 1, 1, 7, 0),  # 7 x 9 query rectangles, 4 key tiles, halo
    OpCase("col-stripes-1-d32", 1, 70, 3, 32, 0, 2, 0, 1),  # 64 x 1 rectangles, halo clipped to the column
    OpCase("chunks-d64", 1, 26, 41, 64, 1, 1, 7, 7),  # 1066 tokens: 5 chunks, a 2-level merge tree; partial tiles
    OpCase("batch3-d64-sharp", 3, 9, 8, 64, 2, 1, 3, 0, scale=2.5),
    # 4900 tokens: 20 chunks of 256, a 3-level merge tree (20 -> 5 -> 2 -> 1: groups of one at the edge)
    OpCase("merge-tree-3-levels-d32", 1, 70, 70, 32, 1, 0, 0, 0),
]
PATHS = ("generic", "tiled", "auto")
ROTATION = (torch.float32, torch.float16, torch.bfloat16)
# free: all threads of a block run concurrently; forward / reverse: one warp at a time in warp
# order, so a missing __syncthreads between warps shows every time (see the emulation README).
SCHEDULES = ("free", "forward", "reverse")
# The generic local kernel does 5 warp shuffles per (query, key): the emulation's slowest path.
GENERIC_MAX_PAIRS = 6000


def _local_pairs(case: OpCase) -> int:
    wh = case.height if case.window_h == 0 else min(case.window_h, case.height)
    ww = case.width if case.window_w == 0 else min(case.window_w, case.width)
    total = 0
    for r0 in range(0, case.height, wh):
        for c0 in range(0, case.width, ww):
            total += ((min(r0 + wh, case.height) - r0) * (min(c0 + ww, case.width) - c0)) ** 2
    return case.batch * case.local_heads * total


def _fused_grid():
    """Every kernels-v2 case, float16 and bfloat16 alternating, the three schedules rotating."""
    params = []
    for k, case in enumerate(FUSED_CASES):
        dtype = (torch.float16, torch.bfloat16)[k % 2]
        schedule = SCHEDULES[(k // 2) % 3]  # with the dtype's period 2: all six (dtype, schedule) pairs per 6 cases
        params.append(pytest.param(case, "fused", dtype, schedule, id=f"{case.id}-fused-{SHORT[dtype]}-{schedule}"))
    return params


def test_the_fused_grid_runs_every_dtype_in_every_schedule():
    """(The rotation once paired float16 with one schedule and bfloat16 with another, so neither dtype ever
    ran warp-ordered in reverse.)"""
    pairs = {(p.values[2], p.values[3]) for p in _fused_grid()}
    assert pairs == {(d, s) for d in (torch.float16, torch.bfloat16) for s in SCHEDULES}, pairs


def _grid():
    """Every case on every explicit path (auto on every third case). Along each path the dtype
    and the schedule rotate so that every (dtype, schedule) pair comes up within 9 cases."""
    params, seen = [], {}
    for i, case in enumerate(ALL_CASES):
        for path in PATHS + ("tensorcore",):
            if path == "generic" and _local_pairs(case) > GENERIC_MAX_PAIRS:
                continue
            if path == "auto" and i % 3 != 0:
                continue  # auto runs tiled's kernels for float32 and tensorcore's for 16-bit types
            k = seen[path] = seen.get(path, -1) + 1
            dtype = (torch.float16, torch.bfloat16)[k % 2] if path == "tensorcore" else ROTATION[k % 3]
            schedule = SCHEDULES[(k + k // 3) % 3]
            test_id = f"{case.id}-{path}-{SHORT[dtype]}-{schedule}"
            params.append(pytest.param(case, path, dtype, schedule, id=test_id))
    return params


def test_emulation_builds(emulator):
    how = "cached build" if emulator.cached else f"built in {emulator.seconds:.1f} s"
    print(f"host emulation: {how}: {emulator.program}")
    assert emulator.program.is_file() and emulator.selftest.is_file()


@pytest.mark.parametrize("case, path, dtype, schedule", _grid() + _fused_grid())
def test_kernels_match_reference(emulator, tmp_path, rng, case, path, dtype, schedule):
    run = run_case(emulator, case, dtype, path, tmp_path, rng, env=emulation_env(ELFATT_EMULATION_SCHEDULE=schedule))
    assert_matches(run, dtype, f"{case.id} on path {path}, {dtype}")
    for name in expected_kernels(case, dtype, path):
        assert name in run.kernels, f"path {path} should run {name}; ran {run.kernels}"


@pytest.mark.parametrize("dtype, path", [(torch.float32, "tiled"), (torch.float16, "tensorcore"),
                                         (torch.bfloat16, "generic")])
def test_lepe_without_bias(emulator, tmp_path, rng, dtype, path):
    case = OpCase("no-bias", 2, 5, 6, 16, 1, 1, 3, 4)
    assert_matches(run_case(emulator, case, dtype, path, tmp_path, rng, bias=False), dtype, "LePE without bias")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("path", PATHS + ("tensorcore", "fused"))
def test_float32_lepe_with_16bit_activations(emulator, tmp_path, rng, dtype, path):
    """float32 LePE weight and bias (PyTorch autocast: fp32 parameters, fp16/bf16 qkv) are read as
    float32 by every kernel that adds LePE, global and local: read as 16-bit elements they would be noise."""
    case = OpCase("lepe-f32", 2, 6, 9, 32 if path == "fused" else 16, 1, 1, 4, 4)  # kernels v2: d = 32
    for with_bias in (True, False):
        run = run_case(emulator, case, dtype, path, tmp_path, rng, bias=with_bias, lepe_float32=True)
        assert_matches(run, dtype, f"float32 LePE (bias {with_bias}) on path {path}")
        if path == "fused":
            assert run.kernels[0].startswith("fusedPassKernel"), run.kernels


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("lepe_float32", [False, True], ids=["lepe16", "lepe32"])
def test_fused_lepe_from_unaligned_parameters(emulator, tmp_path, rng, dtype, lepe_float32):
    """LePE weight and bias one element off a 16-byte boundary (a view into a larger tensor, say): kernels
    v2 stage them element by element instead of as 16-byte vectors, into the same shared-memory layout
    (fused_common.cuh lepeIndex), for local (partial windows) and global heads, d = 32 and 64."""
    for case in (OpCase("lepe-unaligned-d32", 1, 9, 11, 32, 1, 1, 4, 4),
                 OpCase("lepe-unaligned-d64", 1, 8, 10, 64, 1, 1, 7, 7)):
        for with_bias in (True, False):
            run = run_case(emulator, case, dtype, "fused", tmp_path / f"{case.id}-{with_bias}", rng, bias=with_bias,
                           lepe_float32=lepe_float32, env=emulation_env(ELFATT_EMULATE_LEPE="unaligned"))
            assert_matches(run, dtype, f"unaligned LePE parameters ({case.id}, bias {with_bias})")
            assert run.kernels[0].startswith("fusedPassKernel"), run.kernels


STATE_CASES = [
    OpCase("state-chunks-d64", 1, 26, 41, 64, 1, 1, 7, 7),   # 5 reduction chunks of one (b, head): 2 tree levels
    OpCase("state-tree-d32", 2, 70, 70, 32, 1, 0, 0, 0),     # 20 chunks per (b, head): 3 levels, 2 trees
    OpCase("state-batch3-d32", 3, 9, 8, 64, 2, 0, 3, 0),     # 6 counters, one chunk each, global heads only
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("case", STATE_CASES, ids=lambda c: c.id)
def test_persistent_state_replaces_the_memset(emulator, tmp_path, rng, case, dtype):
    """enqueueWithState: two enqueues back to back on one caller-owned state, zeroed once; no
    cudaMemsetAsync in either; the second is right (so the first left every counter at zero: the driver
    also checks the state's bytes after each); the plain enqueue on the same case does memset."""
    run = run_case(emulator, case, dtype, "fused", tmp_path, rng, env=emulation_env(ELFATT_EMULATE_STATE="clean"))
    assert_matches(run, dtype, f"{case.id} with persistent state, second enqueue")
    passes = [k for k in run.kernels if k.startswith("fusedPassKernel")]
    assert len(passes) == 2, run.kernels
    assert "host emulation: memset" not in run.proc.stderr, "a memset ran although the state holds the counters"
    plain = run_case(emulator, case, dtype, "fused", tmp_path / "plain", rng)
    assert_matches(plain, dtype, f"{case.id} without state")
    assert len(re.findall(r"^host emulation: memset \d+ bytes", plain.proc.stderr, re.M)) == 1


@pytest.mark.parametrize("schedule", ["reverse", "free"])
def test_persistent_state_with_many_blocks_per_head(emulator, tmp_path, rng, schedule):
    """Three reduction blocks count the same (b, head) on one persistent state (64 emulated blocks: one per
    item), in reverse warp order too: the one that counts last merges and zeroes, twice in a row."""
    case = STATE_CASES[0]
    env = emulation_env(ELFATT_EMULATE_STATE="clean", ELFATT_EMULATION_MAX_BLOCKS="64",
                        ELFATT_EMULATION_SCHEDULE=schedule)
    run = run_case(emulator, case, torch.bfloat16, "fused", tmp_path, rng, env=env)
    assert_matches(run, torch.bfloat16, f"persistent state, one block per item, {schedule}")
    grids = re.findall(r"launch fusedPassKernel[^=]* grid=(\d+) \(emulated (\d+)\)", run.proc.stderr)
    assert len(grids) == 2 and all(int(e) == int(g) for g, e in grids), grids
    assert "host emulation: memset" not in run.proc.stderr


def test_persistent_state_too_small_or_misaligned(emulator, tmp_path, rng):
    """A state 4 bytes short of stateSize: the library takes the memset path (one per enqueue) and is right;
    a state pointer off a 4-byte boundary: refused with cudaErrorInvalidValue before any launch."""
    case = STATE_CASES[1]
    run = run_case(emulator, case, torch.float16, "fused", tmp_path / "small", rng,
                   env=emulation_env(ELFATT_EMULATE_STATE="small"))
    assert_matches(run, torch.float16, "state too small")
    assert len(re.findall(r"^host emulation: memset \d+ bytes", run.proc.stderr, re.M)) == 2, run.proc.stderr[-3000:]
    run = run_case(emulator, case, torch.float16, "fused", tmp_path / "misaligned", rng,
                   env=emulation_env(ELFATT_EMULATE_STATE="misaligned"))
    assert run.proc.returncode == 1 and "cudaErrorInvalidValue" in run.proc.stderr, run.proc.stderr[-3000:]
    assert "host emulation: launch" not in run.proc.stderr


def test_persistent_state_left_dirty_shows(emulator, tmp_path, rng):
    """What the test above would see if the kernels did not zero their counters: a state that starts
    non-zero loses the merge of the context, and the output is wrong (NaN here, the workspace's fill)."""
    case = STATE_CASES[0]
    run = run_case(emulator, case, torch.float16, "fused", tmp_path, rng,
                   env=emulation_env(ELFATT_EMULATE_STATE="dirty"))
    assert run.proc.returncode == 0, run.proc.stderr[-4000:]
    with pytest.raises(AssertionError, match="NaN|relative L2"):
        assert_matches(run, torch.float16, "dirty state")


def test_persistent_state_on_paths_without_counters(emulator, tmp_path, rng):
    """The state is kernels v2's alone: the tensor-core path (v1) and float32 ignore it and stay right."""
    case = STATE_CASES[0]
    for dtype, path in ((torch.float16, "tensorcore"), (torch.float32, "fused")):
        run = run_case(emulator, case, dtype, path, tmp_path / f"{path}-{SHORT[dtype]}", rng,
                       env=emulation_env(ELFATT_EMULATE_STATE="clean"))
        assert_matches(run, dtype, f"state on path {path}, {dtype}")
        assert not any(k.startswith("fusedPassKernel") for k in run.kernels), run.kernels


@pytest.mark.parametrize("max_blocks", [1, 64])
def test_emulated_grid_size(emulator, tmp_path, rng, max_blocks):
    """One block doing every work item, and (nearly) the full grid: same results."""
    case = OpCase("grid", 2, 7, 9, 16, 1, 1, 3, 4)
    env = emulation_env(ELFATT_EMULATION_MAX_BLOCKS=str(max_blocks))
    for dtype, path in ((torch.float32, "generic"), (torch.bfloat16, "tensorcore")):
        run = run_case(emulator, case, dtype, path, tmp_path / path, rng, env=env)
        assert_matches(run, dtype, f"ELFATT_EMULATION_MAX_BLOCKS={max_blocks}, path {path}")
        grids = re.findall(r"grid=(\d+) \(emulated (\d+)\)", run.proc.stderr)
        assert grids and all(int(e) == min(int(g), max_blocks) for g, e in grids), grids


@pytest.mark.parametrize("sm, dtype, kernel", [
    (75, torch.bfloat16, "localTiledKernel<__nv_bfloat16, 32>"),  # no bfloat16 tensor cores before sm_80
    (70, torch.float16, "localTensorCoreKernel<__half, 32>"),
    (87, torch.bfloat16, "localTensorCoreKernel<__nv_bfloat16, 32>"),  # Jetson Orin
])
def test_tensor_core_path_follows_the_device(emulator, tmp_path, rng, sm, dtype, kernel):
    case = OpCase("sm", 1, 6, 7, 32, 0, 2, 3, 4)
    run = run_case(emulator, case, dtype, "tensorcore", tmp_path, rng, env=emulation_env(ELFATT_EMULATION_SM=str(sm)))
    assert_matches(run, dtype, f"sm_{sm}")
    assert run.kernels == [kernel]


# ------------------------------------------------------------------------------------------------
# Kernels v2: they really run on mma.sync / ldmatrix / cp.async, fall back where they must, and
# cover every work item whatever the grid.
# ------------------------------------------------------------------------------------------------
def _counts(run: Run) -> dict[str, dict[str, int]]:
    found = re.findall(r"^host emulation: counted (\S+(?:, \S+)?) (mma\.sync=.*)$", run.proc.stderr, re.M)
    return {name: {k: int(v) for k, v in re.findall(r"(\S+)=(\d+)", rest)} for name, rest in found}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_fused_local_instruction_counts(emulator, tmp_path, rng, dtype):
    """Local heads only, 2 x 2 windows of 7 x 7, d = 32: per (window, head) item each of the 4 warps
    runs 4 sub-tiles of 16 keys (49 keys) x (2 k16 blocks x 2 n8 tiles for S + 4 n8 tiles for P V,
    twice for bfloat16's P_hi + P_lo), ldmatrix 2 (Q) + 4 x (2 K + 2 V), and the block copies
    64 rows x 4 chunks of 16 bytes of q, k and v: analytic counts, so a path that skipped the tensor
    cores (or copied a tile twice) shows."""
    case = OpCase("counts", 1, 14, 14, 32, 0, 1, 7, 7)
    run = run_case(emulator, case, dtype, "fused", tmp_path, rng)
    assert_matches(run, dtype, "instruction counts case")
    items, warps, subs = 4, 4, 4
    pv = 4 * (2 if dtype == torch.bfloat16 else 1)
    want = {"mma.sync": items * warps * subs * (2 * 2 + pv), "ldmatrix": items * warps * (2 + subs * 4),
            "cp.async": items * 3 * 64 * 4, "commit": items * 128, "wait": items * 128}
    got = _counts(run)[f"fusedPassKernel<{TYPE_NAMES[dtype]}, 32>"]
    assert got == want, (got, want)


@pytest.mark.parametrize("sm, kernels", [
    (75, ["localTensorCoreKernel<__half, 32>", "globalOutputKernel<__half, true>"]),  # no sm_80: v1
    (80, ["fusedPassKernel<__half, 32>", "fusedOutputKernel<__half, 32>"]),
    (87, ["fusedPassKernel<__half, 32>", "fusedOutputKernel<__half, 32>"]),  # Jetson Orin
])
def test_fused_path_follows_the_device(emulator, tmp_path, rng, sm, kernels):
    case = OpCase("sm", 1, 6, 7, 32, 1, 1, 3, 4)
    run = run_case(emulator, case, torch.float16, "fused", tmp_path, rng,
                   env=emulation_env(ELFATT_EMULATION_SM=str(sm)))
    assert_matches(run, torch.float16, f"fused on sm_{sm}")
    assert all(k in run.kernels for k in kernels), run.kernels
    assert any(k.startswith("fused") for k in run.kernels) == (sm >= 80), run.kernels


@pytest.mark.parametrize("sm, programmatic", [(90, True), (87, False), (80, False)])
def test_fused_output_is_a_programmatic_dependent_launch_on_sm90(emulator, tmp_path, rng, sm, programmatic):
    """sm_90: the output kernel goes through cudaLaunchKernelEx with programmatic stream serialization
    (PDL), the pass kernel executes griddepcontrol.launch_dependents (every thread of every block) and
    the output kernel griddepcontrol.wait (every thread, once per item); sm_87 (Jetson Orin, no PDL) and
    sm_80: a plain launch, and no griddepcontrol instruction (the kernels compile it out there)."""
    case = OpCase("pdl", 1, 6, 7, 32, 1, 1, 3, 4)
    run = run_case(emulator, case, torch.float16, "fused", tmp_path, rng,
                   env=emulation_env(ELFATT_EMULATION_SM=str(sm)))
    assert_matches(run, torch.float16, f"fused on sm_{sm}")
    launches = re.findall(
        r"^host emulation: launch (\S+(?:, \S+)?) grid=(\d+) \(emulated (\d+)\) .* dependency=(\w+)$", run.proc.stderr, re.M)
    dependency = {name: dep for name, _, _, dep in launches}
    assert dependency == {"fusedPassKernel<__half, 32>": "stream",
                          "fusedOutputKernel<__half, 32>": "programmatic" if programmatic else "stream"}, launches
    control = dict(re.findall(r"^host emulation: griddepcontrol (\S+(?:, \S+)?) (launch_dependents=.*)$",
                              run.proc.stderr, re.M))
    if not programmatic:
        assert control == {}, control
        return
    emulated = {name: int(e) for name, _, e, _ in launches}
    output_items = int(next(g for name, g, _, _ in launches if name.startswith("fusedOutputKernel")))
    threads = 128
    assert control == {
        "fusedPassKernel<__half, 32>": f"launch_dependents={emulated['fusedPassKernel<__half, 32>'] * threads} wait=0",
        "fusedOutputKernel<__half, 32>": f"launch_dependents=0 wait={output_items * threads}",
    }, control


@pytest.mark.parametrize("max_blocks", [1, 2, 64])
def test_fused_grid_split(emulator, tmp_path, rng, max_blocks):
    """The first launch splits its blocks between reduction and local items: one block doing both,
    two blocks (one of each), and (nearly) the full grid give the same, right result."""
    case = OpCase("split", 2, 9, 11, 32, 1, 1, 4, 4)
    run = run_case(emulator, case, torch.bfloat16, "fused", tmp_path, rng,
                   env=emulation_env(ELFATT_EMULATION_MAX_BLOCKS=str(max_blocks)))
    assert_matches(run, torch.bfloat16, f"fused with ELFATT_EMULATION_MAX_BLOCKS={max_blocks}")
    assert "fusedPassKernel<__nv_bfloat16, 32>" in run.kernels


@pytest.mark.slow
@pytest.mark.parametrize("case, dtype", [
    (OpCase("vit-s-64x64", 1, 64, 64, 64, 3, 3, 7, 7), torch.float16),  # ViT-S at 1024 x 1024
    (OpCase("vit-s-64x64", 1, 64, 64, 64, 3, 3, 7, 7), torch.bfloat16),
    (OpCase("cswin-t-stage1-512", 1, 128, 128, 32, 1, 1, 1, 0), torch.float16),  # 1-row stripes
    (OpCase("cswin-t-stage3-512", 1, 32, 32, 32, 4, 4, 7, 0), torch.bfloat16),  # 7-row stripes
], ids=lambda v: v.id if isinstance(v, OpCase) else SHORT[v])
def test_fused_full_size(emulator, tmp_path, rng, case, dtype):
    """The shapes of the issue's benchmark, every work item (1-5 minutes each on 2 cores, so only
    with ELFATT_EMULATION_FULL=1)."""
    if os.environ.get("ELFATT_EMULATION_FULL") != "1":
        pytest.skip("full-size emulation takes minutes per case: set ELFATT_EMULATION_FULL=1 to run it")
    run = run_case(emulator, case, dtype, "fused", tmp_path, rng, env=emulation_env(ELFATT_EMULATION_MAX_BLOCKS="8"))
    assert_matches(run, dtype, case.id)
    assert run.kernels[0].startswith("fusedPassKernel")


# ------------------------------------------------------------------------------------------------
# The harness can fail: broken params, a wrong output, and broken kernels are all caught.
# ------------------------------------------------------------------------------------------------
def test_invalid_params_are_rejected(emulator, tmp_path):
    # C = 50 is not divisible by 3 heads.
    proc = subprocess.run([str(emulator.program), "1", "4", "4", "50", "1", "2", "2", "2", "0", "0", "0", "auto",
                           str(tmp_path)], capture_output=True, text=True, env=emulation_env(), timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "divisible" in proc.stderr and "cudaErrorInvalidValue" in proc.stderr, proc.stderr


def test_comparison_fails_on_a_wrong_output(emulator, tmp_path, rng):
    case = OpCase("perturbed", 1, 5, 6, 16, 1, 1, 3, 3)
    run = run_case(emulator, case, torch.float32, "tiled", tmp_path, rng)
    assert_matches(run, torch.float32, "unperturbed")
    flat = run.out.view(-1)
    worst = int(torch.argmax(run.ref.abs().view(-1)))
    flat[worst] = flat[worst] * 1.01  # 1 % on one element of 180
    with pytest.raises(AssertionError, match="relative L2 error"):
        assert_matches(run, torch.float32, "perturbed")
    flat[worst] = float("nan")
    with pytest.raises(AssertionError, match="NaN"):
        assert_matches(run, torch.float32, "unwritten")


def test_emulation_selftest(emulator):
    """Shuffles, wmma, block-stride grids and launch checks of the emulation itself; mma.sync
    m16n8k16 (registers filled from the PTX ISA's fragment layouts, and through ldmatrix) against
    the float64 product; cp.async landing at its wait_group (NaN before), zero fill, and visible
    to another warp after the barrier."""
    for max_blocks, schedule in (("3", "free"), ("2", "forward"), ("5", "reverse")):
        env = emulation_env(ELFATT_EMULATION_MAX_BLOCKS=max_blocks, ELFATT_EMULATION_SCHEDULE=schedule,
                            ELFATT_EMULATION_TRACE="0")
        proc = subprocess.run([str(emulator.selftest), "positive"], capture_output=True, text=True, timeout=120,
                              env=env)
        assert proc.returncode == 0 and "selftest: all passed" in proc.stdout, proc.stdout + proc.stderr
        assert "cp.async: 64 of 64 own-lane checks, 64 of 64 cross-warp reads right" in proc.stdout, proc.stdout


BROKEN = [  # (self-test, schedule, what stderr must say)
    ("divergent", "free", r"divergent block barrier: .* at __syncthreads\(\) at .*emulation_selftest\.cpp:\d+ while .* "
                  r"wait at __syncthreads\(\) at .*emulation_selftest\.cpp:\d+ \[in divergentSyncthreads"),
    ("lost-lane", "free", r"barrier timeout \(divergent __syncthreads/__syncwarp\?\).*31 of 32 threads of the warp"
                          r".*lostLane"),
    ("early-exit", "forward", r"deadlock \(divergent __syncthreads\?\): warp 1 finished the kernel.*earlyExit"),
    ("early-exit-free", "free", r"barrier timeout .* 32 of 64 threads of the block waited 0.3 s .*earlyExit"),
    ("shared-overflow", "free", r"index 64 out of bounds for type 'float \[64\]'|global-buffer-overflow"),
    ("global-overflow", "free", r"AddressSanitizer: heap-buffer-overflow"),
    ("wmma-misaligned", "free", r"load_matrix_sync: pointer 0x[0-9a-f]+ is not 256-bit \(32-byte\) aligned"),
    ("wmma-ldm", "free", r"ldm = 20 is not a multiple of 8"),
    # Inline PTX (src/ptx.cuh): planted bugs in small kernels that use the same wrappers as kernels v2.
    ("mma-swapped-fragment", "free", r"planted bug caught: 128 of 128 elements of D = A B \+ C differ"),
    ("cp-async-no-wait", "free", r"planted bug caught: 16 values read before their cp.async.wait_group are NaN"),
    ("cp-async-barrier-before-wait", "forward",
     r"planted bug caught: 64 values read by another warp after a barrier placed before the cp.async.wait_group"),
    ("cp-async-pending", "free", r"cp.async: 1 copies of this thread are still in flight at the end of the block"),
    ("ldmatrix-misaligned", "free", r"ldmatrix: row 0 of matrix 0 .* is not a 16-byte aligned row of shared memory"),
    ("ldmatrix-global", "free", r"ldmatrix: row 0 of matrix 0 .* is not a 16-byte aligned row of shared memory"),
    ("warp-divergent", "free", r"divergent warp-wide instruction: lane \d+ is at \S+ while lane \d+ is at \S+"),
]


@pytest.mark.parametrize("name, schedule, message", BROKEN, ids=[name for name, _, _ in BROKEN])
def test_emulation_catches_broken_kernels(emulator, name, schedule, message):
    env = emulation_env(ELFATT_EMULATION_BARRIER_TIMEOUT_S="0.3", ELFATT_EMULATION_SCHEDULE=schedule)
    proc = subprocess.run([str(emulator.selftest), name.removesuffix("-free")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode != 0, f"{name} was not caught:\n{proc.stdout}{proc.stderr}"
    assert re.search(message, proc.stderr), proc.stderr[-6000:]


def test_unwritten_shared_memory_reads_as_nan(emulator):
    proc = subprocess.run([str(emulator.selftest), "unwritten-shared"], capture_output=True, text=True, timeout=120,
                          env=emulation_env())
    assert proc.returncode == 0, proc.stderr
    assert "status=0 nan static=32 dynamic=32" in proc.stdout, proc.stdout


@pytest.mark.parametrize("schedule, wrong", [("forward", 32), ("reverse", 0)])
def test_missing_barrier_between_warps_shows_in_warp_order(emulator, schedule, wrong):
    """Warp 1 writes what warp 0 reads without a __syncthreads: one warp at a time in warp order
    makes warp 0 read before warp 1 wrote, every time (reverse order happens to be benign); with
    the barrier both orders are right."""
    env = emulation_env(ELFATT_EMULATION_SCHEDULE=schedule)
    for name, expected in (("cross-warp", wrong), ("cross-warp-barrier", 0)):
        proc = subprocess.run([str(emulator.selftest), name], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        assert f"wrong={expected}" in proc.stdout, (name, proc.stdout)
