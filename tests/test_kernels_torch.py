"""The PyTorch side of the CUDA kernels without a GPU: cuda_backend's error paths,
lazy registration and dispatch rules (float64 to the reference, LePE dtypes), the
architecture flags, the build-ext command, the plugins/ CMake configuration, a compile
check of the binding against the installed torch headers, and the binding itself run
on CPU tensors (a host test build whose kernel launch is a recorder)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sysconfig
import warnings
from pathlib import Path

import pytest
import torch

from elfatt_deploy.op import cuda_backend
from elfatt_deploy.op.reference import elfatt_attention_reference

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def backend(monkeypatch):
    """cuda_backend with its build cache and registration attempt forgotten (restored after)."""
    saved = (cuda_backend._module, cuda_backend._register_attempted, cuda_backend._registered)
    cuda_backend._module = None
    cuda_backend._register_attempted = False
    cuda_backend._registered = False
    yield cuda_backend
    cuda_backend._module, cuda_backend._register_attempted, cuda_backend._registered = saved


def test_sources_exist():
    for path in cuda_backend.source_files():
        assert path.is_file(), path


def test_cuda_home_pointing_nowhere_says_how_to_fix(backend, monkeypatch, tmp_path):
    nowhere = tmp_path / "no-cuda-here"
    monkeypatch.setenv("CUDA_HOME", str(nowhere))
    with pytest.raises(cuda_backend.CudaBackendError) as info:
        backend.build_extension()
    msg = str(info.value)
    assert f"CUDA_HOME={nowhere}" in msg and "bin/nvcc" in msg
    assert "Set CUDA_HOME" in msg and "unset" in msg


def test_cuda_path_is_checked_too(backend, monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setenv("CUDA_PATH", str(tmp_path))
    with pytest.raises(cuda_backend.CudaBackendError, match="CUDA_PATH=.*bin/nvcc"):
        backend.build_extension()


def test_no_nvcc_anywhere_says_how_to_fix(backend, monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(cuda_backend, "DEFAULT_CUDA_HOME", tmp_path / "cuda")
    with pytest.raises(cuda_backend.CudaBackendError) as info:
        backend.build_extension()
    assert "nvcc was not found" in str(info.value) and "CUDA_HOME=" in str(info.value)


def test_fake_toolkit_is_accepted_as_cuda_home(backend, monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").write_text("#!/bin/sh\nexit 1\n")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert backend.find_cuda_home() == tmp_path


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch has CUDA: the CPU-only message does not apply")
def test_cpu_only_torch_says_how_to_fix(backend, monkeypatch):
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file():
        pytest.skip("no nvcc: the toolkit check fails first")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    with pytest.raises(cuda_backend.CudaBackendError, match="CPU-only build.*install a CUDA build of PyTorch"):
        backend.build_extension()


def test_is_available_never_raises(backend, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert backend.is_available() is False


def test_maybe_register_without_gpu_is_silent(backend, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend.maybe_register() is False
    assert not backend.registered()


def test_maybe_register_warns_once_and_keeps_reference(backend, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="eager reference.*CUDA_HOME"):
        assert backend.maybe_register() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend.maybe_register() is False  # no second warning, no second build attempt
    assert not backend.registered()
    # The op still runs (eager reference) after the failed attempt.
    qkv = torch.randn(1, 3, 4, 3 * 8, dtype=torch.float64)
    out = torch.ops.elfatt.attention(qkv, None, None, 1, 1, 2, 2, 0.0)
    assert out.shape == (1, 3, 4, 8) and torch.isfinite(out).all()


def test_disable_env_skips_registration(backend, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("ELFATT_DISABLE_CUDA_KERNELS", "1")
    monkeypatch.setattr(backend, "register_cuda_kernel", lambda: pytest.fail("must not build"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend.maybe_register() is False


def test_build_ext_cli_reports_the_fix(backend, monkeypatch, tmp_path, capsys):
    from elfatt_deploy.cli import main

    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "missing"))
    assert main(["build-ext"]) == 3  # environment: no nvcc
    err = capsys.readouterr().err
    assert "build-ext: error:" in err and "CUDA_HOME" in err and "bin/nvcc" in err
    assert "Traceback" not in err


def test_build_ext_is_a_listed_command(capsys):
    from elfatt_deploy.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "build-ext" in capsys.readouterr().out


def _torch_include_flags(tmp_path: Path):
    base = Path(torch.__file__).parent / "include"
    cuda_include = None
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and (Path(root) / "include" / "cuda_runtime_api.h").is_file():
            cuda_include = Path(root) / "include"
            break
    if cuda_include is None or not (base / "c10" / "cuda" / "CUDAGuard.h").is_file():
        return None
    flags = [f"-isystem{base}", f"-isystem{base / 'torch' / 'csrc' / 'api' / 'include'}",
             f"-isystem{sysconfig.get_paths()['include']}", f"-isystem{cuda_include}"]
    if not (base / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").is_file():
        # CPU wheels ship the c10/cuda headers without this generated (here empty) one.
        stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
        stub.mkdir(parents=True)
        (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
        flags.append(f"-isystem{tmp_path / 'stub'}")
    return flags


def test_binding_compiles_against_torch_headers(tmp_path):
    """Syntax and type check of plugins/torch/elfatt_torch.cpp, warnings as errors for our code."""
    cxx = shutil.which("g++") or shutil.which("c++")
    flags = _torch_include_flags(tmp_path)
    if cxx is None or flags is None:
        pytest.skip("needs g++, the CUDA headers and torch's c10/cuda headers")
    cmd = [cxx, "-std=c++20", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
           "-DTORCH_EXTENSION_NAME=elfatt_cuda_ext", "-DTORCH_API_INCLUDE_EXTENSION_H", *flags,
           f"-I{REPO / 'plugins' / 'kernels' / 'include'}", str(REPO / "plugins" / "torch" / "elfatt_torch.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _nvcc_archs(nvcc: str) -> set[str]:
    out = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True).stdout
    return set(re.findall(r"compute_(\d+)", out))


@pytest.mark.parametrize("override", [None, "87;90"])
def test_cmake_configures_kernels_with_supported_archs(tmp_path, override):
    cmake = shutil.which("cmake")
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file() else None)
    if cmake is None or nvcc is None:
        pytest.skip("needs cmake and nvcc")
    cmd = [cmake, "-S", str(REPO / "plugins"), "-B", str(tmp_path / "build"), f"-DCMAKE_CUDA_COMPILER={nvcc}"]
    if override:
        cmd.append(f"-DCMAKE_CUDA_ARCHITECTURES={override}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cache = (tmp_path / "build" / "CMakeCache.txt").read_text()
    archs = re.search(r"^CMAKE_CUDA_ARCHITECTURES:\w+=(.*)$", cache, re.M).group(1).split(";")
    if override:
        assert archs == override.split(";")
    else:
        supported = _nvcc_archs(nvcc)
        assert "87" in archs
        assert set(archs) <= supported | {"87"}, f"{archs} has archs this nvcc lacks ({sorted(supported)})"
        wanted = {"72", "75", "80", "86", "87", "89", "90", "100", "120"}
        assert set(archs) == (wanted & supported) | {"87"}
    build_file = (tmp_path / "build" / "build.ninja") if (tmp_path / "build" / "build.ninja").exists() \
        else (tmp_path / "build" / "Makefile")
    assert build_file.exists()
    assert "elfatt_kernels" in (tmp_path / "build" / "CMakeFiles" / "TargetDirectories.txt").read_text()


# ------------------------------------------------------------------------------------------------
# Sources and architectures of the extension build.
# ------------------------------------------------------------------------------------------------
def test_extension_builds_the_plugins_kernel_sources():
    """The extension compiles exactly the elfatt_kernels library of plugins/CMakeLists.txt (what the
    TensorRT plugin links), and that library holds every kernel source there is."""
    sources = cuda_backend.kernel_sources()
    src = REPO / "plugins" / "kernels" / "src"
    assert all(p.is_file() for p in sources), sources
    on_disk = set(src.glob("*.cu")) | set(src.glob("*.cpp"))
    assert set(sources) == on_disk, f"CMake lists {sorted(map(str, sources))}; src/ has {sorted(map(str, on_disk))}"
    assert cuda_backend.source_files() == [REPO / "plugins" / "torch" / "elfatt_torch.cpp", *sources]


def test_unreadable_kernel_source_list_says_why(tmp_path):
    cmake = tmp_path / "CMakeLists.txt"
    cmake.write_text("add_library(something_else STATIC a.cu)\n")
    with pytest.raises(cuda_backend.CudaBackendError, match="no add_library\\(elfatt_kernels"):
        cuda_backend.kernel_sources(cmake)
    with pytest.raises(cuda_backend.CudaBackendError, match="cannot read .*pip install -e"):
        cuda_backend.kernel_sources(tmp_path / "missing.txt")


@pytest.mark.parametrize("value, flags, archs", [
    ("9.0", ["-gencode=arch=compute_90,code=sm_90"], ["9.0"]),
    ("8.7;9.0+PTX", ["-gencode=arch=compute_87,code=sm_87", "-gencode=arch=compute_90,code=sm_90",
                     "-gencode=arch=compute_90,code=compute_90"], ["8.7", "9.0"]),
    (" 8.0 8.7 ", ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_87,code=sm_87"], ["8.0", "8.7"]),
    ("9.0a", ["-gencode=arch=compute_90a,code=sm_90a"], ["9.0a"]),
    ("Ampere;Hopper+PTX", [], []),  # named: torch translates them
])
def test_arch_list_becomes_gencode_flags(value, flags, archs):
    assert cuda_backend.cuda_arch_flags(value) == (flags, archs)


@pytest.mark.parametrize("value", ["sm_90", "9", "8.7;;compute_90", "9.0+ptx"])
def test_malformed_arch_list_is_refused(value):
    with pytest.raises(cuda_backend.CudaBackendError, match=f"TORCH_CUDA_ARCH_LIST={re.escape(repr(value))}.*8.7"):
        cuda_backend.cuda_arch_flags(value)


def test_default_archs_are_the_visible_gpus(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    flags, archs = cuda_backend.cuda_arch_flags(capabilities=[(9, 0), (8, 7), (9, 0)])
    assert archs == ["8.7", "9.0"] and len(flags) == 2
    assert cuda_backend.cuda_arch_flags(capabilities=[]) == ([], [])  # no GPU, no list: torch decides
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.7")
    assert cuda_backend.cuda_arch_flags(capabilities=[(9, 0)])[1] == ["8.7"]  # the variable wins


# ------------------------------------------------------------------------------------------------
# Dispatch rules of the "cuda" kernel of elfatt::attention (pure Python, CPU tensors stand in).
# ------------------------------------------------------------------------------------------------
class RecordingModule:
    """Stands in for the built extension: records what the kernels would receive."""

    def __init__(self):
        self.calls = []

    def attention(self, qkv, weight, bias, *attrs):
        self.calls.append((qkv, weight, bias, attrs))
        return torch.zeros(*qkv.shape[:3], qkv.shape[3] // 3, dtype=qkv.dtype)


@pytest.fixture
def recording(backend, monkeypatch):
    module = RecordingModule()
    monkeypatch.setattr(backend, "build_extension", lambda verbose=False: module)
    monkeypatch.delenv("ELFATT_KERNEL_PATH", raising=False)
    return module


def _inputs(qkv_dtype, weight_dtype, bias_dtype, c=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(2, 5, 6, 3 * c, generator=g).to(qkv_dtype)
    weight = None if weight_dtype is None else (0.3 * torch.randn(c, 1, 3, 3, generator=g)).to(weight_dtype)
    bias = None if bias_dtype is None else (0.1 * torch.randn(c, generator=g)).to(bias_dtype)
    return qkv, weight, bias


ATTRS = (1, 1, 3, 4, 0.0)


def test_float64_goes_to_the_eager_reference(recording):
    qkv, weight, bias = _inputs(torch.float64, torch.float64, torch.float64)
    out = cuda_backend._op_kernel(qkv, weight, bias, *ATTRS)
    assert recording.calls == []
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, elfatt_attention_reference(qkv, weight, bias, *ATTRS), rtol=0, atol=0)
    # float64 qkv with float32 LePE, and a non-contiguous float64 qkv, too.
    qkv_t = qkv.transpose(1, 2).contiguous().transpose(1, 2)
    out = cuda_backend._op_kernel(qkv_t, weight.float(), None, *ATTRS)
    assert recording.calls == [] and out.shape == (2, 5, 6, 16)


def test_the_kernels_refuse_float64_with_the_way_out(recording):
    qkv, _, _ = _inputs(torch.float64, None, None)
    with pytest.raises(ValueError, match="float64 is not taken by the CUDA kernels.*eager reference"):
        cuda_backend.cuda_attention(qkv, None, None, *ATTRS)
    assert recording.calls == []


@pytest.mark.parametrize("qkv_dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("lepe_dtype", ["same", torch.float32])
def test_lepe_of_qkv_dtype_or_float32_reaches_the_kernels_unchanged(recording, qkv_dtype, lepe_dtype):
    """fp32 parameters under fp16/bf16 autocast: the kernels get the very tensors (no cast, no rounding)."""
    lepe_dtype = qkv_dtype if lepe_dtype == "same" else lepe_dtype
    qkv, weight, bias = _inputs(qkv_dtype, lepe_dtype, lepe_dtype)
    cuda_backend._op_kernel(qkv, weight, bias, *ATTRS)
    (got_qkv, got_weight, got_bias, attrs), = recording.calls
    assert got_qkv is qkv and got_weight is weight and got_bias is bias
    assert attrs == (*ATTRS, -1)  # -1: the library default path ($ELFATT_KERNEL_PATH unset)


@pytest.mark.parametrize("qkv_dtype, weight_dtype, bias_dtype", [
    (torch.float16, torch.float64, torch.float64),   # float64 parameters
    (torch.bfloat16, torch.float16, torch.float16),  # another 16-bit type than qkv's
    (torch.float16, torch.float32, torch.float16),   # weight and bias differ
    (torch.float16, torch.float16, torch.float32),
    (torch.float32, torch.float64, None),
])
def test_other_lepe_dtypes_become_float32(recording, qkv_dtype, weight_dtype, bias_dtype):
    """What the eager reference computes with (it widens LePE to float32 for these qkv dtypes)."""
    qkv, weight, bias = _inputs(qkv_dtype, weight_dtype, bias_dtype)
    cuda_backend._op_kernel(qkv, weight, bias, *ATTRS)
    (got_qkv, got_weight, got_bias, _), = recording.calls
    assert got_qkv is qkv
    assert got_weight.dtype == torch.float32 and torch.equal(got_weight, weight.float())
    if bias is None:
        assert got_bias is None
    else:
        assert got_bias.dtype == torch.float32 and torch.equal(got_bias, bias.float())


def test_lepe_on_another_device_is_refused_by_name():
    from elfatt_deploy.op.library import check_op_inputs

    qkv, weight, bias = _inputs(torch.float32, torch.float32, torch.float32)
    with pytest.raises(ValueError, match="lepe_weight is on meta but qkv is on cpu; move both to the same device"):
        check_op_inputs(qkv, weight.to("meta"), bias, *ATTRS)
    with pytest.raises(ValueError, match="lepe_bias is on meta but qkv is on cpu"):
        check_op_inputs(qkv, weight, bias.to("meta"), *ATTRS)


@pytest.mark.parametrize("path, number", [("fused", 4), ("tensorcore", 3), ("generic", 2), (0, 0), (4, 4)])
def test_kernel_path_names_and_numbers(recording, path, number):
    qkv, weight, bias = _inputs(torch.float16, torch.float32, torch.float32)
    cuda_backend.cuda_attention(qkv, weight, bias, *ATTRS, path=path)
    assert recording.calls[-1][3][-1] == number


@pytest.mark.parametrize("path", ["fast", 5, -2, True, 1.0])
def test_unknown_kernel_path_is_refused_by_name(recording, path):
    qkv, _, _ = _inputs(torch.float16, None, None)
    with pytest.raises(ValueError, match=f"kernel path {re.escape(repr(path))} is not one of .*fused"):
        cuda_backend.cuda_attention(qkv, None, None, *ATTRS, path=path)
    assert recording.calls == []


def test_env_kernel_path_fused_is_passed(recording, monkeypatch):
    monkeypatch.setenv("ELFATT_KERNEL_PATH", "fused")
    qkv, _, _ = _inputs(torch.bfloat16, None, None)
    cuda_backend._op_kernel(qkv, None, None, *ATTRS)
    assert recording.calls[-1][3][-1] == 4


# ------------------------------------------------------------------------------------------------
# The binding itself on CPU tensors: a host test build (ELFATT_TORCH_HOST_TEST) of
# plugins/torch/elfatt_torch.cpp with the real plan.cpp and a recording enqueueWithPath.
# ------------------------------------------------------------------------------------------------
HOST_TEST_NAME = "elfatt_torch_host_test"
K_FLOAT, K_HALF, K_BF16 = 0, 1, 2


@pytest.fixture(scope="module")
def host_binding(request, tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("needs g++ to build the binding's host test module")
    from torch.utils import cpp_extension

    torch_lib = Path(torch.__file__).parent / "lib"
    sources = [REPO / "plugins" / "torch" / "elfatt_torch.cpp", REPO / "plugins" / "torch" / "tests" / "host_test_stubs.cpp",
               REPO / "plugins" / "kernels" / "src" / "plan.cpp"]
    includes = [REPO / "plugins" / "kernels" / "include", REPO / "plugins" / "kernels" / "src",
                REPO / "plugins" / "kernels" / "tests" / "stub", REPO / "plugins" / "torch" / "tests"]
    cmd = [cxx, "-std=c++20", "-O0", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-DELFATT_TORCH_HOST_TEST",
           f"-DTORCH_EXTENSION_NAME={HOST_TEST_NAME}", "-DTORCH_API_INCLUDE_EXTENSION_H",
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
           *[f"-isystem{p}" for p in cpp_extension.include_paths()], f"-isystem{sysconfig.get_paths()['include']}",
           *[f"-I{p}" for p in includes], *map(str, sources),
           f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]
    digest = hashlib.sha256("\0".join(cmd).encode() + torch.__version__.encode())
    for folder in includes + [REPO / "plugins" / "torch"]:
        for path in sorted(folder.glob("*")):
            if path.is_file() and path.suffix in {".h", ".cuh", ".cpp"}:
                digest.update(path.read_bytes())
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("elfatt_torch_host_test") if cache else tmp_path_factory.mktemp("host_test"))
    target = root / digest.hexdigest()[:20] / f"{HOST_TEST_NAME}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run([*cmd, "-o", str(partial)], capture_output=True, text=True)
        assert proc.returncode == 0, "the binding's host test build failed:\n" + proc.stderr[-6000:]
        partial.rename(target)
    spec = importlib.util.spec_from_file_location(HOST_TEST_NAME, target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _half_inputs(c=16, weight_dtype=torch.float32, bias_dtype=torch.float32, qkv_dtype=torch.float16):
    return _inputs(qkv_dtype, weight_dtype, bias_dtype, c=c)


def test_host_binding_passes_float32_lepe_as_is(host_binding):
    qkv, weight, bias = _half_inputs()
    out = host_binding.attention(qkv, weight, bias, 1, 1, 3, 4, 0.0, 4)
    r = host_binding._last_launch()
    assert (r["dtype"], r["has_lepe"], r["lepe_float32"], r["path"]) == (K_HALF, True, True, 4)
    # The kernels read the caller's tensors: no copy, no cast.
    assert (r["qkv"], r["lepe_weight"], r["lepe_bias"]) == (qkv.data_ptr(), weight.data_ptr(), bias.data_ptr())
    assert (r["batch"], r["height"], r["width"], r["channels"]) == (2, 5, 6, 16)
    assert out.dtype == torch.float16 and out.shape == (2, 5, 6, 16) and r["out"] == out.data_ptr()
    assert r["workspace"] != 0  # a global head needs the context workspace


@pytest.mark.parametrize("qkv_dtype, kind", [(torch.float16, K_HALF), (torch.bfloat16, K_BF16), (torch.float32, K_FLOAT)])
def test_host_binding_passes_lepe_of_qkv_dtype_as_is(host_binding, qkv_dtype, kind):
    qkv, weight, bias = _half_inputs(weight_dtype=qkv_dtype, bias_dtype=qkv_dtype, qkv_dtype=qkv_dtype)
    host_binding.attention(qkv, weight, None, 0, 2, 3, 4, 0.0, 3)
    r = host_binding._last_launch()
    assert (r["dtype"], r["lepe_float32"] if qkv_dtype != torch.float32 else False) == (kind, False)
    assert (r["lepe_weight"], r["lepe_bias"], r["workspace"]) == (weight.data_ptr(), 0, 0)  # local only: no workspace


def test_host_binding_without_lepe(host_binding):
    qkv, _, _ = _half_inputs()
    host_binding.attention(qkv, None, None, 1, 1, 3, 4, 0.0, -1)
    r = host_binding._last_launch()
    assert (r["has_lepe"], r["lepe_float32"], r["lepe_weight"], r["lepe_bias"]) == (False, False, 0, 0)
    assert r["path"] == 0  # -1: defaultKernelPath(), auto without ELFATT_KERNEL_PATH


def test_host_binding_copies_a_non_contiguous_qkv(host_binding):
    qkv, weight, bias = _half_inputs()
    strided = qkv.transpose(1, 2).contiguous().transpose(1, 2)  # same values, not contiguous
    assert not strided.is_contiguous()
    host_binding.attention(strided, weight, bias, 1, 1, 3, 4, 0.0, 4)
    r = host_binding._last_launch()
    assert r["qkv"] not in (strided.data_ptr(), 0) and (r["height"], r["width"]) == (5, 6)
    # A non-contiguous LePE weight is made contiguous too (the kernels index it as [C, 1, 3, 3]).
    weight_t = weight.transpose(2, 3).contiguous().transpose(2, 3)
    host_binding.attention(qkv, weight_t, bias, 1, 1, 3, 4, 0.0, 4)
    assert host_binding._last_launch()["lepe_weight"] not in (weight_t.data_ptr(), 0)


@pytest.mark.parametrize("name", ["qkv", "lepe_weight", "lepe_bias"])
def test_host_binding_refuses_an_output_that_overlaps_an_input(host_binding, name):
    """The kernels read qkv and LePE while they write out: a shared buffer would give a wrong answer."""
    n_qkv, n_weight, n_bias, n_out = 2 * 5 * 6 * 48, 16 * 9, 16, 2 * 5 * 6 * 16
    storage = torch.randn(n_qkv + n_weight + n_bias + n_out).half()
    qkv = storage[:n_qkv].view(2, 5, 6, 48)
    weight = storage[n_qkv: n_qkv + n_weight].view(16, 1, 3, 3)
    bias = storage[n_qkv + n_weight: n_qkv + n_weight + n_bias]
    start = {"qkv": n_qkv - 5, "lepe_weight": n_qkv + 3, "lepe_bias": n_qkv + n_weight + 1}[name]
    out = storage[start: start + n_out].view(2, 5, 6, 16)  # overlaps the end of `name` only
    calls = host_binding._last_launch()["calls"]
    with pytest.raises(RuntimeError, match=f"out shares memory with {name} .*pass a separate output tensor"):
        host_binding.attention_into(out, qkv, weight, bias, 1, 1, 3, 4, 0.0, 0)
    assert host_binding._last_launch()["calls"] == calls  # nothing launched
    fresh = torch.empty(2, 5, 6, 16, dtype=torch.float16)
    host_binding.attention_into(fresh, qkv, weight, bias, 1, 1, 3, 4, 0.0, 0)
    r = host_binding._last_launch()
    assert (r["calls"], r["out"], r["qkv"]) == (calls + 1, fresh.data_ptr(), qkv.data_ptr())


def test_host_binding_passes_the_persistent_state(host_binding):
    """attention_with_state runs enqueueWithPathAndState (the TensorRT plugin's call) with the caller's state, which
    state_size sizes: 4 x B x G x groups x (1 + d) bytes where kernels v2 run (here 30 tokens: one chunk, one group
    per (b, head), d = 32), 0 where they do not (float32; an empty state is then accepted)."""
    qkv, weight, bias = _half_inputs(c=64)
    assert host_binding.state_size(qkv, weight, bias, 1, 1, 3, 4, 0.0) == 4 * 2 * 1 * 1 * (1 + 32)
    state = torch.zeros(264, dtype=torch.uint8)
    out = torch.empty(2, 5, 6, 64, dtype=torch.float16)
    host_binding.attention_with_state(out, qkv, weight, bias, 1, 1, 3, 4, 0.0, state, 4)
    r = host_binding._last_launch()
    assert (r["with_state"], r["state"], r["state_bytes"], r["path"]) == (True, state.data_ptr(), 264, 4)
    assert (r["out"], r["qkv"]) == (out.data_ptr(), qkv.data_ptr()) and r["workspace"] != 0
    host_binding.attention_into(out, qkv, weight, bias, 1, 1, 3, 4, 0.0, 4)
    assert host_binding._last_launch()["with_state"] is False
    q32, w32, b32 = _inputs(torch.float32, torch.float32, torch.float32, c=64)
    assert host_binding.state_size(q32, w32, b32, 1, 1, 3, 4, 0.0) == 0
    host_binding.attention_with_state(torch.empty(2, 5, 6, 64), q32, w32, b32, 1, 1, 3, 4, 0.0,
                                      torch.zeros(0, dtype=torch.uint8), 3)
    r = host_binding._last_launch()
    assert (r["with_state"], r["state"], r["state_bytes"], r["path"]) == (True, 0, 0, 3)


@pytest.mark.parametrize("state, message", [
    (torch.zeros(263, dtype=torch.uint8), r"state has 263 bytes but these inputs need 264 \(state_size\)"),
    (torch.zeros(66, dtype=torch.int32), r"state must be a contiguous 1-D uint8 tensor, got Int"),
    (torch.zeros(2, 264, dtype=torch.uint8)[:, 0], r"state must be a contiguous 1-D uint8 tensor"),
    (torch.zeros(265, dtype=torch.uint8)[1:], r"state must be 4-byte aligned"),
])
def test_host_binding_refuses_a_state_it_cannot_use(host_binding, state, message):
    qkv, weight, bias = _half_inputs(c=64)
    out = torch.empty(2, 5, 6, 64, dtype=torch.float16)
    calls = host_binding._last_launch()["calls"]
    with pytest.raises(RuntimeError, match=message):
        host_binding.attention_with_state(out, qkv, weight, bias, 1, 1, 3, 4, 0.0, state, 4)
    assert host_binding._last_launch()["calls"] == calls  # nothing launched


def test_host_binding_refuses_a_state_inside_an_input(host_binding):
    """The kernels write the state (counters, keys) while they read qkv: a state inside qkv is refused."""
    qkv, weight, bias = _half_inputs(c=64)
    state = qkv.view(-1).view(torch.uint8)[:264]
    calls = host_binding._last_launch()["calls"]
    with pytest.raises(RuntimeError, match="state shares memory with qkv .*pass a separate state tensor"):
        host_binding.attention_with_state(torch.empty(2, 5, 6, 64, dtype=torch.float16), qkv, weight, bias, 1, 1, 3,
                                          4, 0.0, state, 4)
    assert host_binding._last_launch()["calls"] == calls


@pytest.mark.parametrize("args, message", [
    (dict(weight_dtype=torch.bfloat16, bias_dtype=torch.bfloat16),
     r"lepe_weight has dtype BFloat16 but qkv has Half; the CUDA kernels take LePE parameters of qkv's dtype or "
     r"float32 \(convert lepe_weight with .float\(\)\)"),
    (dict(weight_dtype=torch.float32, bias_dtype=torch.float16),
     r"lepe_weight has dtype Float but lepe_bias has Half; pass both in one dtype"),
    (dict(weight_dtype=torch.float64, bias_dtype=None), r"lepe_weight has dtype Double but qkv has Half"),
    (dict(qkv_dtype=torch.float64), r"qkv dtype Double is not supported by the CUDA kernels.*eager reference"),
])
def test_host_binding_refuses_dtypes_it_cannot_take(host_binding, args, message):
    qkv, weight, bias = _half_inputs(**args)
    calls = host_binding._last_launch()["calls"]
    with pytest.raises(RuntimeError, match=message):
        host_binding.attention(qkv, weight, bias, 1, 1, 3, 4, 0.0, 0)
    assert host_binding._last_launch()["calls"] == calls


def test_host_binding_refuses_bad_devices_paths_and_shapes(host_binding):
    qkv, weight, bias = _half_inputs()
    cases = [
        ((qkv.to("meta"), weight, bias, 1, 1, 3, 4, 0.0, 0), r"qkv is on meta; the CUDA kernels need a"),
        ((qkv, weight.to("meta"), bias, 1, 1, 3, 4, 0.0, 0), r"lepe_weight is on meta but qkv is on cpu"),
        ((qkv, weight, bias, 1, 1, 3, 4, 0.0, 5), r"path=5 must be -1 \(default\).* or 4 \(fused\)"),
        ((qkv, None, bias, 1, 1, 3, 4, 0.0, 0), r"lepe_bias is given without lepe_weight"),
        ((qkv, weight[:8], bias, 1, 1, 3, 4, 0.0, 0), r"lepe_weight has shape \[8, 1, 3, 3\]; it must be \[C, 1, 3, 3\]"),
        ((qkv[..., :47], None, None, 1, 1, 3, 4, 0.0, 0), r"47 channels, which is not divisible by 3"),
        ((qkv, weight, bias, 1, 2, 3, 4, 0.0, 0), r"divisible"),  # C = 16, 3 heads: validateParams' message
        ((qkv, weight, bias, -1, 2, 3, 4, 0.0, 0), r"global_heads=-1 must be in \[0, 2147483647\]"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            host_binding.attention(*args)


def test_host_binding_reports_a_failed_launch(host_binding):
    qkv, weight, bias = _half_inputs()
    host_binding._set_launch_result(1)
    try:
        with pytest.raises(RuntimeError, match=r"CUDA kernel launch failed: cudaErrorInvalidValue \(invalid argument\) "
                                               r"for qkv \[2, 5, 6, 48\] Half"):
            host_binding.attention(qkv, weight, bias, 1, 1, 3, 4, 0.0, 0)
    finally:
        host_binding._set_launch_result(0)


def test_host_binding_empty_problem_launches_nothing(host_binding):
    calls = host_binding._last_launch()["calls"]
    out = host_binding.attention(torch.randn(0, 5, 6, 48).half(), None, None, 1, 1, 3, 4, 0.0, 0)
    assert out.shape == (0, 5, 6, 16) and host_binding._last_launch()["calls"] == calls


def test_build_ext_force_keeps_the_cache_where_it_cannot_rebuild(tmp_path, monkeypatch, capsys):
    """`build-ext --force` on a CPU-only PyTorch: refused (exit 3) before the cached build is deleted."""
    if torch.version.cuda is not None:
        pytest.skip("needs a CPU-only PyTorch")
    from elfatt_deploy.cli import main
    from elfatt_deploy.op import cuda_backend

    cached = tmp_path / "elfatt_cuda_ext"
    cached.mkdir()
    (cached / "build.ninja").write_text("x")
    monkeypatch.setattr(cuda_backend, "cached_build_dir", lambda: cached)
    assert main(["build-ext", "--force"]) == 3
    assert "CPU-only build" in capsys.readouterr().err
    assert (cached / "build.ninja").is_file()
