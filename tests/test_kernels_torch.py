"""The PyTorch side of the CUDA kernels without a GPU: cuda_backend's error paths,
lazy registration, the build-ext command, a compile check of the binding against
the installed torch headers, and the plugins/ CMake configuration."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import pytest
import torch

from elfatt_deploy.op import cuda_backend

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
