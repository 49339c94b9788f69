"""build_engine against a strict stand-in for the `tensorrt` module (no GPU, no TensorRT needed).

The stand-in follows the pybind definitions of TensorRT's Python API (python/src/infer/pyCore.cpp,
pyGraph.cpp, pyPlugin.cpp, python/src/parsers/pyOnnx.cpp of 10.3 / 10.8 / 10.16 / 11.1): the same
names and keyword names, an IProgressMonitor trampoline that must be initialised with
``trt.IProgressMonitor.__init__(self)``, IHostMemory as a buffer, network layer iteration
(``num_layers`` / ``get_layer`` / ``LayerType.PLUGIN_V3``), the registry's ``all_creators``, and
per-version differences (ENABLE_PLUGIN_OVERRIDE from 10.15 on, STRONGLY_TYPED deprecated and
ignored in 11, get_plugin_creator gone in 11). test_fake_trt_names_exist_in_the_real_bindings checks
every name against those sources where the TensorRT mirror is present. The stand-in parser picks a
plugin or the local function for an elfatt node by the rules of each parser version
(docs/plugin.md, "TensorRT's parser"), so the builder's guards are tested against the behaviour they guard against.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import onnx

from test_engine_onnx_fixture import elfatt_model, save
from elfatt_deploy.engine import builder as builder_mod
from elfatt_deploy.engine import onnx_prep, trt_api
from elfatt_deploy.engine.builder import BuildOptions, EngineBuildError, build_engine
from elfatt_deploy.engine.engine_file import load_engine, sha256_bytes
from elfatt_deploy.errors import InputError


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
            self._flags = {"TF32"}  # as in TensorRT: a new builder config allows TF32

        def set_memory_pool_limit(self, pool, pool_size):
            calls.append(("pool", pool, pool_size))

        def set_flag(self, flag):
            calls.append(("config_flag", flag.name, True))
            self._flags.add(flag.name)

        def clear_flag(self, flag):
            calls.append(("config_flag", flag.name, False))
            self._flags.discard(flag.name)

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

    class DataType:
        FLOAT, HALF, BF16, INT32 = (_Enum(n, i) for i, n in enumerate(("FLOAT", "HALF", "BF16", "INT32")))

    class LayerType:
        SHUFFLE, MATRIX_MULTIPLY, PLUGIN, PLUGIN_V2, PLUGIN_V3 = (_Enum(n, i) for i, n in enumerate(
            ("SHUFFLE", "MATRIX_MULTIPLY", "PLUGIN", "PLUGIN_V2", "PLUGIN_V3")))

    class ITensor:
        def __init__(self, name, dtype, shape):
            self.name, self.dtype, self.shape = name, dtype, tuple(shape)

    class ILayer:
        def __init__(self, name, type):  # noqa: A002 - the pybind property name
            self.name, self.type = name, type

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self._layers, self._inputs, self._outputs = [], [], []

        @property
        def num_layers(self):
            return len(self._layers)

        def get_layer(self, index):
            return self._layers[index]

        @property
        def num_inputs(self):
            return len(self._inputs)

        def get_input(self, index):
            return self._inputs[index]

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_output(self, index):
            return self._outputs[index]

    class IPluginCreatorV3One:
        def __init__(self, name, plugin_version="1", plugin_namespace=""):
            self.name, self.plugin_version, self.plugin_namespace = name, plugin_version, plugin_namespace

    class IPluginRegistry:
        def __init__(self):
            self._creators = []

        @property
        def all_creators(self):
            return list(self._creators)

        def register_creator(self, creator, plugin_namespace=""):
            self._creators.append(creator)
            return True

        def get_creator(self, type, version, plugin_namespace=""):  # noqa: A002
            raise AssertionError("the builder looks creators up by scanning all_creators")

        def _registered(self, name, version, namespace):
            return any((c.name, c.plugin_version, c.plugin_namespace) == (name, version, namespace)
                       for c in self._creators)

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
            calls.append(("built_with_flags", sorted(config._flags)))
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

    registry = IPluginRegistry()
    dtypes = {onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF}

    class OnnxParser:
        _fail = False

        def __init__(self, network, logger):
            self.network = network
            self.flags = 0

        def set_flag(self, flag):
            calls.append(("set_flag", flag.name))
            self.flags |= 1 << int(flag)

        def _imports_as_plugin(self, node, functions):
            """Which importer the real parser of this version picks for a custom-domain node (plugin.md)."""
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            registered = registry._registered(node.op_type, attrs.get("plugin_version", b"1").decode(),
                                             attrs.get("plugin_namespace", b"").decode())
            has_function = (node.domain, node.op_type) in functions
            if (major, minor) >= (10, 15):
                override = self.flags & (1 << 3) or "plugin_namespace" in attrs
                if override and registered:
                    return True
                return False if has_function else registered
            if (major, minor) >= (10, 7):
                return registered
            return False if has_function else registered

        def parse(self, model, path=None):
            assert isinstance(memoryview(model), memoryview) and (path is None or isinstance(path, str))
            if OnnxParser._fail:
                return False
            proto = onnx.load_from_string(bytes(model))
            functions = {(f.domain, f.name) for f in proto.functions}
            net = self.network
            for value in proto.graph.input:
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
                net._inputs.append(ITensor(value.name, dtypes[value.type.tensor_type.elem_type], dims))
            for node in proto.graph.node:
                if node.domain in ("", "ai.onnx"):
                    net._layers.append(ILayer(node.name, LayerType.SHUFFLE))
                elif self._imports_as_plugin(node, functions):
                    net._layers.append(ILayer(node.name, LayerType.PLUGIN_V3))
                elif (node.domain, node.op_type) in functions:
                    net._layers.append(ILayer(f"{node.name}/body", LayerType.MATRIX_MULTIPLY))
                else:
                    OnnxParser._fail = True  # UNSUPPORTED_NODE: no plugin, no function
                    return False
            for value in proto.graph.output:
                net._outputs.append(ITensor(value.name, DataType.FLOAT, [-1, -1, -1, 1]))
            return True

        @property
        def num_errors(self):
            return 1 if OnnxParser._fail else 0

        def get_error(self, index):
            return ParserError()

    flags_ns = types.SimpleNamespace()
    if (major, minor) >= (10, 9):
        flags_ns.PREFER_AOT_PYTHON_PLUGINS = _Enum("PREFER_AOT_PYTHON_PLUGINS", 1)
    if major < 11:
        flags_ns.STRONGLY_TYPED = _Enum("STRONGLY_TYPED", 5 if major == 10 else 0)  # 10.x: bit 5
    parser_flags = types.SimpleNamespace(NATIVE_INSTANCENORM=_Enum("NATIVE_INSTANCENORM", 0))
    if (major, minor) >= (10, 15):
        parser_flags.ENABLE_PLUGIN_OVERRIDE = _Enum("ENABLE_PLUGIN_OVERRIDE", 3)

    trt.Logger, trt.IProgressMonitor, trt.Builder, trt.OnnxParser = Logger, IProgressMonitor, Builder, OnnxParser
    trt.NetworkDefinitionCreationFlag, trt.OnnxParserFlag = flags_ns, parser_flags
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=_Enum("WORKSPACE", 0))
    trt.BuilderFlag = types.SimpleNamespace(TF32=_Enum("TF32", 6))  # kTF32 = 6 on 10.3-11.1
    trt.get_plugin_registry = lambda: registry
    trt.IHostMemory, trt.DataType, trt.LayerType, trt.IBuilderConfig = IHostMemory, DataType, LayerType, Config
    trt.IPluginRegistry, trt.IPluginCreatorV3One, trt.INetworkDefinition = IPluginRegistry, IPluginCreatorV3One, Network
    trt.ITensor, trt.ILayer = ITensor, ILayer
    return trt


@pytest.fixture
def fake_build(monkeypatch, tmp_path):
    def run(version, *, use_plugin=False, timing_cache=False, workspace=None, fail_parse=False, progress=True,
            plugin_loaded=False, register_on_load=True, onnx_path=None, tf32_flag=True, **option_overrides):
        calls: list = []
        trt = make_fake_trt(version, calls)
        if not tf32_flag:  # a TensorRT without BuilderFlag.TF32
            del trt.BuilderFlag.TF32
        trt.OnnxParser._fail = fail_parse
        registry = trt.get_plugin_registry()
        if plugin_loaded:  # an earlier build in this process loaded the plugin
            registry.register_creator(trt.IPluginCreatorV3One("ElfattAttention"))
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(trt_api, "_LOGGER", None)
        monkeypatch.setattr(builder_mod, "gpu_info", lambda: {"name": "Orin", "compute_capability": "8.7"})
        monkeypatch.setattr(builder_mod, "jetson_release", lambda: None)
        lib = tmp_path / "libelfatt_trt_plugin.so"
        lib.write_bytes(b"\x7fELF")

        def load_first_plugin(candidates, registry):
            calls.append(("load_first_plugin", [str(c) for c in candidates]))
            if register_on_load and not registry._registered("ElfattAttention", "1", ""):
                registry.register_creator(trt.IPluginCreatorV3One("ElfattAttention"))
            return {"path": str(candidates[0]), "how": "ctypes.CDLL (static registration)", "version": "1",
                    "sha256": "ab" * 32, "tensorrt_major": int(version.split(".")[0])}

        monkeypatch.setattr(builder_mod, "load_first_plugin", load_first_plugin)
        onnx_path = onnx_path or save(elfatt_model(dims=(1, 3, 32, 32)), tmp_path / "m.onnx")
        options = BuildOptions(onnx_path=Path(onnx_path), output=tmp_path / "m.engine", use_plugin=use_plugin,
                               plugin=str(lib) if use_plugin else None, workspace_mb=workspace,
                               timing_cache=tmp_path / "cache.bin" if timing_cache else None, progress=progress,
                               **option_overrides)
        meta = build_engine(options, log=lambda *a: None)
        return meta, calls, options
    return run


VERSIONS = ["10.3.0", "10.8.0.43", "10.16.0", "11.1.0"]


@pytest.mark.parametrize("version,flags", [("10.3.0", 1 << 5), ("10.8.0.43", 1 << 5), ("10.16.0", 1 << 5), ("11.1.0", 0)])
def test_network_flags_per_version(fake_build, version, flags):
    meta, calls, options = fake_build(version)
    assert ("create_network", flags) in calls
    engine = load_engine(options.output)
    assert engine.source == "sidecar" and engine.plan == b"PLAN"  # the file is exactly the serialized plan
    got = engine.metadata
    assert got["tensorrt_version"] == version and got["strongly_typed"] and got["plan"]["sha256"] == sha256_bytes(b"PLAN")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("use_plugin", [True, False], ids=["plugin", "no-plugin"])
def test_plugin_override_flag_never_set(fake_build, version, use_plugin):
    _, calls, _ = fake_build(version, use_plugin=use_plugin)
    assert not [c for c in calls if c[0] == "set_flag"]


@pytest.mark.parametrize("version", VERSIONS)
def test_no_plugin_build_is_plugin_free_in_a_process_with_the_plugin(fake_build, version):
    """The review's bug: a --no-plugin build after the plugin was loaded in the same process."""
    meta, _, options = fake_build(version, use_plugin=False, plugin_loaded=True)
    assert meta["plugin"] == {"used": False}
    assert load_engine(options.output).metadata["plugin"] == {"used": False}


@pytest.mark.parametrize("version,parser_takes_plugin", [("10.3.0", False), ("10.8.0.43", True), ("10.16.0", True),
                                                         ("11.1.0", True)])
def test_plugin_layer_count_catches_a_parser_that_takes_the_plugin(fake_build, monkeypatch, version, parser_takes_plugin):
    """Without the no-plugin preparation the stand-in parser (like the real one from 10.7 on) imports the node as a
    plugin; the layer count turns that into a clear build error instead of an engine that needs the plugin."""
    monkeypatch.setattr(builder_mod, "prepare_function_body_build", lambda model: 0)
    if not parser_takes_plugin:
        fake_build(version, use_plugin=False, plugin_loaded=True)
        return
    with pytest.raises(EngineBuildError, match=r"--no-plugin build .* contains 1 plugin layer\(s\) \('blocks.0.attn'\)"):
        fake_build(version, use_plugin=False, plugin_loaded=True)


def test_plugin_layer_count_catches_nodes_imported_from_the_function(fake_build, monkeypatch):
    monkeypatch.setattr(builder_mod, "remove_elfatt_functions", lambda model: 0)  # the function stays: 10.3 takes it
    with pytest.raises(EngineBuildError, match=r"0 plugin layer\(s\) \(none\), but the model has 1 ElfattAttention"):
        fake_build("10.3.0", use_plugin=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_plugin_build_has_one_plugin_layer_per_node(fake_build, version):
    meta, calls, _ = fake_build(version, use_plugin=True)
    assert meta["plugin"]["used"] and meta["plugin"]["library_sha256"] == "ab" * 32
    assert [c for c in calls if c[0] == "load_first_plugin"]


def test_sidecar_records_io_sources_and_extras(fake_build, tmp_path):
    meta, _, options = fake_build("10.16.0", use_plugin=True, precision="int8-qdq",
                                  extra_metadata={"calibration": {"images": 64}})
    side = load_engine(options.output).metadata
    assert side == meta | {"format": side["format"], "format_version": 1, "plan": side["plan"]}
    assert side["io"] == [{"name": "images", "mode": "input", "dtype": "FLOAT", "shape": [1, 3, 32, 32]},
                          {"name": "out", "mode": "output", "dtype": "FLOAT", "shape": [-1, -1, -1, 1]}]
    from elfatt_deploy.engine.engine_file import sha256_file
    assert side["source_onnx"] == {"path": str(Path(options.onnx_path).resolve()),
                                   "sha256": sha256_file(options.onnx_path)}
    assert side["precision"] == "int8-qdq" and side["calibration"] == {"images": 64}
    with pytest.raises(ValueError, match="may not replace precision"):
        fake_build("10.16.0", extra_metadata={"precision": "fp8"})


def test_function_body_preparation_strips_and_renames():
    model = elfatt_model()
    assert onnx_prep.prepare_function_body_build(model) == 1
    node = model.graph.node[1]
    assert node.op_type == onnx_prep.FUNCTION_BODY_OP and {a.name for a in node.attribute}.isdisjoint(
        {"plugin_version", "plugin_namespace"})
    assert [f.name for f in model.functions] == [onnx_prep.FUNCTION_BODY_OP]
    onnx.checker.check_model(model)
    import onnxruntime as ort
    import numpy as np
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(sess.run(None, {"images": x})[0], x.transpose(0, 2, 3, 1))


def test_timing_cache_workspace_and_progress(fake_build, tmp_path):
    meta, calls, options = fake_build("10.3.0", timing_cache=True, workspace=1024)
    assert ("pool", 0, 1024 << 20) in calls
    assert (tmp_path / "cache.bin").read_bytes() == b"cache:"
    fake_build("10.3.0", timing_cache=True)  # reads the cache written by the first build
    assert (tmp_path / "cache.bin").read_bytes() == b"cache:cache:"
    assert ("set_shape", "images", (1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 32, 32)) in calls


def _writing_into(directory: Path, tmp_path: Path, onnx_path: Path, where: str) -> BuildOptions:
    """Build options whose engine (where="engine") or timing cache goes into ``directory``."""
    if where == "engine":
        return BuildOptions(onnx_path=onnx_path, output=directory / "m.engine", use_plugin=False)
    return BuildOptions(onnx_path=onnx_path, output=tmp_path / "m.engine", use_plugin=False,
                        timing_cache=directory / "cache.bin")


@pytest.mark.parametrize("where", ["engine", "timing-cache"])
@pytest.mark.parametrize("directory", ["read-only", "missing", "a-file"])
def test_unwritable_outputs_refused_before_building(tmp_path, where, directory):
    """An engine or timing-cache path that cannot be written is refused by prepare_build, i.e. before
    TensorRT is imported or builds anything (minutes on a Jetson), and nothing is written."""
    onnx_path = save(elfatt_model(dims=(1, 3, 32, 32)), tmp_path / "m.onnx")
    builder_mod.prepare_build(_writing_into(tmp_path, tmp_path, onnx_path, where))  # the control: writable
    target = tmp_path / directory
    if directory == "read-only":
        target.mkdir()
        target.chmod(0o500)
        if os.access(target, os.W_OK):  # root writes anywhere: /proc takes no new file even for root
            target = Path("/proc")
            if not target.is_dir():
                pytest.skip("no unwritable directory to try (root, no /proc)")
        error, match = InputError, "not writable"
    elif directory == "missing":
        error, match = FileNotFoundError, "does not exist"
    else:
        target.write_text("x")  # a file where the directory should be
        error, match = (InputError, FileNotFoundError, NotADirectoryError), "a-file"
    with pytest.raises(error, match=match):
        builder_mod.prepare_build(_writing_into(target, tmp_path, onnx_path, where))
    assert not (tmp_path / "m.engine").exists()
    if target.is_dir():
        assert not (target / "m.engine").exists() and not (target / "cache.bin").exists()


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


MIRROR = Path(os.environ.get("TENSORRT_MIRROR", "/work/.mirror/NVIDIA+TensorRT/repo"))
MIRROR_TAGS = {"10.3.0": "v10.3.0", "10.8.0.43": "v10.8.0", "10.16.0": "v10.16", "11.1.0": "v11.1"}


def _binding_names(tag: str) -> set[str]:
    """Every name the pybind sources of one TensorRT release define (methods, properties, enum values, classes)."""
    files = subprocess.run(["git", f"--git-dir={MIRROR}", "ls-tree", "-r", "--name-only", tag, "python/src"],
                           capture_output=True, text=True, check=True).stdout.split()
    names: set[str] = set()
    for name in files:
        if name.endswith(".cpp"):
            text = subprocess.run(["git", f"--git-dir={MIRROR}", "show", f"{tag}:{name}"], capture_output=True,
                                  text=True, check=True).stdout
            names |= set(re.findall(r'\.(?:def|def_property|def_property_readonly|def_readwrite|def_readonly|value|'
                                    r'def_static)\(\s*"(\w+)"', text))
            names |= set(re.findall(r'py::(?:class_|enum_)<[^;]*?>\(\s*\w+,\s*"(\w+)"', text, flags=re.S))
            names |= set(re.findall(r'm\.(?:def|attr)\(\s*"(\w+)"', text))
    return names


def _fake_names(trt) -> dict[str, set[str]]:
    """Public names of the stand-in: module level, and per class (attributes defined in the class body).
    Each must be a name the real bindings define (not necessarily on the same class: a looser check, but
    one that catches invented or misspelt methods and version-specific names)."""
    found = {"<module>": {n for n in vars(trt) if not n.startswith("_")}}
    for name, value in vars(trt).items():
        if isinstance(value, type):
            found[name] = {k for k in vars(value) if not k.startswith("_")}
        elif isinstance(value, types.SimpleNamespace):
            found[name] = set(vars(value))
    return found


@pytest.mark.parametrize("version", sorted(MIRROR_TAGS))
def test_fake_trt_names_exist_in_the_real_bindings(version):
    if not (MIRROR / "HEAD").is_file():
        pytest.skip(f"no TensorRT source mirror at {MIRROR} (set TENSORRT_MIRROR to a bare clone of NVIDIA/TensorRT)")
    real = _binding_names(MIRROR_TAGS[version])
    real |= {"__version__"}
    missing = {}
    for where, names in _fake_names(make_fake_trt(version, [])).items():
        unknown = sorted(n for n in names if n not in real)
        if unknown:
            missing[where] = unknown
    assert not missing, f"names the stand-in defines that TensorRT {version}'s bindings do not: {missing}"


@pytest.mark.parametrize("version", VERSIONS)
def test_tf32_is_cleared_unless_asked_for_and_the_sidecar_says_which(fake_build, version):
    """TensorRT sets BuilderFlag.TF32 by default; a default build clears it (strict FP32, within validate's fp32
    limit), --tf32 sets it; the sidecar and the rebuild command record the choice."""
    meta, calls, options = fake_build(version)
    assert [c for c in calls if c[0] == "config_flag"] == [("config_flag", "TF32", False)]
    assert ("built_with_flags", []) in calls  # TensorRT's default (TF32 on) cleared before the build
    assert meta["tf32"] is False and load_engine(options.output).metadata["tf32"] is False
    assert "--tf32" not in meta["build_command"]
    meta, calls, options = fake_build(version, tf32=True)
    assert [c for c in calls if c[0] == "config_flag"] == [("config_flag", "TF32", True)]
    assert ("built_with_flags", ["TF32"]) in calls
    assert meta["tf32"] is True and load_engine(options.output).metadata["tf32"] is True
    assert meta["build_command"][-1] == "--tf32"


def test_tf32_without_the_flag_in_tensorrt(fake_build):
    """No BuilderFlag.TF32: nothing to clear (a default build goes on), and --tf32 is a clear error."""
    meta, calls, _ = fake_build("10.3.0", tf32_flag=False)
    assert meta["tf32"] is False and not [c for c in calls if c[0] == "config_flag"]
    with pytest.raises(EngineBuildError, match="--tf32: TensorRT 10.3.0 has no BuilderFlag.TF32"):
        fake_build("10.3.0", tf32_flag=False, tf32=True)


def test_build_cli_passes_tf32():
    from elfatt_deploy.cli import build_parser
    from elfatt_deploy.cli.commands.build import options_from_args

    assert options_from_args(build_parser().parse_args(["build", "m.onnx", "-o", "m.engine", "--tf32"])).tf32 is True
    assert options_from_args(build_parser().parse_args(["build", "m.onnx", "-o", "m.engine"])).tf32 is False


def test_the_engine_record_reads_what_the_builder_wrote(fake_build):
    """validate's engine record (precision, TF32, the source ONNX's hash) read back from a sidecar the builder
    wrote, not from a hand-made one: the keys must be the builder's."""
    from elfatt_deploy.engine.engine_file import EngineRecord, engine_record, sha256_file

    meta, _, options = fake_build("10.3.0")
    record = engine_record(options.output)
    assert record == EngineRecord(False, None, meta["precision"], sha256_file(options.onnx_path),
                                  str(options.onnx_path.resolve()))
    assert record.precision == "fp32" and record.source_onnx_sha256 == meta["source_onnx"]["sha256"]
