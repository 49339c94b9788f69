"""Runs an elfatt-deploy engine with TensorRT: a Polygraphy runner backed by torch CUDA memory.

``TrtRunner(engine_path)`` reads the engine and its sidecar (engine/engine_file.py), refuses an
engine built for another TensorRT, GPU or plugin version (saying how to rebuild it), loads the
plugin when the engine uses it, and runs ``execute_async_v3`` on a torch CUDA stream. A plan
without a sidecar (trtexec, Polygraphy) runs with a warning that nothing could be checked; the
plugin is then loaded when it can be found, since the plan may need it. ``run({name: tensor})`` takes torch CUDA tensors or numpy
arrays and returns torch CUDA tensors; Polygraphy's ``infer`` returns numpy.
No pycuda / cuda-python: torch owns every device buffer and the stream.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Optional

from polygraphy.backend.base import BaseRunner

from ..engine.compat import plugin_library_warning, require_compatible
from ..engine.engine_file import load_engine
from ..engine.environment import current_environment
from ..engine.plugin import PLUGIN_NAME, PluginLoadError, find_plugin_libraries, load_first_plugin
from ..engine.profiles import Profile
from ..engine.trt_api import get_logger
from ..shapes import format_shape


def _import_tensorrt():
    try:
        import tensorrt as trt  # noqa: PLC0415
    except Exception as exc:
        raise RuntimeError(
            f"the tensorrt backend needs TensorRT's Python package, which is not importable here "
            f"({type(exc).__name__}: {exc}); see `elfatt-deploy doctor`"
        ) from None
    return trt


def torch_dtype(trt, trt_dtype):
    import torch  # noqa: PLC0415

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    for name, tdt in (("bfloat16", torch.bfloat16), ("int64", torch.int64), ("uint8", torch.uint8)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = tdt
    if trt_dtype not in table:
        raise ValueError(f"TensorRT data type {trt_dtype} has no torch equivalent")
    return table[trt_dtype]


#: TensorRT needs device tensor addresses aligned to 256 bytes (NvInferRuntime.h, IExecutionContext::setTensorAddress).
TENSOR_ADDRESS_ALIGNMENT = 256


def aligned(tensor):
    """``tensor`` itself when its data pointer is 256-byte aligned, else an aligned contiguous copy.

    A view into a larger tensor (``batch[1:2]``) can start anywhere; torch's caching allocator hands
    out blocks aligned to 512 bytes, so a fresh copy satisfies TensorRT.
    """
    import torch  # noqa: PLC0415

    if tensor.numel() == 0 or tensor.data_ptr() % TENSOR_ADDRESS_ALIGNMENT == 0:
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def check_shape_in_profile(name: str, shape, profile: Profile) -> None:
    """Raises ValueError naming the shape and the profile range when ``shape`` is outside it."""
    if not profile.contains(tuple(shape)):
        raise ValueError(
            f"input {name!r} shape {format_shape(shape)} is outside the engine's optimization profile "
            f"({profile.describe()}); resize the input, or rebuild the engine with wider --shapes"
        )


class TrtRunner(BaseRunner):
    """Polygraphy runner for an elfatt-deploy ``.engine`` file."""

    def __init__(self, engine_path, plugin: Optional[str] = None, cuda_graph: bool = False, name: Optional[str] = None,
                 device: int = 0):
        super().__init__(name=name, prefix="elfatt-trt-runner")
        self.engine_path = Path(engine_path)
        self.plugin = plugin
        self.cuda_graph = bool(cuda_graph)
        self.device_index = int(device)
        self.metadata: dict = {}
        self.warnings: list = []

    # -- lifecycle -----------------------------------------------------------------------------
    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"warning: {message}")

    def _load_plugin(self, trt, engine) -> Optional[dict]:
        """The plugin, as the sidecar requires it; for a plan without one, whatever can be found (or None)."""
        needed = (engine.metadata.get("plugin") or {}).get("used")
        if engine.checkable and not needed:
            return None
        try:
            return load_first_plugin(find_plugin_libraries(self.plugin), registry=trt.get_plugin_registry())
        except (FileNotFoundError, PluginLoadError) as exc:  # same type: the CLI reports a missing file cleanly
            if needed:
                raise type(exc)(f"engine {self.engine_path} uses the {PLUGIN_NAME} plugin: {exc}") from None
            self._warn(f"{self.engine_path}: no {PLUGIN_NAME} plugin loaded ({str(exc).splitlines()[0]}); a plan that "
                       "uses it will fail to deserialize")
            return None

    def activate_impl(self):
        import torch  # noqa: PLC0415

        engine = load_engine(self.engine_path)
        self.warnings = []
        for message in engine.warnings:
            self._warn(message)
        metadata, plan = engine.metadata, engine.plan
        trt = _import_tensorrt()
        # the runtime first: it hands the logger to TensorRT, so that loading the plugin reports into it
        self._logger = get_logger(trt)  # the process-wide logger, shared with the builder
        try:
            self._runtime = trt.Runtime(self._logger)
        except Exception:  # no usable GPU: the compatibility check below says so in words
            self._runtime = None
        plugin_info = self._load_plugin(trt, engine)
        if engine.checkable:
            env = current_environment(plugin_info["version"] if plugin_info else None, gpu_index=self.device_index)
            for issue in require_compatible(metadata, env, engine_path=str(self.engine_path)):
                self._warn(f"{self.engine_path}: {issue.message}")
            library_note = plugin_library_warning(metadata, plugin_info)
            if library_note:
                self._warn(f"{self.engine_path}: {library_note}")

        self._torch, self._trt = torch, trt
        self.device = torch.device("cuda", self.device_index)
        with torch.cuda.device(self.device):
            if self._runtime is None:
                self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(plan)
            if engine is None:
                hint = "" if metadata else (
                    f" (it has no sidecar: if it uses the {PLUGIN_NAME} plugin, pass --plugin; if it was built with "
                    "another TensorRT or on another GPU, rebuild it here)")
                raise RuntimeError(f"TensorRT could not deserialize {self.engine_path}; its log above says why{hint}")
            self.engine = engine
            self.context = engine.create_execution_context()
            if self.context is None:
                raise RuntimeError(f"TensorRT could not create an execution context for {self.engine_path} (out of device memory?)")
            self.stream = torch.cuda.Stream(device=self.device)
        self.metadata = metadata
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.profiles = {n: Profile(*(tuple(s) for s in engine.get_tensor_profile_shape(n, 0))) for n in self.input_names}
        self.dtypes = {n: torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        self._graphs: dict = {}

    def deactivate_impl(self):
        self._graphs = {}
        for attr in ("context", "engine", "_runtime", "stream"):
            if hasattr(self, attr):
                delattr(self, attr)

    # -- metadata ------------------------------------------------------------------------------
    def get_input_metadata_impl(self):
        from polygraphy.common import TensorMetadata  # noqa: PLC0415

        meta = TensorMetadata()
        for name in self.input_names:
            p = self.profiles[name]
            shape = [lo if lo == hi else None for lo, hi in zip(p.min, p.max)]
            meta.add(name, self.dtypes[name], shape)
        return meta

    # -- inference -----------------------------------------------------------------------------
    def _as_device_tensor(self, name, value):
        torch = self._torch
        if not isinstance(value, torch.Tensor):
            import numpy as np  # noqa: PLC0415

            value = torch.from_numpy(np.ascontiguousarray(value))
        if value.dtype != self.dtypes[name]:
            raise ValueError(
                f"input {name!r} has dtype {str(value.dtype).replace('torch.', '')}; the engine takes "
                f"{str(self.dtypes[name]).replace('torch.', '')} (it was exported at precision {self.metadata.get('precision')})"
            )
        return aligned(value.to(self.device, non_blocking=True).contiguous())

    def _bind(self, feed: Mapping):
        missing = [n for n in self.input_names if n not in feed]
        extra = [n for n in feed if n not in self.input_names]
        if missing or extra:
            raise ValueError(f"the engine's inputs are {self.input_names}; missing {missing}, unexpected {extra}")
        torch, context = self._torch, self.context
        inputs = OrderedDict()
        for name in self.input_names:
            tensor = self._as_device_tensor(name, feed[name])
            check_shape_in_profile(name, tuple(tensor.shape), self.profiles[name])
            if tuple(context.get_tensor_shape(name)) != tuple(tensor.shape):
                if not context.set_input_shape(name, tuple(tensor.shape)):
                    raise ValueError(f"TensorRT refused the shape {format_shape(tensor.shape)} for input {name!r}")
            inputs[name] = tensor
        outputs = OrderedDict()
        for name in self.output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output {name!r} has a data-dependent shape {shape}; not supported by this runner")
            outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
        for name, tensor in list(inputs.items()) + list(outputs.items()):
            if not context.set_tensor_address(name, tensor.data_ptr()):
                raise RuntimeError(f"TensorRT refused the device address of tensor {name!r}")
        return inputs, outputs

    def _execute(self):
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"execute_async_v3 failed for {self.engine_path}; the TensorRT log above says why")

    def run(self, feed: Mapping, *, copy_outputs: bool = True) -> "OrderedDict[str, object]":
        """Runs one inference; returns the outputs as torch CUDA tensors (synchronized with the current stream).

        With ``cuda_graph=True`` the first call for a set of input shapes captures a CUDA graph and
        later calls with those shapes copy the inputs into its buffers and replay it; the outputs are
        then copies unless ``copy_outputs=False`` (the graph's own buffers, overwritten by the next call).
        """
        if not getattr(self, "is_active", False):
            raise RuntimeError("activate the runner first (use it as a context manager: `with TrtRunner(path) as r:`)")
        torch = self._torch
        current = torch.cuda.current_stream(self.device)
        if self.cuda_graph:
            key = tuple((n, tuple(feed[n].shape)) for n in self.input_names if n in feed)
            graph = self._graphs.get(key)
            if graph is not None:
                static_in, static_out, cuda_graph = graph
                for name in self.input_names:
                    static_in[name].copy_(self._as_device_tensor(name, feed[name]), non_blocking=True)
                # the captured bindings point at the static buffers again (another shape may have rebound them)
                for name, tensor in list(static_in.items()) + list(static_out.items()):
                    self.context.set_tensor_address(name, tensor.data_ptr())
                for name in self.input_names:
                    self.context.set_input_shape(name, tuple(static_in[name].shape))
                cuda_graph.replay()
                return OrderedDict((n, t.clone() if copy_outputs else t) for n, t in static_out.items())
        inputs, outputs = self._bind(feed)
        if self.cuda_graph:
            # private input buffers: replays copy new inputs into them, never into the caller's tensors
            inputs = OrderedDict((n, t.clone()) for n, t in inputs.items())
            for name, tensor in inputs.items():
                self.context.set_tensor_address(name, tensor.data_ptr())
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            self._execute()  # also the run TensorRT needs after a shape change before a graph capture
        if self.cuda_graph:
            self._capture(key, inputs, outputs)
        current.wait_stream(self.stream)
        for tensor in list(inputs.values()) + list(outputs.values()):
            tensor.record_stream(self.stream)
        if self.cuda_graph and copy_outputs:
            return OrderedDict((n, t.clone()) for n, t in outputs.items())
        return outputs

    def _capture(self, key, inputs, outputs):
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self._execute()
        except RuntimeError as exc:
            print(f"warning: {self.engine_path}: CUDA graph capture failed ({exc}); running without a graph")
            self.cuda_graph = False
            return
        self._graphs[key] = (inputs, outputs, graph)

    def synchronize(self):
        self.stream.synchronize()

    def infer_impl(self, feed_dict, copy_outputs_to_host: bool = True):
        start = time.perf_counter()
        outputs = self.run(feed_dict)
        self._torch.cuda.current_stream(self.device).synchronize()
        self.inference_time = time.perf_counter() - start
        if not copy_outputs_to_host:
            return outputs
        return OrderedDict((n, t.cpu().numpy()) for n, t in outputs.items())
