"""The host emulation's tracing build: build it, run it on a sample of blocks, add up what it saw.

Used by bench/kernels_model.py (the performance model of the CUDA kernels) and its test.
The tracing build compiles the kernel sources of plugins/kernels/src as C++ (as the host
emulation does) with gcc's ``-fsanitize=thread`` instrumentation but without libtsan: the
tracer (plugins/kernels/tests/emulation/emulation_trace.cpp) implements the callbacks and
sees every load and store of kernel code. See that file for what a trace holds.

Sampling: each launch's blocks are put into kinds (for the kernels whose work-item order
is known here, v1's and v2's: the head and the window / tile / chunk geometry that makes a
block differ from another; otherwise 16 strata of consecutive blocks), and up to ``per_kind`` blocks of each kind, spread over the kind, are
traced with weight (blocks of the kind) / (blocks traced of it). Totals over the grid are
the weighted sums.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from elfatt_deploy.errors import MissingDependencyError, ToolkitError

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "plugins" / "kernels"
EMULATION = KERNELS / "tests" / "emulation"

#: Code generation of the instrumented kernel sources: -O1 without vectorization, store merging
#: or loop-to-memset/memcpy rewriting, so that each access of the source stays one access of
#: its own width (what a GPU thread issues), and nothing becomes an uninstrumented library call.
#: No scalar replacement of aggregates either: it splits a 16-byte uint4/float4 load into four 4-byte loads.
KERNEL_CODEGEN = ["-O1", "-fno-tree-sra", "-fno-tree-vectorize", "-fno-tree-slp-vectorize", "-fno-store-merging",
                  "-fno-tree-loop-distribute-patterns", "-fsanitize=thread",
                  "--param=tsan-instrument-func-entry-exit=0",
                  # gcc warns that tsan cannot check fences (__threadfence): not our concern, we only trace
                  "-Wno-tsan"]
WRAPPED_MATH = ("fmaf", "expf", "exp2f")
DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}
ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def find_cuda_include() -> Path | None:
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(nvcc).resolve().parents[1]))
    roots.append("/usr/local/cuda")
    for root in roots:
        if root and (Path(root) / "include" / "cuda_fp16.h").is_file():
            return Path(root) / "include"
    return None


def _flags(cuda_include: Path) -> list[str]:
    return ["-std=c++20", "-g", "-pthread", "-DELFATT_HOST_EMULATION", "-DELFATT_EMULATION_TRACING",
            "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "-D__CUDA_NO_HALF2_OPERATORS__", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
            "-isystem", str(cuda_include), f"-I{KERNELS / 'include'}", f"-I{KERNELS / 'src'}", f"-I{EMULATION}"]


def _sources() -> list[Path]:
    files = set()
    for folder in (KERNELS / "src", KERNELS / "include", EMULATION):
        files.update(p for p in folder.rglob("*") if p.is_file() and p.suffix in {".h", ".cuh", ".cu", ".cpp"})
    return sorted(files)


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "elfatt-deploy" / "kernels_model"


def build_tracer(cache: Path | None = None, jobs: int | None = None) -> Path:
    """The elfatt_trace program for the current kernel sources (built once per source digest)."""
    cxx = shutil.which("g++")
    if cxx is None:
        raise MissingDependencyError("g++ not found: the performance model runs the kernels in the host emulation's "
                                     "tracing build, which g++ (>= 12) compiles; install g++")
    cuda_include = find_cuda_include()
    if cuda_include is None:
        raise MissingDependencyError("CUDA headers (cuda_fp16.h) not found under CUDA_HOME, CUDA_PATH, nvcc's root "
                                     "or /usr/local/cuda; the tracing build compiles the kernels against them")
    flags = _flags(cuda_include)
    h = hashlib.sha256()
    h.update(subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.encode())
    h.update("\0".join(flags + KERNEL_CODEGEN).encode())
    for path in _sources():
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    digest = h.hexdigest()[:20]
    cache = Path(cache or default_cache())
    program = cache / digest / "elfatt_trace"
    if program.is_file():
        return program
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    kernel_sources = sorted((KERNELS / "src").glob("*.cu"))
    units = [(src, ["-x", "c++", *KERNEL_CODEGEN]) for src in kernel_sources]
    units += [(KERNELS / "src" / "plan.cpp", ["-O2"]), (EMULATION / "emulation_runtime.cpp", ["-O2"]),
              (EMULATION / "emulation_trace.cpp", ["-O2"]), (EMULATION / "trace_main.cpp", ["-O2"])]
    units.sort(key=lambda unit: -unit[0].stat().st_size)

    def compile_one(unit):
        src, extra = unit
        obj = work / (src.name + ".o")
        proc = subprocess.run([cxx, *flags, *extra, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        return obj, proc, src

    try:
        with ThreadPoolExecutor(max_workers=jobs or max(1, os.cpu_count() or 1)) as pool:
            results = list(pool.map(compile_one, units))
        errors = [f"{src.relative_to(ROOT)}:\n{proc.stderr}" for _, proc, src in results if proc.returncode != 0]
        if errors:
            raise ToolkitError("the tracing build of the host emulation failed to compile:\n" + "\n".join(errors)[-8000:])
        wrap = "-Wl," + ",".join(f"--wrap={name}" for name in WRAPPED_MATH)
        link = [cxx, "-pthread", *[str(obj) for obj, _, _ in results], "-ldl", wrap, "-o", str(work / "elfatt_trace")]
        proc = subprocess.run(link, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolkitError(f"the tracing build of the host emulation failed to link:\n{proc.stderr[-8000:]}")
        program.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work / "elfatt_trace", program.with_suffix(".tmp"))
        os.replace(program.with_suffix(".tmp"), program)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return program


@dataclasses.dataclass(frozen=True)
class Problem:
    """One call of the op: the arguments of enqueue."""

    batch: int
    height: int
    width: int
    channels: int
    global_heads: int
    local_heads: int
    window_h: int
    window_w: int
    dtype: str = "float16"
    lepe: bool = True

    @property
    def heads(self) -> int:
        return self.global_heads + self.local_heads

    @property
    def head_dim(self) -> int:
        return self.channels // self.heads

    @property
    def tokens(self) -> int:
        return self.batch * self.height * self.width

    def floor_bytes(self) -> int:
        """Read qkv once and write the output once (as bench/kernels_gpu.py counts it)."""
        return self.tokens * 4 * self.channels * ELEMENT_BYTES[self.dtype]

    def args(self, path: str) -> list[str]:
        return [str(v) for v in (self.batch, self.height, self.width, self.channels, self.global_heads,
                                 self.local_heads, self.window_h, self.window_w, 0.0, DTYPE_CODES[self.dtype],
                                 int(self.lepe), path)]


# ------------------------------------------------------------------------------------------------
# Kinds of blocks (work items) per kernel
# ------------------------------------------------------------------------------------------------

def _windows(p: Problem) -> tuple[int, int, int, int]:
    wh = p.height if p.window_h == 0 or p.window_h > p.height else p.window_h
    ww = p.width if p.window_w == 0 or p.window_w > p.width else p.window_w
    return wh, ww, -(-p.height // wh), -(-p.width // ww)


def _local_kinds(p: Problem, grid: int, queries_per_tile: int | None) -> list[tuple]:
    """localTensorCoreKernel / localTiledKernel / localGenericKernel: item = (((b * L + head) * wy + ...) * tiles + tile.

    Blocks differ by the head, the window's shape (full, cut at the right / bottom edge) and the query tile."""
    wh, ww, ny, nx = _windows(p)
    tiles = max(1, grid // max(1, p.batch * p.local_heads * ny * nx)) if queries_per_tile is None else \
        -(-(wh * ww) // queries_per_tile)
    kinds = []
    for item in range(grid):
        rest, tile = divmod(item, tiles)
        rest, wx = divmod(rest, nx)
        rest, wy = divmod(rest, ny)
        head = rest % max(1, p.local_heads)
        rows = min(wh, p.height - wy * wh)
        cols = min(ww, p.width - wx * ww)
        kinds.append((head, rows, cols, tile))
    return kinds


#: Strata of a launch whose work-item order bench/kernels_trace.py does not know.
UNKNOWN_STRATA = 16

#: plan.h: query rows of a v2 block, first and largest chunk count of the v2 reduction; the chunk
#: size of a small grid and the reduction items below which a grid is small.
FUSED_ROWS, FUSED_CHUNK_TOKENS, FUSED_MAX_CHUNKS = 64, 512, 64
FUSED_SMALL_CHUNK_TOKENS, FUSED_FEW_REDUCTION_ITEMS = 256, 64
FUSED_MERGE_FANIN = 4


def merge_groups(chunks: int) -> int:
    """fusedMergeGroups (plan.cpp): groups of the merge tree over ``chunks`` partials, ceil(c / 4) +
    ceil(c / 16) + ... + 1."""
    nodes, groups = max(1, chunks), 0
    while True:
        nodes = ceil_div(nodes, FUSED_MERGE_FANIN)
        groups += nodes
        if nodes == 1:
            return groups


def merge_levels(chunk: int, chunks: int) -> int:
    """How many levels of the merge tree the block of ``chunk`` merges when the last partial of every group
    to arrive is its last one (the model's convention; on the device it is whichever block counts last):
    0 for a block that is not the last of its group, the tree's height for the last chunk."""
    node, nodes, levels = chunk, max(1, chunks), 0
    while True:
        group = node // FUSED_MERGE_FANIN
        count = min(FUSED_MERGE_FANIN, nodes - group * FUSED_MERGE_FANIN)
        if node != group * FUSED_MERGE_FANIN + count - 1:
            return levels
        levels += 1
        nodes = ceil_div(nodes, FUSED_MERGE_FANIN)
        if nodes == 1:
            return levels
        node = group


def fused_plan(p: Problem) -> dict:
    """makeFusedPlan (plugins/kernels/src/plan.cpp): the tiles and work items of kernels v2."""
    wh, ww, ny, nx = _windows(p)
    tokens = p.height * p.width
    qh = min(wh, FUSED_ROWS)
    qw = min(ww, FUSED_ROWS // qh)
    few = p.batch * p.global_heads * ceil_div(tokens, FUSED_CHUNK_TOKENS) < FUSED_FEW_REDUCTION_ITEMS
    target = FUSED_SMALL_CHUNK_TOKENS if few else FUSED_CHUNK_TOKENS
    chunks = min(FUSED_MAX_CHUNKS, max(1, ceil_div(tokens, target)))
    chunk_tokens = ceil_div(ceil_div(tokens, chunks), FUSED_ROWS) * FUSED_ROWS
    chunks = ceil_div(tokens, chunk_tokens)
    ow = min(p.width, 8)
    oh = min(p.height, FUSED_ROWS // ow)
    q_tiles_y, q_tiles_x = -(-wh // qh), -(-ww // qw)
    o_tiles_y, o_tiles_x = -(-p.height // oh), -(-p.width // ow)
    return {"wh": wh, "ww": ww, "ny": ny, "nx": nx, "qh": qh, "qw": qw, "q_tiles_y": q_tiles_y,
            "q_tiles_x": q_tiles_x, "chunks": chunks, "chunk_tokens": chunk_tokens,
            "merge_groups": merge_groups(chunks), "merge_slots": chunks + merge_groups(chunks) - 1, "oh": oh, "ow": ow,
            "o_tiles_y": o_tiles_y, "o_tiles_x": o_tiles_x,
            "reduction_items": p.batch * p.global_heads * chunks if p.global_heads else 0,
            "local_items": p.batch * p.local_heads * ny * nx * q_tiles_y * q_tiles_x if p.local_heads else 0,
            "output_items": p.batch * p.global_heads * o_tiles_y * o_tiles_x if p.global_heads else 0}


def _fused_pass_kinds(p: Problem, grid: int) -> list[tuple] | None:
    """fusedPassKernel, one item per block (the launcher's grid): blocks [0, R) reduce chunk
    i % chunks of (b, head) = i // chunks; block R + j runs local item
    j = ((((b Lh + head) wY + wy) wX + wx) qY + qy) qX + qx (docs/kernels.md, "Item order").

    Reduction blocks differ by the head, whether the chunk is the last (shorter) one and how many levels
    of the merge tree the block merges (merge_levels); local blocks by the head, the window's shape (cut
    at the right / bottom edge) and the query tile.
    None where the grid is not one block per item (the launcher capped it)."""
    f = fused_plan(p)
    reducers, locals_ = f["reduction_items"], f["local_items"]
    if grid != reducers + locals_:
        return None
    kinds: list[tuple] = []
    for item in range(reducers):
        chunk, pair = item % f["chunks"], item // f["chunks"]
        kinds.append(("reduce", pair % p.global_heads, chunk == f["chunks"] - 1, merge_levels(chunk, f["chunks"])))
    for item in range(locals_):
        rest, tx = divmod(item, f["q_tiles_x"])
        rest, ty = divmod(rest, f["q_tiles_y"])
        rest, wx = divmod(rest, f["nx"])
        rest, wy = divmod(rest, f["ny"])
        head = rest % p.local_heads
        rows = min(f["wh"], p.height - wy * f["wh"])
        cols = min(f["ww"], p.width - wx * f["ww"])
        kinds.append(("local", head, rows, cols, ty, tx))
    return kinds


def _fused_output_kinds(p: Problem, grid: int) -> list[tuple] | None:
    """fusedOutputKernel: item ((b G + head) oY + oy) oX + ox, an oTileH x oTileW tile of tokens.

    Blocks differ by the head, the tile's shape and which grid edges clip its LePE halo."""
    f = fused_plan(p)
    if grid != f["output_items"]:
        return None
    kinds = []
    for item in range(grid):
        rest, tx = divmod(item, f["o_tiles_x"])
        rest, ty = divmod(rest, f["o_tiles_y"])
        head = rest % p.global_heads
        rows = min(f["oh"], p.height - ty * f["oh"])
        cols = min(f["ow"], p.width - tx * f["ow"])
        kinds.append((head, rows, cols, ty == 0, ty == f["o_tiles_y"] - 1, tx == 0, tx == f["o_tiles_x"] - 1))
    return kinds


def block_kinds(kernel: str, grid: int, p: Problem) -> list[tuple]:
    """A label per block of the launch: blocks with the same label do the same work on other data.

    The head is part of the label, so that every head's channels are traced (the footprint
    estimate counts, per column phase of a buffer, the rows the traced blocks touch)."""
    name = kernel.split("<")[0]
    tokens = p.height * p.width
    if name == "localTensorCoreKernel":
        return _local_kinds(p, grid, 64)
    if name in ("localTiledKernel", "localGenericKernel"):
        return _local_kinds(p, grid, None)
    if name == "globalContextPartialKernel":
        chunks = _v1_chunks(p)
        per_dim = -(-p.head_dim // 64)
        kinds = []
        for item in range(grid):
            rest, col = divmod(item, per_dim)
            rest, row = divmod(rest, per_dim)
            rest, chunk = divmod(rest, chunks)
            head = rest % max(1, p.global_heads)
            kinds.append((head, chunk == chunks - 1, row, col))
        return kinds
    if name == "globalOutputKernel":
        tiles = -(-tokens // 256)
        return [((item // tiles) % max(1, p.global_heads), min(item % tiles, 1), item % tiles == tiles - 1)
                for item in range(grid)]
    if name == "globalContextMergeKernel":
        return [item == grid - 1 for item in range(grid)]
    fused = {"fusedPassKernel": _fused_pass_kinds, "fusedOutputKernel": _fused_output_kinds}.get(name)
    if fused is not None:
        kinds = fused(p, grid)
        if kinds is not None:
            return kinds
    # Not known here: a systematic sample, the grid cut into UNKNOWN_STRATA runs of consecutive blocks
    # (work items of one head or window row are neighbours in every kernel's order).
    return [("stratum", b * UNKNOWN_STRATA // grid) for b in range(grid)]


def sample_blocks(kinds: list, per_kind: int) -> list[tuple[int, float]]:
    """(block, weight) pairs: up to per_kind blocks of each kind, evenly spread over the kind's blocks."""
    members: dict = {}
    for block, kind in enumerate(kinds):
        members.setdefault(kind, []).append(block)
    picks = []
    for blocks in members.values():
        n = min(per_kind, len(blocks))
        chosen = sorted({blocks[(2 * i + 1) * len(blocks) // (2 * n)] for i in range(n)})
        picks += [(b, len(blocks) / len(chosen)) for b in chosen]
    return sorted(picks)


# ------------------------------------------------------------------------------------------------
# Running the tracer
# ------------------------------------------------------------------------------------------------

SUMMED = ("gld_instr", "gld_sectors", "gld_bytes", "gst_instr", "gst_sectors", "gst_bytes", "lds_instr",
          "lds_wavefronts", "lds_ideal", "lds_bytes", "sts_instr", "sts_wavefronts", "sts_ideal", "sts_bytes",
          "fma_instr", "fma_lanes", "exp_instr", "exp_lanes", "mma_instr", "mma_flops", "hmma16816", "bar",
          "syncwarp", "shfl", "async_waits", "async_in_flight", "async_bytes", "async_copies")
#: Summed over the grid (weighted) as well, and kept per block for its largest value: each block's
#: longest chain of cp.async round trips (emulation_trace.cpp, Hooks::asyncWait).
CHAINS = ("async_chain",)


@dataclasses.dataclass
class LaunchTrace:
    """What the tracer saw of one launch, extrapolated to its whole grid."""

    index: int
    kernel: str
    grid: int
    block: int
    dynamic_smem: int
    static_smem: int
    traced_blocks: int
    kinds: int
    totals: dict            # SUMMED keys, weighted over the grid
    dram_read_sectors: float   # compulsory (footprint) estimate, see footprint()
    dram_write_sectors: float
    per_block_unique_read: float   # sum over blocks of each block's distinct sectors (no reuse between blocks)
    per_block_unique_write: float
    buffers: dict           # name -> {"read": sectors, "write": sectors} footprint
    pcs: list               # per-instruction table (weighted)
    blocks: list            # raw per-block records
    #: launched with programmatic stream serialization (cudaLaunchKernelEx + PDL, sm_90): a dependent
    #: of the launch before it
    programmatic_dependent: bool = False
    #: griddepcontrol.launch_dependents executed by the traced threads (the PDL trigger; > 0: this
    #: launch lets a programmatic dependent start before it completes)
    launch_dependents: int = 0
    #: bytes of each cudaMemsetAsync enqueued in the stream between the previous launch and this one
    memsets_before: list = dataclasses.field(default_factory=list)


def footprint(blocks: list[dict], buffer: str, direction: str, rows_total: int | None,
              buffer_sectors: int, kinds: list | None = None) -> float:
    """Distinct sectors of a buffer over the whole grid, estimated from the sampled blocks.

    Row-major buffers (qkv, out): for each 32-byte column phase of a row, the rows in which a
    block touches it, summed over the grid with the blocks' weights and capped at the buffer's
    rows (a phase is read at most once per row: reuse between blocks is assumed caught in L2).
    1-D buffers (workspace, LePE weights, state): the union of the sectors the traced blocks
    touch, plus, for every block that was not traced, as many new sectors as the traced blocks
    of its kind touch (blocks touch disjoint sectors), except for a set of sectors that two or
    more traced blocks touch exactly: that set is shared by their kinds' blocks (the merged
    context that every output tile of a head reads, the counter its reduction blocks count on)
    and counted once. ``kinds``: the label of every block of the launch (block_kinds); the
    sharing rule needs labels that separate the heads (not the systematic strata of unknown
    kernels), without them each traced block stands for its weight in disjoint sectors.
    Capped at the buffer's size. A trace without sector runs falls back to the weighted sum of
    each block's distinct sectors."""
    phase_rows: dict[int, float] = {}
    unique = 0.0
    touched = []
    for rec in blocks:
        touch = rec.get("buffers", {}).get(buffer, {}).get(direction)
        if not touch:
            continue
        touched.append((rec, touch))
        unique += rec["weight"] * touch["unique"]
        for phase, rows in touch["phases"]:
            phase_rows[phase] = phase_rows.get(phase, 0.0) + rec["weight"] * rows
    if rows_total and phase_rows:
        return float(sum(min(rows_total, r) for r in phase_rows.values()))
    if not touched or any("runs" not in touch for _, touch in touched):
        return min(unique, float(buffer_sectors))
    sets = [frozenset(s for a, b in touch["runs"] for s in range(a, b)) for _, touch in touched]
    known_kinds = kinds is not None and not any(isinstance(k, tuple) and k[:1] == ("stratum",) for k in kinds)
    seen: dict[frozenset, int] = {}
    for sectors in sets:
        seen[sectors] = seen.get(sectors, 0) + 1
    union: set[int] = set().union(*sets)
    untraced = sum((rec["weight"] - 1.0) * len(sectors) for (rec, _), sectors in zip(touched, sets)
                   if not (known_kinds and seen[sectors] >= 2))
    return min(len(union) + untraced, float(buffer_sectors))


def buffer_geometry(p: Problem, workspace_bytes: int, state_bytes: int = 0) -> dict[str, tuple[int | None, int]]:
    """name -> (rows of a row-major buffer or None, sectors)."""
    e = ELEMENT_BYTES[p.dtype]
    return {
        "qkv": (p.tokens, p.tokens * 3 * p.channels * e // 32),
        "out": (p.tokens, p.tokens * p.channels * e // 32),
        "lepe_weight": (None, -(-9 * p.channels * e // 32)),
        "lepe_bias": (None, -(-p.channels * e // 32)),
        "workspace": (None, -(-workspace_bytes // 32)),
        "state": (None, -(-state_bytes // 32)),
    }


def state_bytes(p: Problem) -> int:
    """plan.cpp's stateSize for a case kernels v2 run (the only state run_tracer is asked for): per (batch
    item, global head) and group of its merge tree (for the most chunks v2 can have: v1's chunk count, at
    most 64) one uint32 counter and head_dim uint32 max keys."""
    if not p.global_heads or not p.tokens:
        return 0
    return 4 * p.batch * p.global_heads * merge_groups(min(_v1_chunks(p), FUSED_MAX_CHUNKS)) * (1 + p.head_dim)


def _v1_chunks(p: Problem) -> int:
    """plan.cpp's plan.chunks: v1's split of the tokens (globalContextPartialKernel's chunks), which also sizes
    the workspace."""
    tokens = p.height * p.width
    chunks = min(128, max(1, -(-tokens // 256)))
    return -(-tokens // -(-tokens // chunks))


def workspace_bytes(p: Problem) -> int:
    """plan.cpp's workspace size (global heads)."""
    if p.global_heads == 0 or p.tokens == 0:
        return 0
    chunks = _v1_chunks(p)
    v2_chunks = min(chunks, FUSED_MAX_CHUNKS)
    slots = max(chunks, v2_chunks + merge_groups(v2_chunks) - 1)
    d, bg = p.head_dim, p.batch * p.global_heads
    align = lambda n: -(-n // 256) * 256  # noqa: E731
    cursor = 0
    for count in (bg * slots * d * d, bg * slots * d, bg * slots * d, bg * d * d,
                  bg * merge_groups(v2_chunks) * (1 + d)):
        cursor = align(cursor + 4 * count)
    return cursor


def list_launches(program: Path, p: Problem, path: str, work: Path, timeout_s: float = 600,
                  state: bool = False) -> list[dict]:
    """The launches of enqueueWithPath(p, path) (kernel, grid, block, shared memory), running no block."""
    records = _call(program, p, path, "dry", work / "none", work / "dry.jsonl", timeout_s, state)
    return [r for r in records if r.get("type") == "launch"]


def list_stream_operations(program: Path, p: Problem, path: str, work: Path, timeout_s: float = 600,
                           state: bool = False) -> list[dict]:
    """Every stream operation of enqueueWithPath(p, path) in order, running no block: the launches
    ({"type": "launch", ...}) and the memsets ({"type": "memset", "bytes": N, "before_launch": i}).
    state: enqueueWithPathAndState with zeroed persistent counters (what the TensorRT plugin runs)."""
    return _call(program, p, path, "dry", work / "none", work / "dry.jsonl", timeout_s, state)


def _call(program: Path, p: Problem, path: str, mode: str, samples: Path, out: Path, timeout_s: float,
          state: bool = False, preset: list[int] | None = None) -> list[dict]:
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELFATT_")}
    env["ELFATT_EMULATION_SM"] = "90"
    if state:
        env["ELFATT_TRACE_STATE"] = "1"
        if preset:
            env["ELFATT_TRACE_STATE_PRESET"] = ",".join(str(n) for n in preset)
    proc = subprocess.run([str(program), *p.args(path), mode, str(samples), str(out)], capture_output=True,
                          text=True, env=env, timeout=timeout_s)
    if proc.returncode != 0:
        raise ToolkitError(f"elfatt_trace {' '.join(p.args(path))} {mode} exited {proc.returncode}:\n"
                           f"{proc.stderr[-4000:]}")
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def merge_presets(p: Problem, sampled: list[int]) -> list[int]:
    """Starting values of the persistent counters of the merge trees (per (b, global head) merge_groups of
    them, level by level; enqueueWithState) for a sample of fusedPassKernel's blocks (``sampled``, in the
    order they run) such that every sampled block merges the levels merge_levels gives it: where it counts,
    up to that level, its group's counter stands at the group's partials - 1 (the sampled blocks before it
    included), so that it counts the last one and runs the group's merge (fusedMergeGroup). Without it a
    sample (which never runs every chunk of a head) never merges, and the merges would go untraced."""
    f = fused_plan(p)
    chunks, groups_per_pair = f["chunks"], f["merge_groups"]
    counters = [0] * (p.batch * p.global_heads * groups_per_pair)
    value: dict[int, int] = {}  # the counters as the sampled blocks leave them
    for block in sampled:
        if block >= f["reduction_items"]:
            continue
        pair, chunk = divmod(block, chunks)
        wanted = merge_levels(chunk, chunks)
        node, nodes, offset, level = chunk, chunks, 0, 0
        while True:
            group = node // FUSED_MERGE_FANIN
            count = min(FUSED_MERGE_FANIN, nodes - group * FUSED_MERGE_FANIN)
            groups = ceil_div(nodes, FUSED_MERGE_FANIN)
            index = pair * groups_per_pair + offset + group
            seen = value.get(index, 0)
            if level < wanted and seen < count - 1:
                counters[index] += count - 1 - seen
                seen = count - 1
            seen += 1
            if seen < count:
                value[index] = seen
                break
            value[index] = 0  # the last count: the block merges the group and zeroes its counter
            if groups == 1:
                break
            node, nodes, offset, level = group, groups, offset + groups, level + 1
    return counters


def run_tracer(program: Path, p: Problem, path: str, per_kind: int, work: Path,
               timeout_s: float = 1800, state: bool = False) -> list[LaunchTrace]:
    """Traces every launch of enqueueWithPath(p, path) on a sample of its blocks (state: with the
    persistent counters of enqueueWithPathAndState, as the TensorRT plugin runs it)."""
    work.mkdir(parents=True, exist_ok=True)
    def call(mode: str, samples: Path, out: Path) -> list[dict]:
        return _call(program, p, path, mode, samples, out, timeout_s, state)

    launches = [r for r in call("dry", work / "none", work / "dry.jsonl") if r["type"] == "launch"]
    plan = []
    kind_counts = {}
    launch_kinds = {}
    for rec in launches:
        kinds = block_kinds(rec["kernel"], rec["grid"], p)
        kind_counts[rec["launch"]] = len(set(kinds))
        launch_kinds[rec["launch"]] = kinds
        plan += [(rec["launch"], b, w) for b, w in sample_blocks(kinds, per_kind)]
    samples = work / "samples.txt"
    samples.write_text("".join(f"{launch} {block} {weight!r}\n" for launch, block, weight in plan))
    pass_launch = next((r["launch"] for r in launches if r["kernel"].startswith("fusedPassKernel")), None)
    preset = None
    if state and pass_launch is not None and p.global_heads \
            and all(k[0] != "stratum" for k in launch_kinds[pass_launch] if isinstance(k, tuple)):
        preset = merge_presets(p, [b for launch, b, _ in plan if launch == pass_launch])
    records = _call(program, p, path, "sample", samples, work / "trace.jsonl", timeout_s, state, preset)

    geometry = buffer_geometry(p, workspace_bytes(p), state_bytes(p) if state else 0)
    memsets: dict[int, list] = {}
    for rec in (r for r in records if r["type"] == "memset"):
        memsets.setdefault(rec["before_launch"], []).append(rec["bytes"])
    traces = []
    for rec in (r for r in records if r["type"] == "launch"):
        blocks = [b for b in records if b["type"] == "block" and b["launch"] == rec["launch"]]
        totals = {k: sum(b["weight"] * b.get(k, 0.0) for b in blocks) for k in SUMMED + CHAINS}
        totals.update({f"{k}_max": max((b.get(k, 0.0) for b in blocks), default=0.0) for k in CHAINS})
        buffers = {}
        reads = writes = 0.0
        kinds = launch_kinds[rec["launch"]]
        for name, (rows, sectors) in geometry.items():
            r = footprint(blocks, name, "read", rows, sectors, kinds)
            w = footprint(blocks, name, "write", rows, sectors, kinds)
            if r or w:
                buffers[name] = {"read": r, "write": w}
            reads += r
            writes += w
        if preset is not None and rec["launch"] == pass_launch:
            # The pass kernel reads the workspace and the state only in the merges: the partials the launch's own
            # blocks wrote (every block writes its partial before it is counted) and the max keys they raised
            # (red.max at L2, which the trace does not see: an atomic). Reuse between blocks of a launch hits in
            # L2 (the model's assumption), so those reads are not DRAM traffic.
            for name in ("workspace", "state"):
                if name in buffers:
                    reads -= buffers[name]["read"]
                    buffers[name]["l2_reuse_read"] = buffers[name]["read"]
        per_block = lambda d: sum(b["weight"] * t[d]["unique"] for b in blocks  # noqa: E731
                                  for t in b.get("buffers", {}).values())
        traces.append(LaunchTrace(rec["launch"], rec["kernel"], rec["grid"], rec["block"], rec["dynamic_smem"],
                                  rec["static_smem"], rec["traced_blocks"], kind_counts[rec["launch"]], totals,
                                  reads, writes, per_block("read"), per_block("write"), buffers, rec["pcs"], blocks,
                                  bool(rec.get("programmatic_dependent", False)), int(rec.get("launch_dependents", 0)),
                                  memsets.get(rec["launch"], [])))
    return traces


def source_lines(chains: dict[int, list[str]]) -> dict[int, str]:
    """pc -> 'file:line' of the access (the innermost frame of source_chains, as plain addr2line gives it),
    relative to the repository."""
    return {pc: frames[0].replace(str(ROOT) + "/", "") for pc, frames in chains.items() if frames}


def source_chains(program: Path, pcs: list[int]) -> dict[int, list[str]]:
    """pc -> the inline chain of the call, innermost frame first ('path:line', paths as addr2line
    gives them): ``addr2line -i`` names the line of the access and, for each function inlined
    there, the line of its call in the function around it, up to the function the pc lies in."""
    tool = shutil.which("addr2line")
    if tool is None or not pcs:
        return {}
    unique = sorted(set(pcs))
    proc = subprocess.run([tool, "-e", str(program), "-a", "-i"] + [hex(max(0, pc - 1)) for pc in unique],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {}
    out: dict[int, list[str]] = {}
    frames: list[str] | None = None
    for text in proc.stdout.splitlines():
        if re.fullmatch(r"0x[0-9a-f]+", text.strip()):
            frames = out.setdefault(int(text.strip(), 16) + 1, [])
            continue
        if frames is None:
            continue
        text = re.sub(r" \(discriminator \d+\)", "", text.strip())
        if not text.startswith("??"):
            frames.append(text)
    return {pc: out.get(max(0, pc - 1) + 1, []) for pc in unique}


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["Problem", "LaunchTrace", "build_tracer", "run_tracer", "list_launches", "list_stream_operations",
           "block_kinds", "sample_blocks", "footprint",
           "fused_plan", "merge_presets",
           "source_chains", "source_lines", "workspace_bytes", "find_cuda_include", "ceil_div"]
