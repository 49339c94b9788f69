"""ElfattAttention TensorRT plugin: loading the real library with real TensorRT.

Needs the ``tensorrt`` Python package (NGC container, JetPack); skips elsewhere.
The library comes from $ELFATT_TRT_PLUGIN_LIB, else it is built here with CMake
(plugins/, ELFATT_BUILD_TRT_PLUGIN=ON, TensorRT from $TENSORRT_ROOT or the system
paths, CUDA architecture of the local GPU). Every load order runs in a fresh
Python process, since plugin registration is process-wide.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT Python package not installed: plugin load tests need TensorRT")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plugin_lib(tmp_path_factory) -> Path:
    env_lib = os.environ.get("ELFATT_TRT_PLUGIN_LIB")
    if env_lib:
        lib = Path(env_lib)
        assert lib.is_file(), f"ELFATT_TRT_PLUGIN_LIB={env_lib} does not exist"
        return lib
    cmake = shutil.which("cmake")
    if cmake is None or shutil.which("nvcc") is None:
        pytest.skip("set ELFATT_TRT_PLUGIN_LIB, or install cmake and nvcc to build libelfatt_trt_plugin.so here")
    build = tmp_path_factory.mktemp("trt_plugin_build")
    cfg = subprocess.run(
        [cmake, "-S", str(REPO / "plugins"), "-B", str(build), "-DELFATT_BUILD_TRT_PLUGIN=ON",
         "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CUDA_ARCHITECTURES=native"],
        capture_output=True, text=True,
    )
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    bld = subprocess.run([cmake, "--build", str(build), "-j2", "--target", "elfatt_trt_plugin"],
                         capture_output=True, text=True)
    assert bld.returncode == 0, bld.stdout[-5000:] + bld.stderr[-5000:]
    lib = build / "tensorrt" / "libelfatt_trt_plugin.so"
    assert lib.is_file()
    return lib


PRELUDE = textwrap.dedent(
    """
    import ctypes, sys
    import numpy as np
    import tensorrt as trt
    LIB = sys.argv[1]
    logger = trt.Logger(trt.Logger.WARNING)
    registry = trt.get_plugin_registry()

    def find():
        try:
            c = registry.get_creator("ElfattAttention", "1", "")
        except Exception:
            c = None
        if c is None:
            for cand in getattr(registry, "all_creators", []):
                if getattr(cand, "name", None) == "ElfattAttention":
                    c = cand
        return c

    def count():
        return sum(1 for c in getattr(registry, "all_creators", []) if getattr(c, "name", None) == "ElfattAttention")

    def create(creator, global_heads=2):
        fields = [
            trt.PluginField("global_heads", np.array([global_heads], np.int32), trt.PluginFieldType.INT32),
            trt.PluginField("local_heads", np.array([2], np.int32), trt.PluginFieldType.INT32),
            trt.PluginField("window_h", np.array([7], np.int32), trt.PluginFieldType.INT32),
            trt.PluginField("window_w", np.array([7], np.int32), trt.PluginFieldType.INT32),
            trt.PluginField("scale", np.array([0.0], np.float32), trt.PluginFieldType.FLOAT32),
        ]
        return creator.create_plugin("attn", trt.PluginFieldCollection(fields), trt.TensorRTPhase.BUILD)

    def create_wide(creator):
        # NumPy's default int64 / float64, as Python callers often pass them.
        fields = [
            trt.PluginField("global_heads", np.array([2], np.int64), trt.PluginFieldType.INT64),
            trt.PluginField("local_heads", np.array([2], np.int64), trt.PluginFieldType.INT64),
            trt.PluginField("window_h", np.array([7], np.int64), trt.PluginFieldType.INT64),
            trt.PluginField("window_w", np.array([0], np.int64), trt.PluginFieldType.INT64),
            trt.PluginField("scale", np.array([0.0], np.float64), trt.PluginFieldType.FLOAT64),
        ]
        return creator.create_plugin("attn", trt.PluginFieldCollection(fields), trt.TensorRTPhase.BUILD)

    def check_usable():
        c = find()
        assert c is not None, "ElfattAttention creator not in the registry"
        assert count() in (0, 1), f"{count()} ElfattAttention creators registered"
        assert create(c) is not None, "valid fields gave no plugin"
        assert create(c, global_heads=-1) is None, "negative global_heads accepted"
        assert create_wide(c) is not None, "int64 / float64 fields gave no plugin"
    """
)

SCENARIOS = {
    "ctypes": "ctypes.CDLL(LIB)\ncheck_usable()",
    "load_library": "h = registry.load_library(LIB)\nassert h is not None, 'load_library refused the library'\ncheck_usable()",
    "ctypes_then_load_library": (
        "ctypes.CDLL(LIB)\nh = registry.load_library(LIB)\nassert h is not None, 'load_library after ctypes'\n"
        "check_usable()"
    ),
    "load_library_then_ctypes": (
        "h = registry.load_library(LIB)\nassert h is not None\nctypes.CDLL(LIB)\ncheck_usable()"
    ),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_load(plugin_lib, scenario):
    script = PRELUDE + "\n" + SCENARIOS[scenario] + "\nprint('LOAD-OK')\n"
    proc = subprocess.run([sys.executable, "-c", script, str(plugin_lib)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "LOAD-OK" in proc.stdout, proc.stdout + proc.stderr


def test_real_library_exports_only_entry_points(plugin_lib):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found")
    out = subprocess.run([nm, "-D", "--defined-only", str(plugin_lib)], capture_output=True, text=True, check=True)
    symbols = {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}
    assert symbols == {"getCreators", "setLoggerFinder"}, out.stdout
