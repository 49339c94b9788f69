"""Finding and loading the plugin libraries, without TensorRT: a stand-in registry and tiny real ELF libraries."""

import ctypes
import os
import shutil
import subprocess

import pytest

from elfatt_deploy.engine.plugin import (
    PLUGIN_LIBRARY_NAME,
    STYLE_GET_CREATORS,
    STYLE_STATIC,
    VC_LIBRARY_NAME,
    PluginLoadError,
    find_creator,
    find_plugin_libraries,
    find_plugin_library,
    library_info,
    load_first_plugin,
    load_plugin,
)


def _lib(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF fake")
    return path


def test_explicit_path(tmp_path):
    lib = _lib(tmp_path / PLUGIN_LIBRARY_NAME)
    assert find_plugin_library(str(lib)) == lib
    assert find_plugin_library(str(tmp_path)) == lib  # a directory holding it
    vc_only = _lib(tmp_path / "vc" / VC_LIBRARY_NAME)
    assert find_plugin_library(str(vc_only.parent)) == vc_only  # ... or only the other library
    with pytest.raises(FileNotFoundError, match="missing.so does not exist.*cmake"):
        find_plugin_library(str(tmp_path / "missing.so"))


def test_search_order(tmp_path):
    env_lib = _lib(tmp_path / "env" / PLUGIN_LIBRARY_NAME)
    repo = tmp_path / "repo"
    repo_lib = _lib(repo / "plugins" / "build" / "tensorrt" / PLUGIN_LIBRARY_NAME)
    sys_lib = _lib(tmp_path / "sys" / PLUGIN_LIBRARY_NAME)
    kw = dict(root=repo, system_dirs=[tmp_path / "sys"])
    assert find_plugin_libraries(env={"ELFATT_PLUGIN_PATH": str(env_lib.parent)}, **kw) == [env_lib, repo_lib, sys_lib]
    assert find_plugin_library(env={}, **kw) == repo_lib
    repo_lib.unlink()
    assert find_plugin_library(env={}, **kw) == sys_lib
    vc = _lib(repo / "plugins" / "build" / "tensorrt" / VC_LIBRARY_NAME)
    assert find_plugin_library(env={}, name=VC_LIBRARY_NAME, **kw) == vc


def test_not_found_lists_every_path_tried(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        find_plugin_library(env={"ELFATT_PLUGIN_PATH": str(tmp_path / "a.so")}, root=tmp_path / "repo",
                            system_dirs=[tmp_path / "lib1", tmp_path / "lib2"])
    text = str(info.value)
    for expected in (str(tmp_path / "a.so"), str(tmp_path / "repo" / "plugins" / "build"),
                     str(tmp_path / "lib1" / PLUGIN_LIBRARY_NAME), str(tmp_path / "lib2" / PLUGIN_LIBRARY_NAME),
                     "--no-plugin", "ELFATT_PLUGIN_PATH"):
        assert expected in text


# ---- real (tiny) ELF libraries -----------------------------------------------------------------------------------

CC = shutil.which("cc") or shutil.which("gcc")

STATIC_SRC = """
int elfatt_fake_registered = 0;
__attribute__((constructor)) static void registrar(void) { elfatt_fake_registered = 1; }
"""
VC_SRC = """
void* getCreators(int* n) { *n = 0; return 0; }
void setLoggerFinder(void* finder) { (void) finder; }
"""


def _cc(tmp_path, name, source, *, nvinfer_major=None):
    if CC is None:
        pytest.skip("no C compiler (cc/gcc) to build the test libraries")
    out = tmp_path / name
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_name(out.name + ".c")
    src.write_text(source)
    cmd = [CC, "-shared", "-fPIC", "-Wl,-Bsymbolic", str(src), "-o", str(out)]  # each copy keeps its own flag
    if nvinfer_major is not None:  # a DT_NEEDED libnvinfer.so.<major>, as a real build has
        stub_dir = tmp_path / f"nvinfer{nvinfer_major}"
        stub_dir.mkdir(exist_ok=True)
        stub = stub_dir / f"libnvinfer.so.{nvinfer_major}"
        (stub_dir / "e.c").write_text("int nvinfer_stub;\n")
        subprocess.run([CC, "-shared", "-fPIC", str(stub_dir / "e.c"), f"-Wl,-soname,{stub.name}", "-o", str(stub)],
                       check=True)
        cmd += ["-Wl,--no-as-needed", f"-L{stub_dir}", f"-l:{stub.name}", f"-Wl,-rpath,{stub_dir}"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


class Creator:
    name, plugin_version, plugin_namespace = "ElfattAttention", "1", ""


class StandInRegistry:
    """TensorRT's registry as the loader sees it: all_creators (scanned), load_library (getCreators libraries);
    get_creator / get_plugin_creator must not be used (deprecated, and a miss logs an error)."""

    def __init__(self, static_lib=None):
        self.static_lib, self.loaded = static_lib, []

    @property
    def all_creators(self):
        registered = bool(self.loaded)
        if self.static_lib is not None:  # the static initializer of the test library ran (if it is loaded at all)
            try:
                lib = ctypes.CDLL(str(self.static_lib), mode=os.RTLD_NOLOAD)
            except OSError:
                lib = None
            registered |= lib is not None and ctypes.c_int.in_dll(lib, "elfatt_fake_registered").value == 1
        return [Creator()] if registered else []

    def load_library(self, path):
        self.loaded.append(path)
        return object()

    def get_creator(self, *a):
        raise AssertionError("creators are found by scanning all_creators")

    get_plugin_creator = get_creator


def test_library_kind_from_exports_and_tensorrt_major(tmp_path):
    static = _cc(tmp_path, "s/" + PLUGIN_LIBRARY_NAME, STATIC_SRC, nvinfer_major=10)
    vc = _cc(tmp_path, "v/" + VC_LIBRARY_NAME, VC_SRC, nvinfer_major=11)
    a, b = library_info(static), library_info(vc)
    assert (a.style, a.tensorrt_major) == (STYLE_STATIC, 10)
    assert (b.style, b.tensorrt_major) == (STYLE_GET_CREATORS, 11) and {"getCreators", "setLoggerFinder"} <= set(b.exports)
    assert a.machine == b.machine and a.machine in ("x86_64", "aarch64")
    assert library_info(_lib(tmp_path / "x.so")).style is None


def test_each_library_loads_its_documented_way(tmp_path):
    static = _cc(tmp_path, "s/" + PLUGIN_LIBRARY_NAME, STATIC_SRC)
    registry = StandInRegistry(static_lib=static)
    got = load_plugin(static, registry=registry)
    assert got["how"] == "ctypes.CDLL (static registration)" and not registry.loaded and len(got["sha256"]) == 64
    assert load_plugin(static, registry=registry)["how"] == "already loaded"

    vc = _cc(tmp_path, "v/" + VC_LIBRARY_NAME, VC_SRC)
    registry = StandInRegistry()
    got = load_plugin(vc, registry=registry)
    assert got["how"] == "registry.load_library (getCreators)" and registry.loaded == [str(vc.resolve())]
    assert find_creator(registry) is not None


def test_load_never_silent_and_next_candidate(tmp_path):
    not_elf = _lib(tmp_path / "bad" / PLUGIN_LIBRARY_NAME)
    with pytest.raises(PluginLoadError, match="not a plugin library"):
        load_plugin(not_elf, registry=StandInRegistry())
    dud = _cc(tmp_path, "dud/" + PLUGIN_LIBRARY_NAME, "int nothing;\n")  # loads, registers nothing
    with pytest.raises(PluginLoadError, match="registry holds no creator 'ElfattAttention'"):
        load_plugin(dud, registry=StandInRegistry())
    good = _cc(tmp_path, "good/" + PLUGIN_LIBRARY_NAME, STATIC_SRC)
    got = load_first_plugin([not_elf, dud, good], registry=StandInRegistry(static_lib=good))
    assert got["path"] == str(good.resolve()) and len(got["skipped"]) == 2
    with pytest.raises(PluginLoadError) as info:
        load_first_plugin([not_elf, dud], registry=StandInRegistry())
    assert str(not_elf) in str(info.value) and str(dud) in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_plugin(tmp_path / "gone" / PLUGIN_LIBRARY_NAME, registry=StandInRegistry())


def test_build_folders_prefer_the_running_tensorrt_major(tmp_path):
    repo = tmp_path / "repo"
    for folder, major in (("build/trt10/tensorrt", 10), ("build/trt11/tensorrt", 11)):
        _cc(tmp_path, f"repo/plugins/{folder}/{PLUGIN_LIBRARY_NAME}", STATIC_SRC, nvinfer_major=major)
    kw = dict(env={}, root=repo, system_dirs=[])
    assert "trt11" in str(find_plugin_library(tensorrt_major=11, **kw))
    assert "trt10" in str(find_plugin_library(tensorrt_major=10, **kw))
    assert [p.parent.parent.name for p in find_plugin_libraries(tensorrt_major=11, **kw)] == ["trt11", "trt10"]


def test_find_trtexec_order(tmp_path):
    from elfatt_deploy.engine.tools import find_trtexec

    def tool(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
        return str(path)

    on_path, in_root = tool(tmp_path / "bin" / "trtexec"), tool(tmp_path / "trt" / "bin" / "trtexec")
    explicit = tool(tmp_path / "x" / "my-trtexec")
    assert find_trtexec({"TRTEXEC": explicit, "PATH": str(tmp_path / "bin")}) == explicit
    assert find_trtexec({"PATH": str(tmp_path / "bin"), "TENSORRT_ROOT": str(tmp_path / "trt")}) == on_path
    assert find_trtexec({"PATH": str(tmp_path / "none"), "TENSORRT_ROOT": str(tmp_path / "trt")}) == in_root
    assert find_trtexec({"TRTEXEC": str(tmp_path / "missing")}) is None


def test_library_kind_without_pyelftools(tmp_path, monkeypatch):
    import sys

    for name in ("elftools", "elftools.common.exceptions", "elftools.elf.dynamic", "elftools.elf.elffile",
                 "elftools.elf.sections"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    vc, static = library_info(_lib(tmp_path / VC_LIBRARY_NAME)), library_info(_lib(tmp_path / PLUGIN_LIBRARY_NAME))
    assert (vc.style, static.style) == (STYLE_GET_CREATORS, STYLE_STATIC) and "pyelftools" in vc.error
