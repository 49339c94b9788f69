"""``make_runner(backend, ...)``: a Polygraphy runner for a backend name."""

from __future__ import annotations

import importlib.util
from typing import Optional, Sequence

from ..errors import MissingDependencyError

BACKENDS = ("onnxruntime", "openvino", "tensorrt")


def make_runner(
    backend: str,
    *,
    onnx_path=None,
    engine_path=None,
    plugin: Optional[str] = None,
    providers: Optional[Sequence[str]] = None,
    cuda_graph: bool = False,
    device: Optional[str] = None,
    inference_precision: Optional[str] = "f32",
):
    """The runner that executes an exported model with ``backend``.

    - ``"onnxruntime"``: needs ``onnx_path``; ``providers`` e.g. ``["cuda", "cpu"]`` (default CPU).
    - ``"openvino"``: needs ``onnx_path`` (our default file is inlined in memory; ``export --inline`` writes
      that form); ``device`` CPU (default), GPU, NPU, AUTO; ``inference_precision`` f32 (default), bf16, f16.
      Needs the ``openvino`` extra (MissingDependencyError otherwise).
    - ``"tensorrt"``: needs ``engine_path``; ``plugin`` is the ElfattAttention plugin library
      (found automatically when omitted); ``cuda_graph`` replays a CUDA graph. Needs TensorRT's Python package.
    """
    if backend == "onnxruntime":
        if onnx_path is None:
            raise ValueError("the onnxruntime backend needs an ONNX file (onnx_path)")
        from .onnxruntime_runner import make_onnxruntime_runner

        return make_onnxruntime_runner(onnx_path, providers=providers, name="onnxruntime")
    if backend == "openvino":
        if onnx_path is None:
            raise ValueError("the openvino backend needs an ONNX file (onnx_path)")
        from .openvino_runner import OpenVinoRunner, import_openvino, resolve_device

        # a missing OpenVINO or device is reported now, before the caller builds anything else
        device = resolve_device(import_openvino().Core(), device)
        return OpenVinoRunner(onnx_path, device=device, inference_precision=inference_precision, name="openvino")
    if backend == "tensorrt":
        if engine_path is None:
            raise ValueError("the tensorrt backend needs an engine file (--engine PATH); build one with "
                             "`elfatt-deploy build`")
        if importlib.util.find_spec("tensorrt") is None:
            raise MissingDependencyError("the tensorrt backend needs TensorRT, which is not installed here (Python "
                                         "`import tensorrt` fails); use --backend onnxruntime, or run on a machine "
                                         "with TensorRT")
        try:
            from .tensorrt_runner import TrtRunner
        except ImportError as exc:
            raise MissingDependencyError(f"the tensorrt backend is not available: TensorRT is not installed or its "
                                         f"runner could not be imported ({type(exc).__name__}: {exc})") from None
        return TrtRunner(engine_path, plugin=plugin, cuda_graph=cuda_graph, name="tensorrt")
    raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
