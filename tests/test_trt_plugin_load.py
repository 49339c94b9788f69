"""ElfattAttention TensorRT plugin: loading the real library with real TensorRT.

Needs the ``tensorrt`` Python package (NGC container, JetPack); skips elsewhere.
The libraries come from $ELFATT_TRT_PLUGIN_LIB (libelfatt_trt_plugin.so; the _vc
build is taken from beside it), else they are built here with CMake (plugins/,
ELFATT_BUILD_TRT_PLUGIN=ON, TensorRT from $TENSORRT_ROOT or the system paths,
CUDA architecture of the local GPU). Every load order runs in a fresh Python
process, since plugin registration is process-wide.
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
def plugin_libs(tmp_path_factory) -> tuple[Path, Path]:
    """(libelfatt_trt_plugin.so, libelfatt_trt_plugin_vc.so)"""
    env_lib = os.environ.get("ELFATT_TRT_PLUGIN_LIB")
    if env_lib:
        lib = Path(env_lib)
        assert lib.is_file(), f"ELFATT_TRT_PLUGIN_LIB={env_lib} does not exist"
        vc = lib.with_name("libelfatt_trt_plugin_vc.so")
        assert vc.is_file(), f"{vc} (the getCreators build) is not beside {lib}"
        return lib, vc
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
    bld = subprocess.run([cmake, "--build", str(build), "-j2", "--target", "elfatt_trt_plugin", "elfatt_trt_plugin_vc"],
                         capture_output=True, text=True)
    assert bld.returncode == 0, bld.stdout[-5000:] + bld.stderr[-5000:]
    libs = build / "tensorrt" / "libelfatt_trt_plugin.so", build / "tensorrt" / "libelfatt_trt_plugin_vc.so"
    assert all(lib.is_file() for lib in libs)
    return libs


PRELUDE = textwrap.dedent(
    """
    import ctypes, sys
    import numpy as np
    import tensorrt as trt
    LIB, VC = sys.argv[1], sys.argv[2]
    logger = trt.Logger(trt.Logger.WARNING)
    registry = trt.get_plugin_registry()

    def find():
        for cand in registry.all_creators:
            if (cand.name, cand.plugin_version, cand.plugin_namespace) == ("ElfattAttention", "1", ""):
                return cand
        return None

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
    # libelfatt_trt_plugin.so: static registration (dlopen / ctypes / Polygraphy --plugins / trtexec --staticPlugins)
    "ctypes_static": "ctypes.CDLL(LIB)\ncheck_usable()",
    "load_library_refuses_static": (
        "assert registry.load_library(LIB) is None, 'load_library took a library without getCreators'\n"
        "assert find() is None"),
    # libelfatt_trt_plugin_vc.so: getCreators (IPluginRegistry::loadLibrary / trtexec --dynamicPlugins)
    "load_library_vc": "h = registry.load_library(VC)\nassert h is not None, 'load_library refused the _vc library'\ncheck_usable()",
    "ctypes_vc_registers_nothing": "ctypes.CDLL(VC)\nassert find() is None",
    "deregister_library_vc": (
        "h = registry.load_library(VC)\nassert h is not None\nregistry.deregister_library(h)\nassert find() is None\n"
        "assert registry.load_library(VC) is not None\ncheck_usable()"),
    # both in one process: the first registration stays, the second load is refused or skipped
    "static_then_vc": "ctypes.CDLL(LIB)\nassert registry.load_library(VC) is None\ncheck_usable()",
    "vc_then_static": "assert registry.load_library(VC) is not None\nctypes.CDLL(LIB)\ncheck_usable()",
    # elfatt-deploy's own loader picks the way from the library's exports
    "load_plugin_both": (
        "from elfatt_deploy.engine.plugin import load_plugin\n"
        "assert load_plugin(LIB, registry=registry)['how'] == 'ctypes.CDLL (static registration)'\ncheck_usable()"),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_load(plugin_libs, scenario):
    script = PRELUDE + "\n" + SCENARIOS[scenario] + "\nprint('LOAD-OK')\n"
    proc = subprocess.run([sys.executable, "-c", script, *map(str, plugin_libs)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "LOAD-OK" in proc.stdout, proc.stdout + proc.stderr


def test_real_libraries_export_exactly_their_style(plugin_libs):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found")
    for lib, expected in zip(plugin_libs, (set(), {"getCreators", "setLoggerFinder"})):
        out = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
        symbols = {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}
        assert symbols == expected, f"{lib}: {out.stdout}"
