"""OpenVINO runner: an exported ONNX file in OpenVINO Runtime, as a Polygraphy ``BaseRunner``.

Polygraphy has no OpenVINO backend, so this runner follows its ``OnnxrtRunner``:
``OpenVinoRunner(path, device="CPU")`` is activated (``with runner:``), reports
its input metadata, and ``infer({name: array})`` returns ``{output name: array}``,
so Polygraphy's ``Comparator`` runs it beside PyTorch and ONNX Runtime.

- **File forms.** OpenVINO's ONNX frontend ignores model-local functions, so it
  cannot read our default file (``elfatt::ElfattAttention`` nodes + function):
  the runner inlines the function in memory (``export/inline.py``) and says so
  on stderr; ``elfatt-deploy export --inline`` writes that form for files to ship.
  A plugin-only file (nodes, no function) is refused with what to export instead.
- **Precision.** OpenVINO lowers float32 models to bfloat16 on CPUs with bf16
  units (AVX512-BF16, AMX) and to float16 on GPUs unless told otherwise; that
  costs ~5e-3 relative L2 on our models. The runner sets
  ``INFERENCE_PRECISION_HINT`` to ``inference_precision`` (default ``f32``: the
  file's own arithmetic) where the device supports the hint.
- **Shapes.** OpenVINO runs dynamic models, but its CPU plugin runs a model
  compiled for one static shape 1.4-2x faster (ViT-T, 224 and 512), so by
  default each new input shape gets its own compiled model (the compile takes
  seconds; up to ``max_cached_shapes`` are kept). ``compile_per_shape=False``
  compiles the file once with its dynamic dims.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Optional

from polygraphy.backend.base import BaseRunner

from ..errors import InputError, MissingDependencyError, ToolkitError

#: Values of --inference-precision, as OpenVINO's INFERENCE_PRECISION_HINT spells them.
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")
#: Device families OpenVINO plugins provide, and its virtual devices (which take a device list after ':').
DEVICE_FAMILIES = ("CPU", "GPU", "NPU")
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
DEFAULT_DEVICE = "CPU"
INSTALL_HINT = 'python3 -m pip install "elfatt-deploy[openvino]"  (or: python3 -m pip install openvino)'


def import_openvino():
    """The ``openvino`` module; MissingDependencyError (extra "openvino") with the pip command when absent."""
    try:
        import openvino  # noqa: PLC0415
    except ImportError as exc:
        raise MissingDependencyError(
            f"the openvino backend needs OpenVINO Runtime, which is not installed here ({exc}); install it with "
            f"{INSTALL_HINT}", extra="openvino") from None
    return openvino


def cpu_inference_precision(requested: Optional[str], capabilities=None) -> Optional[str]:
    """The precision OpenVINO's CPU plugin computes in when asked for ``requested`` (INFERENCE_PRECISION_HINT):
    it falls back from f16 to bf16 on CPUs with bf16 but no f16 arithmetic (seen: AMD EPYC with avx512_bf16,
    OpenVINO 2026.4.1, where the compiled model reports bfloat16), and from either to f32 on CPUs with
    neither. ``capabilities``: the CPU's OPTIMIZATION_CAPABILITIES (read from OpenVINO when None)."""
    if requested in (None, "f32"):
        return requested
    if capabilities is None:
        capabilities = import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    have = {str(c).upper() for c in capabilities}
    wanted = {"f16": "FP16", "bf16": "BF16"}[requested]
    if wanted in have:
        return requested
    return "bf16" if "BF16" in have else "f32"


def resolve_device(core, device: Optional[str]) -> str:
    """The OpenVINO device name for ``device`` (case-insensitive, default CPU).

    InputError for a name that is no OpenVINO device; MissingDependencyError for a device
    OpenVINO knows but does not find here. Both list ``core.available_devices``.
    """
    name = (device or DEFAULT_DEVICE).strip().upper()
    available = list(core.available_devices)
    listing = f"OpenVINO reports these devices here: {', '.join(available) or 'none'}"
    family, _, targets = name.partition(":")
    if family in VIRTUAL_DEVICES:
        wanted = [t for t in targets.split(",") if t] if targets else []
        for target in wanted:
            resolve_device(core, target)
        return name
    base = family.split(".")[0]
    if base not in DEVICE_FAMILIES or targets:
        raise InputError(f"--device {device!r} is not an OpenVINO device; use one of {', '.join(DEVICE_FAMILIES)} "
                         f"(or GPU.1, AUTO, AUTO:GPU,CPU); {listing}")
    if name in available or (name == base and any(a.split(".")[0] == base for a in available)):
        return name
    raise MissingDependencyError(f"OpenVINO device {name} is not present here; {listing}. Use --device CPU, or run "
                                 "where that device and its OpenVINO driver are installed")


def read_onnx_for_openvino(core, onnx_path, *, log=None):
    """``(ov.Model, inlined)`` for an exported file; our default form is inlined in memory first.

    ``log`` (default: print to stderr) receives the note that the file was inlined.
    """
    import onnx  # noqa: PLC0415

    from ..export.inline import elfatt_call_nodes, inline_elfatt_functions  # noqa: PLC0415

    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist; export one with `elfatt-deploy export "
                                "--inline`")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise InputError(f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    calls = elfatt_call_nodes(proto.graph)
    inlined = bool(calls)
    if inlined:
        if not any(f.domain == calls[0].domain for f in proto.functions):
            raise InputError(
                f"{path} is a plugin-only export ({len(calls)} {calls[0].domain}::{calls[0].op_type} nodes without "
                "their ONNX function), which only TensorRT with the ElfattAttention plugin runs; for OpenVINO export "
                "with `elfatt-deploy export --inline`")
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
        proto = inline_elfatt_functions(proto, check=False)
        (log or (lambda m: print(m, file=sys.stderr)))(
            f"note: {path} has {len(calls)} ElfattAttention nodes with their ONNX function; OpenVINO does not read "
            "ONNX functions, so the file was inlined in memory (for a file to ship to OpenVINO, export with "
            "`elfatt-deploy export --inline`)")
        source = proto.SerializeToString()
    else:
        source = str(path)
    try:
        return core.read_model(source), inlined
    except RuntimeError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        summary = " ".join(lines[-3:]) if lines else type(exc).__name__
        raise ToolkitError(f"OpenVINO could not convert {path}: {summary}") from None


def _shape_list(partial_shape) -> list:
    return [d.get_length() if d.is_static else None for d in partial_shape]


class OpenVinoRunner(BaseRunner):
    """Polygraphy runner for an ONNX file in OpenVINO Runtime (CPU by default)."""

    def __init__(self, onnx_path, *, device: Optional[str] = None, inference_precision: Optional[str] = "f32",
                 compile_per_shape: bool = True, num_threads: Optional[int] = None,
                 config: Optional[Mapping[str, object]] = None, max_cached_shapes: int = 8,
                 name: Optional[str] = None, log=None):
        super().__init__(name=name, prefix="openvino-runner")
        if inference_precision is not None and inference_precision not in INFERENCE_PRECISIONS:
            raise InputError(f"inference precision {inference_precision!r} is not one of "
                             f"{', '.join(INFERENCE_PRECISIONS)} (OpenVINO's INFERENCE_PRECISION_HINT)")
        if num_threads is not None and (isinstance(num_threads, bool) or int(num_threads) < 1):
            raise InputError(f"num_threads {num_threads!r} must be a positive integer (OpenVINO's INFERENCE_NUM_THREADS)")
        if max_cached_shapes < 1:
            raise InputError(f"max_cached_shapes {max_cached_shapes!r} must be >= 1")
        self.onnx_path = Path(onnx_path)
        self.device_request = device
        self.inference_precision = inference_precision
        self.compile_per_shape = bool(compile_per_shape)
        self.num_threads = num_threads
        self.extra_config = dict(config or {})
        self.max_cached_shapes = int(max_cached_shapes)
        self._log = log
        self.info: dict = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def activate_impl(self):
        ov = import_openvino()
        self._ov = ov
        self._core = core = ov.Core()
        self.device = resolve_device(core, self.device_request)
        self._model, inlined = read_onnx_for_openvino(core, self.onnx_path, log=self._log)
        self.input_names = [p.get_any_name() for p in self._model.inputs]
        self.output_names = [p.get_any_name() for p in self._model.outputs]
        self._dynamic = any(p.get_partial_shape().is_dynamic for p in self._model.inputs)
        self.config = self._compile_config()
        self._compiled: "OrderedDict[tuple, tuple]" = OrderedDict()
        self.compile_seconds: dict = {}
        self.info = {
            "openvino_version": ov.get_version(), "device": self.device,
            "device_name": str(self._device_property("FULL_DEVICE_NAME", "?")),
            "config": {k: str(v) for k, v in self.config.items()},
            "compile_per_shape": self.compile_per_shape and self._dynamic, "inlined_in_memory": inlined,
        }
        if not (self.compile_per_shape and self._dynamic):
            self._compiled_for(None)

    def deactivate_impl(self):
        self._compiled = OrderedDict()
        for attr in ("_model", "_core"):
            if hasattr(self, attr):
                delattr(self, attr)

    def _device_property(self, key: str, default=None):
        try:
            return self._core.get_property(self.device.split(":")[0], key)
        except (RuntimeError, TypeError):
            return default

    def _compile_config(self) -> dict:
        supported = self._device_property("SUPPORTED_PROPERTIES", {}) or {}
        config: dict = {}
        if self.inference_precision is not None:
            if "INFERENCE_PRECISION_HINT" in supported:
                config["INFERENCE_PRECISION_HINT"] = self.inference_precision
            else:
                print(f"warning: OpenVINO device {self.device} does not take INFERENCE_PRECISION_HINT; it computes in "
                      "its own precision (check the parity tolerance)", file=sys.stderr)
        if "PERFORMANCE_HINT" in supported:
            config["PERFORMANCE_HINT"] = "LATENCY"  # one request at a time, as validate and bench run it
        if self.num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(self.num_threads)
        config.update(self.extra_config)
        return config

    def _compiled_for(self, shapes: Optional[tuple]):
        """(compiled model, infer request) for the input shapes (None: the model as read)."""
        entry = self._compiled.get(shapes)
        if entry is not None:
            self._compiled.move_to_end(shapes)
            return entry
        model = self._model
        if shapes is not None:
            model = model.clone()
            model.reshape({name: self._ov.PartialShape(list(shape)) for name, shape in zip(self.input_names, shapes)})
        start = time.perf_counter()
        try:
            compiled = self._core.compile_model(model, self.device, self.config)
        except RuntimeError as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise ToolkitError(f"OpenVINO could not compile {self.onnx_path} for {self.device}"
                               f"{'' if shapes is None else ' at ' + str([list(s) for s in shapes])}: "
                               f"{' '.join(lines[-3:])}") from None
        self.compile_seconds[shapes] = time.perf_counter() - start
        entry = (compiled, compiled.create_infer_request())
        self._compiled[shapes] = entry
        while len(self._compiled) > self.max_cached_shapes:
            self._compiled.popitem(last=False)
        return entry

    def compiled_property(self, key: str, shapes: Optional[tuple] = None):
        """A property of the compiled model (e.g. NUM_STREAMS, INFERENCE_NUM_THREADS) for these input shapes."""
        compiled, _ = self._compiled_for(shapes if (self.compile_per_shape and self._dynamic) else None)
        return compiled.get_property(key)

    # -- metadata ------------------------------------------------------------------------------
    def get_input_metadata_impl(self):
        from polygraphy.common import TensorMetadata  # noqa: PLC0415
        from polygraphy.datatype import DataType  # noqa: PLC0415

        meta = TensorMetadata()
        for port in self._model.inputs:
            meta.add(port.get_any_name(), DataType.from_dtype(port.get_element_type().to_dtype()),
                     _shape_list(port.get_partial_shape()))
        return meta

    # -- inference -----------------------------------------------------------------------------
    def infer_impl(self, feed_dict):
        from polygraphy import util  # noqa: PLC0415

        use_torch = any(util.array.is_torch(t) for t in feed_dict.values())
        missing = [n for n in self.input_names if n not in feed_dict]
        extra = [n for n in feed_dict if n not in self.input_names]
        if missing or extra:
            raise InputError(f"{self.onnx_path} takes the inputs {self.input_names}; missing {missing}, "
                             f"unexpected {extra}")
        arrays = [util.array.to_numpy(feed_dict[n]) for n in self.input_names]
        key = tuple(tuple(int(d) for d in a.shape) for a in arrays) if (self.compile_per_shape and self._dynamic) else None
        compiled, request = self._compiled_for(key)
        start = time.perf_counter()
        results = request.infer(arrays)
        self.inference_time = time.perf_counter() - start
        outputs = OrderedDict()
        for port in compiled.outputs:
            array = results[port].copy()  # the request reuses its output buffers on the next call
            outputs[port.get_any_name()] = util.array.to_torch(array) if use_torch else array
        return outputs
