"""build_engine against a strict stand-in for the `tensorrt` module (no GPU, no TensorRT needed).

The stand-in follows the pybind definitions of TensorRT's Python API (python/src/infer/pyCore.cpp,
python/src/parsers/pyOnnx.cpp of 10.3 / 10.16 / 11.1): the same names and keyword names, an
IProgressMonitor trampoline that must be initialised with ``trt.IProgressMonitor.__init__(self)``,
IHostMemory as a buffer, and per-version differences (ENABLE_PLUGIN_OVERRIDE from 10.14 on,
STRONGLY_TYPED deprecated and ignored in 11, get_plugin_creator gone in 11). A call the real API
would refuse raises here too.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from test_engine_onnx_fixture import elfatt_model, save
from elfatt_deploy.engine import builder as builder_mod
from elfatt_deploy.engine import trt_api
from elfatt_deploy.engine.builder import BuildOptions, EngineBuildError, build_engine
from elfatt_deploy.engine.engine_file import read_engine_file


class _Enum(int):
    """A pybind11 enum value: int-convertible, hashable, named."""

    def __new__(cls, name, value):
        obj = int.__new__(cls, value)
        obj.name = name
        return obj


def make_fake_trt(version: str, calls: list):
    major, minor = (int(p) for p in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (_Enum(n, i) for i, n in enumerate(
            ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")))

        def __init__(self, min_severity=None):
            self.min_severity = Logger.WARNING if min_severity is None else min_severity
            calls.append(("Logger", self))

    class IProgressMonitor:
        def __init__(self):
            self._trampoline_ready = True

    class IHostMemory(bytearray):
        """Like the real one: exposes the buffer protocol (memoryview works), no len/bytes API promised."""

    class TimingCache:
        def __init__(self, blob):
            self.blob = bytes(blob)

        def serialize(self):
            return IHostMemory(b"cache:" + self.blob)

    class Profile:
        def set_shape(self, input, min, opt, max):  # noqa: A002 - the pybind keyword names
            calls.append(("set_shape", input, tuple(min), tuple(opt), tuple(max)))

    class Config:
        def __init__(self):
            self._monitor = None
            self._cache = None

        def set_memory_pool_limit(self, pool, pool_size):
            calls.append(("pool", pool, pool_size))

        def add_optimization_profile(self, profile):
            assert isinstance(profile, Profile)
            return 0

        def create_timing_cache(self, serialized_timing_cache):
            return TimingCache(memoryview(serialized_timing_cache).tobytes())

        def set_timing_cache(self, cache, ignore_mismatch):
            assert isinstance(cache, TimingCache), "set_timing_cache takes an ITimingCache (not None)"
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

        @property
        def progress_monitor(self):
            return self._monitor

        @progress_monitor.setter
        def progress_monitor(self, monitor):
            if not getattr(monitor, "_trampoline_ready", False):
                raise TypeError("IProgressMonitor.__init__() must be called when overriding __init__")
            self._monitor = monitor

    class Network:
        def __init__(self, flags):
            self.flags = flags

    class Builder:
        def __init__(self, logger):
            assert isinstance(logger, Logger)
            calls.append(("Builder", logger))

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            mon = config.progress_monitor
            if mon is not None:
                mon.phase_start("Building", None, 2)
                mon.phase_start("Tactics", "Building", 3)
                assert mon.step_complete("Tactics", 0) is True
                mon.phase_finish("Tactics")
                mon.step_complete("Building", 0)
                mon.phase_finish("Building")
            return IHostMemory(b"PLAN")

    class ParserError:
        def __str__(self):
            return "In node 1 (blocks.0.attn): UNSUPPORTED_NODE: no importer"

        def node(self):
            return 1

        def node_name(self):
            return "blocks.0.attn"

        def node_operator(self):
            return "ElfattAttention"

        def local_function_stack(self):
            return []

    class OnnxParser:
        fail = False

        def __init__(self, network, logger):
            self.flags_set = []

        def set_flag(self, flag):
            calls.append(("set_flag", flag.name))

        def parse(self, model, path=None):
            assert isinstance(memoryview(model), memoryview) and (path is None or isinstance(path, str))
            return not OnnxParser.fail

        @property
        def num_errors(self):
            return 1 if OnnxParser.fail else 0

        def get_error(self, index):
            return ParserError()

    flags_ns = types.SimpleNamespace(PREFER_AOT_PYTHON_PLUGINS=_Enum("PREFER_AOT_PYTHON_PLUGINS", 1))
    if major < 11:
        flags_ns.STRONGLY_TYPED = _Enum("STRONGLY_TYPED", 5 if major == 10 else 0)  # 10.x: bit 5
    parser_flags = types.SimpleNamespace(NATIVE_INSTANCENORM=_Enum("NATIVE_INSTANCENORM", 0))
    if (major, minor) >= (10, 14):
        parser_flags.ENABLE_PLUGIN_OVERRIDE = _Enum("ENABLE_PLUGIN_OVERRIDE", 3)

    trt.Logger, trt.IProgressMonitor, trt.Builder, trt.OnnxParser = Logger, IProgressMonitor, Builder, OnnxParser
    trt.NetworkDefinitionCreationFlag, trt.OnnxParserFlag = flags_ns, parser_flags
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=_Enum("WORKSPACE", 0))
    trt.get_plugin_registry = lambda: "registry"
    trt.IHostMemory = IHostMemory
    return trt


@pytest.fixture
def fake_build(monkeypatch, tmp_path):
    def run(version, *, use_plugin=False, timing_cache=False, workspace=None, fail_parse=False, progress=True):
        calls: list = []
        trt = make_fake_trt(version, calls)
        trt.OnnxParser.fail = fail_parse
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(trt_api, "_LOGGER", None)
        monkeypatch.setattr(builder_mod, "gpu_info", lambda: {"name": "Orin", "compute_capability": "8.7"})
        monkeypatch.setattr(builder_mod, "jetson_release", lambda: None)
        lib = tmp_path / "libelfatt_trt_plugin.so"
        lib.write_bytes(b"\x7fELF")
        monkeypatch.setattr(builder_mod, "load_plugin",
                            lambda path, registry: {"path": str(path), "how": "registry.load_library", "version": "1"})
        onnx_path = save(elfatt_model(dims=(1, 3, 32, 32)), tmp_path / "m.onnx")
        options = BuildOptions(onnx_path=Path(onnx_path), output=tmp_path / "m.engine", use_plugin=use_plugin,
                               plugin=str(lib) if use_plugin else None, workspace_mb=workspace,
                               timing_cache=tmp_path / "cache.bin" if timing_cache else None, progress=progress)
        meta = build_engine(options, log=lambda *a: None)
        return meta, calls, options
    return run


@pytest.mark.parametrize("version,flags", [("10.3.0", 1 << 5), ("10.8.0.43", 1 << 5), ("10.16.0", 1 << 5), ("11.1.0", 0)])
def test_network_flags_per_version(fake_build, version, flags):
    meta, calls, options = fake_build(version)
    assert ("create_network", flags) in calls
    got, plan = read_engine_file(options.output)
    assert plan == b"PLAN" and got["tensorrt_version"] == version and got["strongly_typed"]


@pytest.mark.parametrize("version,expected", [("10.3.0", False), ("10.16.0", True), ("11.1.0", True)])
def test_plugin_override_flag_only_where_it_exists(fake_build, version, expected):
    _, calls, _ = fake_build(version, use_plugin=True)
    assert (("set_flag", "ENABLE_PLUGIN_OVERRIDE") in calls) == expected
    _, calls, _ = fake_build(version, use_plugin=False)
    assert ("set_flag", "ENABLE_PLUGIN_OVERRIDE") not in calls


def test_timing_cache_workspace_and_progress(fake_build, tmp_path):
    meta, calls, options = fake_build("10.3.0", timing_cache=True, workspace=1024)
    assert ("pool", 0, 1024 << 20) in calls
    assert (tmp_path / "cache.bin").read_bytes() == b"cache:"
    fake_build("10.3.0", timing_cache=True)  # reads the cache written by the first build
    assert (tmp_path / "cache.bin").read_bytes() == b"cache:cache:"
    assert ("set_shape", "images", (1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 32, 32)) in calls


def test_one_logger_per_process(fake_build):
    _, calls, _ = fake_build("10.8.0", progress=False)
    loggers = [c[1] for c in calls if c[0] == "Logger"]
    assert len(loggers) == 1
    trt = sys.modules["tensorrt"]
    assert trt_api.get_logger(trt) is loggers[0]
    assert trt_api.get_logger(trt, trt.Logger.VERBOSE).min_severity == trt.Logger.VERBOSE


def test_parser_errors_verbatim(fake_build):
    with pytest.raises(EngineBuildError, match=r"(?s)rejected .*In node 1 \(blocks.0.attn\).*\[operator ElfattAttention\]"):
        fake_build("10.3.0", fail_parse=True)


def test_strongly_typed_flags_helper():
    calls: list = []
    assert trt_api.strongly_typed_network_flags(make_fake_trt("10.3.0", calls)) == 1 << 5
    assert trt_api.strongly_typed_network_flags(make_fake_trt("11.1.0", calls)) == 0
    old = make_fake_trt("10.3.0", calls)
    del old.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    with pytest.raises(RuntimeError, match="needs TensorRT >= 10.3"):
        trt_api.strongly_typed_network_flags(old)
