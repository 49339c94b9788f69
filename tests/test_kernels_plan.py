"""Host logic of the CUDA kernels (plugins/kernels/src/plan.cpp) on the CPU.

plan.cpp is compiled with g++ together with a small C shim
(plugins/kernels/tests/kernels_shim.cpp) into a shared library that ctypes loads.
No GPU and no CUDA toolkit are needed: without CUDA headers a two-type stand-in
(plugins/kernels/tests/stub) replaces cuda_runtime_api.h.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "plugins" / "kernels"
K_FLOAT, K_HALF, K_BF16 = 0, 1, 2
INVALID = 1


def _cuda_include() -> Path | None:
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "include" / "cuda_runtime_api.h").is_file():
            return Path(root) / "include"
    return None


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++/c++) on PATH: cannot build the plan test shim")
    include = _cuda_include()
    out = tmp_path_factory.mktemp("plan") / "libelfatt_plan_shim.so"
    cmd = [cxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
           f"-I{KERNELS / 'include'}", f"-I{KERNELS / 'src'}",
           f"-I{include}" if include else f"-I{KERNELS / 'tests' / 'stub'}",
           str(KERNELS / "src" / "plan.cpp"), str(KERNELS / "tests" / "kernels_shim.cpp"), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"plan.cpp does not compile warning-free:\n{' '.join(cmd)}\n{proc.stderr}"
    lib = ctypes.CDLL(str(out))
    lib.elfattShimValidate.restype = ctypes.c_int32
    lib.elfattShimValidate.argtypes = [ctypes.c_int64] * 4 + [ctypes.c_int32] * 4 + [
        ctypes.c_float, ctypes.c_int32, ctypes.c_int32, ctypes.c_char_p, ctypes.c_size_t]
    lib.elfattShimWorkspace.restype = ctypes.c_uint64
    lib.elfattShimWorkspace.argtypes = [ctypes.c_int64] * 4 + [ctypes.c_int32] * 4 + [
        ctypes.c_float, ctypes.c_int32, ctypes.c_int32]
    lib.elfattShimState.restype = ctypes.c_uint64
    lib.elfattShimState.argtypes = lib.elfattShimWorkspace.argtypes
    lib.elfattShimFusedPlan.restype = ctypes.c_int32
    lib.elfattShimFusedPlan.argtypes = [ctypes.c_int64] * 4 + [ctypes.c_int32] * 4 + [
        ctypes.c_float, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(ctypes.c_int32)]
    lib.elfattShimLocalKernel.restype = ctypes.c_int32
    lib.elfattShimLocalKernel.argtypes = [ctypes.c_int64] * 4 + [ctypes.c_int32] * 4 + [
        ctypes.c_float, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32]
    return lib


def params(b=2, h=14, w=14, c=96, g=1, l=2, wh=7, ww=7, scale=0.0, dtype=K_HALF, lepe=1):  # noqa: E741
    return (b, h, w, c, g, l, wh, ww, scale, dtype, lepe)


def validate(lib, p, size=512):
    buf = ctypes.create_string_buffer(size)
    status = lib.elfattShimValidate(*p, buf, size)
    return status, buf.value.decode()


def workspace(lib, p):
    return int(lib.elfattShimWorkspace(*p))


@pytest.mark.parametrize("p", [
    params(),
    params(g=0, l=3), params(g=3, l=0), params(wh=0, ww=0), params(wh=2, ww=0), params(wh=100, ww=1),
    params(b=0), params(h=0), params(w=0), params(c=3, g=1, l=2, lepe=0), params(c=7 * 5, g=5, l=0),
    params(dtype=K_FLOAT), params(dtype=K_BF16), params(scale=0.125), params(h=1, w=1, wh=7, ww=7),
], ids=lambda p: "b{}h{}w{}c{}g{}l{}win{}x{}s{}t{}lepe{}".format(*p))
def test_valid_params_pass(shim, p):
    status, msg = validate(shim, p)
    assert (status, msg) == (0, "")


@pytest.mark.parametrize("p, words", [
    (params(c=100, g=1, l=2), ["channels", "100", "divisible", "3"]),
    (params(c=96, g=0, l=0), ["globalHeads + localHeads", ">= 1"]),
    (params(g=-1, l=2), ["globalHeads", "-1"]),
    (params(g=1, l=-2), ["localHeads", "-2"]),
    (params(wh=-7), ["windowH", "-7"]),
    (params(ww=-1), ["windowW", "-1"]),
    (params(b=-1), ["batch", "-1"]),
    (params(h=-3), ["height", "-3"]),
    (params(w=-4), ["width", "-4"]),
    (params(c=0), ["channels", "0"]),
    (params(dtype=3), ["dtype", "3", "kFLOAT"]),
    (params(dtype=-1), ["dtype", "-1"]),
    (params(b=1 << 40, h=1 << 20, w=1 << 20), ["overflows"]),
    (params(scale=-0.5), ["scale", "-0.5", ">= 0"]),
    (params(scale=float("nan")), ["scale", "nan", "finite"]),
    (params(scale=float("inf")), ["scale", "inf", "finite"]),
], ids=["channels-not-divisible", "zero-heads", "neg-global", "neg-local", "neg-window-h", "neg-window-w",
        "neg-batch", "neg-height", "neg-width", "zero-channels", "dtype-3", "dtype-neg", "overflow",
        "neg-scale", "nan-scale", "inf-scale"])
def test_invalid_params_name_the_field(shim, p, words):
    status, msg = validate(shim, p)
    assert status == INVALID
    for word in words:
        assert word in msg, f"message {msg!r} should mention {word!r}"
    assert workspace(shim, p) == 0, "workspaceSize must be 0 for invalid params"


def test_message_is_truncated_and_terminated(shim):
    bad = params(c=100)
    status, msg = validate(shim, bad, size=9)
    assert status == INVALID and msg == "elfatt: "  # 8 characters + NUL
    # No buffer at all: still rejected, nothing written.
    assert shim.elfattShimValidate(*bad, None, 0) == INVALID


def test_workspace_zero_without_global_heads_or_tokens(shim):
    assert workspace(shim, params(g=0, l=3)) == 0
    for empty in (params(b=0), params(h=0), params(w=0)):
        assert workspace(shim, empty) == 0
    assert workspace(shim, params(g=1, l=2)) > 0


def test_workspace_holds_the_context_and_is_aligned(shim):
    for b, h, w, c, g, l in [(1, 1, 1, 16, 1, 0), (8, 128, 128, 64, 1, 1), (3, 33, 17, 96, 2, 1), (2, 7, 300, 4, 4, 0)]:
        d = c // (g + l)
        ws = workspace(shim, params(b=b, h=h, w=w, c=c, g=g, l=l))
        # At least one chunk of partial contexts plus the merged context, fp32, per (batch, global head).
        assert ws >= 2 * b * g * d * d * 4, (b, h, w, c, g, l, ws)
        assert ws % 256 == 0


def test_workspace_grows_with_batch_and_tokens(shim):
    base = dict(c=128, g=2, l=2, wh=7, ww=7)
    by_batch = [workspace(shim, params(b=b, h=32, w=32, **base)) for b in (1, 2, 4, 8)]
    assert by_batch == sorted(by_batch) and by_batch[0] < by_batch[-1]
    # Linear in the batch (up to the 256-byte alignment of each of the 4 regions).
    assert abs(by_batch[3] - 8 * by_batch[0]) <= 8 * 4 * 256
    sizes = [workspace(shim, params(b=2, h=n, w=n, **base)) for n in (1, 8, 16, 23, 32, 64, 128, 256, 512)]
    assert sizes == sorted(sizes), f"workspace must not shrink as H, W grow: {sizes}"
    assert sizes[0] < sizes[-1]
    rows = [workspace(shim, params(b=2, h=n, w=40, **base)) for n in range(1, 80)]
    assert rows == sorted(rows)
    # Bounded: the token split stops growing, so huge grids do not need a huge workspace.
    assert workspace(shim, params(b=2, h=4096, w=4096, **base)) == workspace(shim, params(b=2, h=2048, w=4096, **base))


def test_workspace_independent_of_dtype_window_and_lepe(shim):
    ref = workspace(shim, params())
    for p in (params(dtype=K_FLOAT), params(dtype=K_BF16), params(wh=0, ww=3), params(lepe=0), params(scale=2.0)):
        assert workspace(shim, p) == ref


def test_workspace_grows_with_global_heads_and_head_dim(shim):
    ws_heads = [workspace(shim, params(c=192, g=g, l=6 - g)) for g in range(0, 7)]
    assert ws_heads == sorted(ws_heads) and ws_heads[0] == 0 and ws_heads[1] > 0
    ws_dim = [workspace(shim, params(c=c, g=1, l=1)) for c in (32, 64, 128, 256)]
    assert ws_dim == sorted(ws_dim) and ws_dim[-1] >= 16 * ws_dim[0] // 2


# LocalKernel (plan.h) and KernelPath (elfatt_kernels_ext.h) values.
L_GENERIC, L_TILED, L_TENSOR_CORE = 0, 1, 2
P_AUTO, P_TILED, P_GENERIC, P_TENSOR_CORE = 0, 1, 2, 3


@pytest.mark.parametrize("dtype, c, path, expected", [
    (K_HALF, 96, P_AUTO, L_TENSOR_CORE), (K_BF16, 96, P_AUTO, L_TENSOR_CORE), (K_FLOAT, 96, P_AUTO, L_TILED),
    (K_HALF, 96, P_TILED, L_TILED), (K_HALF, 96, P_GENERIC, L_GENERIC), (K_BF16, 96, P_TENSOR_CORE, L_TENSOR_CORE),
    (K_FLOAT, 96, P_TENSOR_CORE, L_TILED),  # no float32 tensor-core kernel: the SIMT one
    (K_HALF, 3 * 80, P_AUTO, L_GENERIC),    # d = 80 > 64: only the generic kernel covers it
    (K_HALF, 3 * 80, P_TENSOR_CORE, L_GENERIC),
    (K_HALF, 3 * 64, P_AUTO, L_TENSOR_CORE), (K_HALF, 3 * 5, P_AUTO, L_TENSOR_CORE),
], ids=lambda v: str(v))
def test_local_kernel_choice(shim, dtype, c, path, expected):
    """Which local kernel each dtype / head dim / forced path gets (d = C / 3 heads here).
    kTENSOR_CORE still falls back to the SIMT kernel at launch on a device without the type."""
    p = params(c=c, g=1, l=2, dtype=dtype)
    assert shim.elfattShimLocalKernel(*p, path) == expected


def test_local_kernel_choice_rejects_bad_params(shim):
    assert shim.elfattShimLocalKernel(*params(c=100), P_AUTO) == -1


# Kernels v2 (KernelPath::kFUSED = 4): which params they cover and how they tile the work.
P_FUSED = 4
FUSED_FIELDS = ("qTileH", "qTileW", "qTilesY", "qTilesX", "keyTiles", "haloRows", "chunks", "chunkTokens",
                "oTileH", "oTileW", "oTilesY", "oTilesX", "oHaloRows", "reductionItems", "localItems", "outputItems",
                "mergeGroups", "mergeSlots")


def fused_plan(lib, p, path=P_FUSED):
    shape = (ctypes.c_int32 * len(FUSED_FIELDS))()
    runs = lib.elfattShimFusedPlan(*p, path, shape)
    return runs, dict(zip(FUSED_FIELDS, shape))


@pytest.mark.parametrize("dtype, c, path, runs", [
    (K_HALF, 96, P_FUSED, 1), (K_BF16, 192, P_FUSED, 1),  # d = 32, 64
    (K_FLOAT, 96, P_FUSED, 0),                             # no float32 v2: v1's SIMT kernels
    (K_HALF, 48, P_FUSED, 0), (K_HALF, 144, P_FUSED, 0),   # d = 16, 48: v1
    (K_HALF, 96, P_TENSOR_CORE, 0), (K_HALF, 96, P_TILED, 0), (K_HALF, 96, P_GENERIC, 0),
    (K_HALF, 96, P_AUTO, 1), (K_BF16, 192, P_AUTO, 1),      # auto: v2 where it applies
    (K_FLOAT, 96, P_AUTO, 0), (K_HALF, 48, P_AUTO, 0),
])
def test_fused_coverage(shim, dtype, c, path, runs):
    assert fused_plan(shim, params(c=c, g=1, l=2, dtype=dtype), path)[0] == runs


def test_fused_plan_shapes(shim):
    """ViT-S at 1024 x 1024 (64 x 64 tokens, C = 384, 3 global + 3 local heads of 64, 7 x 7 windows):
    3 x 16 reduction chunks of 256 tokens (a small grid: 3 x 8 chunks of 512 would be fewer than 64 items)
    plus 3 x 100 windows (one query tile each) = 348 blocks in the first launch for 132 SMs; 3 x 64 output
    tiles of 8 x 8 in the second. Then stripes."""
    runs, f = fused_plan(shim, params(b=1, h=64, w=64, c=384, g=3, l=3, wh=7, ww=7))
    assert runs == 1
    assert (f["qTileH"], f["qTileW"], f["qTilesY"], f["qTilesX"], f["keyTiles"], f["haloRows"]) == (7, 7, 1, 1, 1, 0)
    assert (f["chunks"], f["chunkTokens"], f["reductionItems"], f["localItems"]) == (16, 256, 48, 300)
    assert f["reductionItems"] + f["localItems"] >= 132, "the first launch must fill a 132-SM H100 at B = 1"
    assert (f["oTileH"], f["oTileW"], f["outputItems"], f["oHaloRows"]) == (8, 8, 192, 100)
    # CSWin-style stripes of 7 rows over 32 columns: 7 x 9 query rectangles, 4 key tiles of 64, halo 7 x 11.
    runs, f = fused_plan(shim, params(b=2, h=32, w=32, c=256, g=4, l=4, wh=7, ww=0))
    assert runs == 1
    assert (f["qTileH"], f["qTileW"], f["qTilesY"], f["qTilesX"], f["keyTiles"], f["haloRows"]) == (7, 9, 1, 4, 4, 77)
    assert f["localItems"] == 2 * 4 * 5 * 4  # B x heads x 5 stripes x 4 rectangles
    # 1-row stripes: 1 x 64 rectangles; columns: 64 x 1; no LePE, no halo.
    _, f = fused_plan(shim, params(b=1, h=128, w=128, c=64, g=1, l=1, wh=1, ww=0, lepe=0))
    assert (f["qTileH"], f["qTileW"], f["qTilesX"], f["keyTiles"], f["haloRows"], f["oHaloRows"]) == (1, 64, 2, 2, 0, 0)
    _, f = fused_plan(shim, params(b=1, h=100, w=9, c=64, g=1, l=1, wh=0, ww=1))
    assert (f["qTileH"], f["qTileW"], f["qTilesY"], f["haloRows"], f["oTileH"], f["oTileW"]) == (64, 1, 2, 66, 8, 8)


def test_fused_chunking(shim):
    """Reduction chunks of >= 512 tokens (multiples of 64), or >= 256 where 512 would give fewer than 64
    reduction items (B x G x chunks: a small grid), at most 64 per (batch, head), so that the partials fit
    in the v1 workspace regions (which workspaceSize already covers)."""
    sides = (1, 22, 23, 64, 128, 512)
    chunks = [fused_plan(shim, params(b=1, h=n, w=n, c=64, g=1, l=1))[1] for n in sides]
    # one (b, head): every grid but the largest is small (chunks of 256), 512 x 512 tokens takes the cap
    assert [f["chunks"] for f in chunks] == [1, 2, 3, 16, 64, 64]
    assert [f["chunkTokens"] for f in chunks] == [64, 256, 192, 256, 256, 4096]
    assert all(f["chunkTokens"] % 64 == 0 and f["chunks"] * f["chunkTokens"] >= n * n
               and (f["chunks"] - 1) * f["chunkTokens"] < n * n for f, n in zip(chunks, sides))
    # the threshold: 64 x 64 tokens make 8 chunks of 512 per (b, head); 7 heads (56 items) are small, 8 are not
    small = fused_plan(shim, params(b=1, h=64, w=64, c=8 * 64, g=7, l=1))[1]
    large = fused_plan(shim, params(b=1, h=64, w=64, c=8 * 64, g=8, l=0))[1]
    assert (small["chunks"], small["chunkTokens"], small["reductionItems"]) == (16, 256, 7 * 16)
    assert (large["chunks"], large["chunkTokens"], large["reductionItems"]) == (8, 512, 64)
    # ViT-S at B = 8 (192 items of 512) and at 128 x 128 tokens (96 items) keep chunks of 512
    assert fused_plan(shim, params(b=8, h=64, w=64, c=384, g=3, l=3, wh=7, ww=7))[1]["chunkTokens"] == 512
    assert fused_plan(shim, params(b=1, h=128, w=128, c=384, g=3, l=3, wh=7, ww=7))[1]["chunkTokens"] == 512


@pytest.mark.parametrize("b, h, w, c, g, l, chunks, groups", [
    (1, 1, 1, 64, 1, 1, 1, 1),        # one chunk: its own root
    (1, 26, 41, 128, 1, 1, 5, 3),     # 5 chunks: groups [0..3], [4]; the root over 2
    (1, 64, 64, 384, 3, 3, 16, 5),    # ViT-S at 1024 x 1024: 4 groups of 4, the root
    (2, 70, 70, 32, 1, 0, 20, 8),     # 20 -> 5 -> 2 -> 1: 3 levels
    (1, 512, 512, 64, 1, 1, 64, 21),  # the cap: 16 + 4 + 1
    (3, 9, 8, 128, 2, 0, 1, 1),
])
def test_merge_tree_sizes(shim, b, h, w, c, g, l, chunks, groups):  # noqa: E741
    """Kernels v2 merge each (b, head)'s chunk partials in a tree of fan-in 4: mergeGroups = ceil(c / 4) +
    ceil(c / 16) + ... + 1 groups (a counter and d max keys each), mergeSlots = chunks + groups - 1 partial slots
    (the root writes the context). stateSize holds B x G x groups x (1 + d) words, workspaceSize the slots as
    well as v1's chunks, and the bench's mirrors of plan.cpp (bench/kernels_trace.py, which the performance
    model traces with) agree."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import kernels_trace

    p = params(b=b, h=h, w=w, c=c, g=g, l=l)
    runs, f = fused_plan(shim, p)
    assert runs == 1
    assert (f["chunks"], f["mergeGroups"], f["mergeSlots"]) == (chunks, groups, chunks + groups - 1)
    problem = kernels_trace.Problem(b, h, w, c, g, l, 7, 7)
    mirror = kernels_trace.fused_plan(problem)
    assert (mirror["chunks"], mirror["merge_groups"], mirror["merge_slots"]) == (chunks, groups, chunks + groups - 1)
    d = c // (g + l)
    state = shim.elfattShimState(*p)
    assert state == kernels_trace.state_bytes(problem) >= 4 * b * g * groups * (1 + d)
    workspace = shim.elfattShimWorkspace(*p)
    assert workspace == kernels_trace.workspace_bytes(problem)
    assert workspace >= 4 * b * g * (f["mergeSlots"] * d * (d + 2) + d * d) + state
    # the workspace does not depend on the dtype (test_workspace_independent_of_dtype_window_and_lepe): float32,
    # which v1 runs, plans the same tree regions; it has no state
    assert shim.elfattShimWorkspace(*params(b=b, h=h, w=w, c=c, g=g, l=l, dtype=K_FLOAT)) == workspace
    assert shim.elfattShimState(*params(b=b, h=h, w=w, c=c, g=g, l=l, dtype=K_FLOAT)) == 0
