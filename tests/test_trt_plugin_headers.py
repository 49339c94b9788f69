"""ElfattAttention TensorRT plugin: checks that need TensorRT *headers* only.

No libnvinfer and no GPU: the plugin sources are compiled warning-free against
every TensorRT header version found, the header-only C++ test driver
(plugins/tensorrt/tests/elfattPluginTest.cpp) is built and run per version, the
loading/registration design is exercised against a stand-in libnvinfer, the
exported symbols of the shared library are checked with ``nm -D``, and the CMake
options are checked. Skips (with the places searched) where headers, g++ or the
CUDA runtime headers are missing, e.g. in CI's clean clone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "plugins" / "tensorrt"
KERNELS_INCLUDE = REPO / "plugins" / "kernels" / "include"
PLAN_CPP = REPO / "plugins" / "kernels" / "src" / "plan.cpp"
#: The plugin classes and logging (both libraries), then each library's one registration source.
OBJECT_SOURCES = ["elfattPlugin.cpp", "elfattPluginLogger.cpp", "elfattPluginState.cpp"]
STATIC_SOURCE, VC_SOURCE = "elfattPluginStaticRegistration.cpp", "elfattPluginCreators.cpp"
PLUGIN_SOURCES = OBJECT_SOURCES + [STATIC_SOURCE, VC_SOURCE]
WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Wold-style-cast", "-Wpedantic", "-Werror"]
SYSTEM_TRT_INCLUDES = [
    "/usr/include/x86_64-linux-gnu",
    "/usr/include/aarch64-linux-gnu",
    "/usr/local/tensorrt/include",
    "/usr/include",
]


def _trt_include_candidates() -> list[Path]:
    cands: list[Path] = []
    if os.environ.get("TENSORRT_INCLUDE_DIR"):
        cands.append(Path(os.environ["TENSORRT_INCLUDE_DIR"]))
    if os.environ.get("TENSORRT_ROOT"):
        cands.append(Path(os.environ["TENSORRT_ROOT"]) / "include")
    cands.extend(sorted((REPO / ".trt").glob("*/include")))
    cands.extend(Path(p) for p in SYSTEM_TRT_INCLUDES)
    return cands


def _header_version(include: Path) -> str | None:
    header = include / "NvInferVersion.h"
    if not (include / "NvInferRuntime.h").is_file() or not header.is_file():
        return None
    text = header.read_text(errors="replace")
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(rf"#define TRT_{part}_ENTERPRISE\s+(\d+)", text) or re.search(
            rf"#define NV_TENSORRT_{part}\s+(\d+)", text
        )
        parts.append(m.group(1) if m else "?")
    return ".".join(parts)


def find_trt_headers() -> dict[str, Path]:
    """Version -> include dir, first hit per version wins."""
    found: dict[str, Path] = {}
    for cand in _trt_include_candidates():
        version = _header_version(cand)
        if version is not None and version not in found:
            found[version] = cand
    return found


def find_cuda() -> tuple[Path, Path] | None:
    """(include dir with cuda_runtime_api.h, lib dir with libcudart.so)."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(nvcc).resolve().parents[1]))
    for root in filter(None, roots):
        inc = Path(root) / "include"
        for lib in (Path(root) / "lib64", Path(root) / "lib", Path(root) / "targets/x86_64-linux/lib"):
            if (inc / "cuda_runtime_api.h").is_file() and (lib / "libcudart.so").exists():
                return inc, lib
    return None


TRT_HEADERS = find_trt_headers()
CUDA = find_cuda()
GXX = shutil.which("g++")
SEARCHED = (
    "$TENSORRT_INCLUDE_DIR, $TENSORRT_ROOT/include, "
    + str(REPO / ".trt" / "*" / "include")
    + ", "
    + ", ".join(SYSTEM_TRT_INCLUDES)
)


def _require_toolchain():
    if GXX is None:
        pytest.skip("g++ not found on PATH")
    if CUDA is None:
        pytest.skip("CUDA runtime headers/library not found ($CUDA_HOME, /usr/local/cuda, nvcc's prefix)")


VERSIONS = sorted(TRT_HEADERS) or [None]
VERSION_IDS = [f"trt{v}" if v else "no-trt-headers" for v in VERSIONS]


def _include(version: str | None) -> Path:
    if version is None:
        pytest.skip(f"no TensorRT headers (NvInferRuntime.h) found; looked in: {SEARCHED}")
    _require_toolchain()
    return TRT_HEADERS[version]


def _flags(include: Path) -> list[str]:
    assert CUDA is not None
    return [
        "-std=c++17",
        "-isystem",
        str(include),
        "-isystem",
        str(CUDA[0]),
        "-I",
        str(KERNELS_INCLUDE),
        "-I",
        str(PLUGIN_DIR),
        "-I",
        str(PLUGIN_DIR / "tests"),
    ]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("version", VERSIONS, ids=VERSION_IDS)
def test_plugin_sources_compile_warning_free(version, tmp_path):
    include = _include(version)
    flags = _flags(include) + WARNINGS + ["-fPIC", "-fvisibility=hidden", "-c"]

    def compile_one(src: str) -> subprocess.CompletedProcess:
        return _run([GXX, *flags, str(PLUGIN_DIR / src), "-o", str(tmp_path / (src + ".o"))])

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(compile_one, PLUGIN_SOURCES))
    for src, proc in zip(PLUGIN_SOURCES, results):
        _check(proc, f"g++ {' '.join(WARNINGS)} {src} against TensorRT {version} headers")
        assert proc.stderr.strip() == "", f"{src}: compiler output with TensorRT {version}:\n{proc.stderr}"


def _build_driver(include: Path, out: Path, real_plan: bool) -> None:
    assert CUDA is not None
    srcs = [PLUGIN_DIR / "elfattPlugin.cpp", PLUGIN_DIR / "elfattPluginLogger.cpp", PLUGIN_DIR / "elfattPluginState.cpp",
            PLUGIN_DIR / "tests/kernelStubs.cpp",
            PLUGIN_DIR / "tests/elfattPluginTest.cpp"]
    objs = []
    cmd_extra = ["-DELFATT_TEST_REAL_PLAN=1"] if real_plan else []
    if real_plan:
        # The kernels' host-only planner (another component): no -Werror on it here.
        plan_obj = out.parent / "plan.o"
        _check(_run([GXX, *_flags(include), "-c", str(PLAN_CPP), "-o", str(plan_obj)]), "compiling plan.cpp")
        objs.append(str(plan_obj))
    cmd = [GXX, *_flags(include), *WARNINGS, *cmd_extra, *map(str, srcs), *objs, "-L", str(CUDA[1]), "-lcudart",
           f"-Wl,-rpath,{CUDA[1]}", "-o", str(out)]
    _check(_run(cmd), f"building the test driver against {include}")


def _run_driver(exe: Path) -> str:
    proc = _run([str(exe)])
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"driver failed:\n{report}"
    assert re.search(r"SUMMARY (\d+) checks, 0 failed", proc.stdout), report
    n_pass = len(re.findall(r"^PASS ", proc.stdout, flags=re.M))
    assert n_pass >= 80, f"only {n_pass} checks ran:\n{report}"
    assert "FAIL" not in proc.stdout
    return proc.stdout


@pytest.mark.parametrize("version", VERSIONS, ids=VERSION_IDS)
def test_header_only_driver(version, tmp_path):
    include = _include(version)
    exe = tmp_path / "elfatt_trt_plugin_test"
    _build_driver(include, exe, real_plan=False)
    out = _run_driver(exe)
    assert f"TensorRT headers {version}" in out
    for name in ("reject.global_heads_negative", "serialize.round_trip", "shapes.symbolic_channels_use_builder_division",
                 "formats.exactly_same_type_linear", "workspace.from_max_shapes", "enqueue.params_mapped",
                 # field types as the ONNX parser (kINT32 / kFLOAT32, unaligned) and the Python API (int64 / float64)
                 # pass them
                 "create.onnx_parser_fields_unaligned", "create.int64_and_float64_fields",
                 "serialize.canonical_types_after_int64_input", "reject.global_heads_int64_out_of_range",
                 "reject.scale_float64_out_of_float_range",
                 # kernels v2's persistent chunk counters (elfattPluginState.h) against a fake CUDA runtime
                 "counters.allocated_and_zeroed_in_stream_once", "counters.allocated_in_relaxed_capture_mode_then_restored",
                 "counters.reused_without_memset", "counters.zeroed_again_after_a_failure",
                 "counters.grow_retires_the_smaller_without_freeing", "counters.copy_owns_nothing",
                 "counters.no_allocation_while_capturing", "counters.no_memset_of_dirty_ones_while_capturing",
                 "counters.freed_by_the_destructor_on_their_device",
                 "plugin_counters.passed_to_the_kernels_zeroed_in_stream", "plugin_counters.no_memset_on_later_enqueues",
                 "plugin_counters.zeroed_again_after_a_failed_enqueue", "plugin_counters.clone_has_its_own",
                 "plugin_counters.memset_path_when_first_enqueued_under_capture",
                 "plugin_counters.freed_with_the_instances"):
        assert f"PASS {name}\n" in out, name


def test_header_only_driver_with_real_workspace_planner(tmp_path):
    """Same driver, linked with the kernels' real validateParams/workspaceSize (host-only plan.cpp)."""
    include = _include(max(TRT_HEADERS, key=lambda v: [int(x) for x in v.split(".")]) if TRT_HEADERS else None)
    if not PLAN_CPP.is_file():
        pytest.skip(f"{PLAN_CPP} not present yet")
    exe = tmp_path / "elfatt_trt_plugin_test_real"
    _build_driver(include, exe, real_plan=True)
    out = _run_driver(exe)
    assert "kernels: real plan.cpp" in out
    assert "PASS workspace.nonzero_with_global_heads\n" in out


def _newest_trt11() -> Path:
    v11 = [v for v in TRT_HEADERS if v.startswith("11.")]
    if not v11:
        pytest.skip(f"the stand-in libnvinfer is written against TensorRT 11 headers; none found in: {SEARCHED}")
    return _include(max(v11, key=lambda v: [int(x) for x in v.split(".")]))


@pytest.fixture(scope="module")
def simulated_build(tmp_path_factory):
    """Both plugin libraries (kernels stubbed) linked against a stand-in libnvinfer, plus the scenario runner.

    Linked as plugins/tensorrt/CMakeLists.txt links them: the same objects, one registration source and one
    version script per library."""
    include = _newest_trt11()
    assert CUDA is not None and GXX is not None
    d = tmp_path_factory.mktemp("trt_sim")
    flags = _flags(include)
    _check(_run([GXX, *flags, "-shared", "-fPIC", str(PLUGIN_DIR / "tests/fakeNvinfer.cpp"), "-o",
                 str(d / "libnvinfer.so"), "-ldl"]), "building the stand-in libnvinfer")
    objects = []
    for src in OBJECT_SOURCES + ["tests/kernelStubs.cpp"]:
        obj = d / (Path(src).name + ".o")
        _check(_run([GXX, *flags, *WARNINGS, "-c", "-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
                     str(PLUGIN_DIR / src), "-o", str(obj)]), f"compiling {src}")
        objects.append(str(obj))
    libs = {}
    for name, source, script in (("libelfatt_trt_plugin.so", STATIC_SOURCE, "elfatt_trt_plugin.map"),
                                 ("libelfatt_trt_plugin_vc.so", VC_SOURCE, "elfatt_trt_plugin_vc.map")):
        libs[name] = d / name
        _check(_run([GXX, *flags, *WARNINGS, "-shared", "-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
                     str(PLUGIN_DIR / source), *objects, "-L", str(d), "-lnvinfer", f"-Wl,-rpath,{d}", "-L",
                     str(CUDA[1]), "-lcudart", f"-Wl,-rpath,{CUDA[1]}", f"-Wl,--version-script={PLUGIN_DIR / script}",
                     "-Wl,--exclude-libs,ALL", "-Wl,--no-undefined", "-o", str(libs[name])]), f"linking {name}")
    runner = d / "registrationTest"
    _check(_run([GXX, *flags, str(PLUGIN_DIR / "tests/registrationTest.cpp"), "-L", str(d), "-lnvinfer",
                 f"-Wl,-rpath,{d}", "-ldl", "-o", str(runner)]), "building the scenario runner")
    return libs["libelfatt_trt_plugin.so"], libs["libelfatt_trt_plugin_vc.so"], runner, d / "libnvinfer.so"


def _exports(lib) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found")
    proc = _run([nm, "-D", "--defined-only", str(lib)])
    _check(proc, "nm -D")
    return {line.split()[-1] for line in proc.stdout.splitlines() if line.strip()}


def test_each_library_exports_exactly_its_style(simulated_build):
    static, vc, _, _ = simulated_build
    assert _exports(static) == set(), "the static-registration library exports nothing"
    assert _exports(vc) == {"getCreators", "setLoggerFinder"}


STATIC_SCENARIOS = ["dlopen_lazy_local", "dlopen_now_local", "dlopen_lazy_global", "dlopen_now_global", "preloaded",
                    "unload_static", "two_static_copies", "loadlibrary_static"]
VC_SCENARIOS = ["dlopen_vc", "loadlibrary_vc", "loadlibrary_vc_twice", "deregister_vc", "serialized_copy"]
MIXED_SCENARIOS = ["static_then_vc", "vc_then_static"]


@pytest.mark.parametrize("scenario", STATIC_SCENARIOS + VC_SCENARIOS + MIXED_SCENARIOS)
def test_registration_scenarios_with_stand_in_registry(simulated_build, scenario, tmp_path):
    """Every load path against the stand-in registry (the real one: test_trt_plugin_load.py, with TensorRT)."""
    static, vc, runner, _ = simulated_build
    args = [str(runner), str(static), str(vc), scenario]
    env = dict(os.environ)
    if scenario == "two_static_copies":
        args.append(str(shutil.copy(static, tmp_path / "libelfatt_trt_plugin_copy.so")))
    elif scenario == "serialized_copy":
        args.append(str(shutil.copy(vc, tmp_path / "embedded-plugin-library.so")))
    elif scenario == "preloaded":
        env["LD_PRELOAD"] = str(static)
    proc = _run(args, env=env)
    assert proc.returncode == 0 and "SUMMARY 0 failed" in proc.stdout, proc.stdout + proc.stderr
    if scenario.startswith("dlopen_") and scenario != "dlopen_vc":
        assert "(static registration)" in proc.stderr
    if scenario == "loadlibrary_static":
        assert "getCreators could not be loaded" in proc.stderr, proc.stderr
    if scenario in ("two_static_copies", "vc_then_static"):
        assert "registerCreator:" not in proc.stderr, proc.stderr  # the second load registers nothing: no registry error
        assert "static registration skipped" in proc.stderr


CTYPES_CHECK = """
import ctypes, sys
fake = ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)   # libnvinfer, as `import tensorrt` loads it
fake.fakeNvinferCountCreators.restype = ctypes.c_int32
ctypes.CDLL(sys.argv[2])                                   # what Polygraphy --plugins and load_plugin do
print(fake.fakeNvinferCountCreators(b"ElfattAttention"))
"""


@pytest.mark.parametrize("which,expected", [("static", 1), ("vc", 0)])
def test_python_ctypes_loads_the_static_library(simulated_build, which, expected):
    static, vc, _, nvinfer = simulated_build
    proc = _run([sys.executable, "-c", CTYPES_CHECK, str(nvinfer), str(static if which == "static" else vc)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(expected), proc.stdout + proc.stderr


def test_python_loader_reads_each_library_kind(simulated_build):
    from elfatt_deploy.engine.plugin import STYLE_GET_CREATORS, STYLE_STATIC, library_info

    static, vc, _, _ = simulated_build
    assert library_info(static).style == STYLE_STATIC and library_info(vc).style == STYLE_GET_CREATORS


# ---- CMake ------------------------------------------------------------------------------------------------------

def _cmake_configure(tmp_path, *args, env=None):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    if find_cuda() is None or shutil.which("nvcc") is None and not os.environ.get("CUDACXX"):
        pytest.skip("nvcc not found: plugins/CMakeLists.txt needs the CUDA language")
    build = tmp_path / "build"
    full_env = dict(os.environ)
    full_env.pop("TENSORRT_ROOT", None)
    full_env.update(env or {})
    return _run([cmake, "-S", str(REPO / "plugins"), "-B", str(build), "-DCMAKE_CUDA_ARCHITECTURES=87", *args],
                env=full_env), build


def _system_has_trt() -> bool:
    return any(_header_version(Path(p)) for p in SYSTEM_TRT_INCLUDES)


def test_cmake_auto_skips_with_searched_paths(tmp_path):
    if _system_has_trt():
        pytest.skip("TensorRT is installed in a system path: AUTO would build")
    missing = tmp_path / "no-tensorrt-here"
    proc, _ = _cmake_configure(tmp_path, f"-DTENSORRT_ROOT={missing}")
    _check(proc, "cmake configure with ELFATT_BUILD_TRT_PLUGIN=AUTO")
    out = proc.stdout + proc.stderr
    assert "TensorRT plugin not built" in out, out
    for path in (f"{missing}/include", "/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu",
                 "/usr/local/tensorrt/include"):
        assert path in out, f"{path} not named in:\n{out}"


def test_cmake_on_fails_naming_paths(tmp_path):
    if _system_has_trt():
        pytest.skip("TensorRT is installed in a system path: ON would build")
    proc, _ = _cmake_configure(tmp_path, "-DELFATT_BUILD_TRT_PLUGIN=ON", env={"TENSORRT_ROOT": "/nonexistent/trt"})
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "/nonexistent/trt/include" in out and "/usr/lib/x86_64-linux-gnu" in out, out


def test_cmake_headers_only_builds_and_runs_driver(tmp_path):
    if not TRT_HEADERS:
        pytest.skip(f"no TensorRT headers found; looked in: {SEARCHED}")
    version = max(TRT_HEADERS, key=lambda v: [int(x) for x in v.split(".")])
    include = _include(version)
    proc, build = _cmake_configure(tmp_path, "-DELFATT_TRT_HEADERS_ONLY=ON", f"-DTENSORRT_INCLUDE_DIR={include}")
    _check(proc, "cmake configure (headers only)")
    assert f"TensorRT {version} headers" in proc.stdout
    _check(_run([shutil.which("cmake"), "--build", str(build), "-j2", "--target", "elfatt_trt_plugin_test"]),
           "cmake --build elfatt_trt_plugin_test")
    _run_driver(build / "tensorrt" / "elfatt_trt_plugin_test")
