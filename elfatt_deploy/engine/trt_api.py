"""The few TensorRT Python API details that differ between the versions this toolkit supports (10.3 .. 11.x).

Read from the pybind definitions (python/src/infer/pyCore.cpp, NvInfer.h) of TensorRT 10.3, 10.8,
10.16 and 11.1:

- ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists from 9.x on; TensorRT 11 deprecates it
  ("Strongly typed mode is always enabled. This flag is retained for API compatibility but is
  ignored"), so it is passed only where it still means something and never looked up on 11+.
- TensorRT keeps a single logger pointer per process ("The logger passed into createInferRuntime
  differs from one already provided ... the existing value will be used instead"): every builder,
  runtime and parser of this process gets the same ``trt.Logger``, whose ``min_severity`` is set
  per use.
- Network inspection (``num_layers`` / ``get_layer`` / ``LayerType.PLUGIN_V3``, ``num_inputs`` /
  ``get_input``, ``ITensor.name/dtype/shape``) and the registry's ``all_creators`` with each
  creator's ``name`` / ``plugin_version`` / ``plugin_namespace`` are the same in all four.
"""

from __future__ import annotations

from typing import Optional

_LOGGER = None


def trt_major(trt) -> int:
    """The major version of the imported TensorRT module (0 when unreadable)."""
    try:
        return int(str(getattr(trt, "__version__", "0")).split(".")[0])
    except ValueError:
        return 0


def strongly_typed_network_flags(trt) -> int:
    """``create_network`` flags for a strongly typed network on every supported TensorRT."""
    if trt_major(trt) >= 11:
        return 0  # always strongly typed; the flag is deprecated and ignored (may disappear)
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    if flag is None:
        raise RuntimeError(
            f"TensorRT {getattr(trt, '__version__', '?')} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED: "
            "elfatt-deploy needs TensorRT >= 10.3"
        )
    return 1 << int(flag)


def get_logger(trt, min_severity: Optional[object] = None):
    """The process-wide ``trt.Logger`` (created on first use); ``min_severity`` updates its level when given."""
    global _LOGGER
    if _LOGGER is None or not isinstance(_LOGGER, trt.Logger):
        _LOGGER = trt.Logger(trt.Logger.WARNING if min_severity is None else min_severity)
    elif min_severity is not None:
        _LOGGER.min_severity = min_severity
    return _LOGGER


def _enum_name(value) -> str:
    """``DataType.FLOAT`` -> "FLOAT" (pybind enums have ``.name``; str() gives "DataType.FLOAT")."""
    return str(getattr(value, "name", None) or str(value).rsplit(".", 1)[-1])


def plugin_layer_names(trt, network) -> list[str]:
    """Names of the network's plugin layers (``LayerType.PLUGIN``, ``PLUGIN_V2``, ``PLUGIN_V3``)."""
    layer_type = trt.LayerType
    plugin_types = {getattr(layer_type, name) for name in ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3") if hasattr(layer_type, name)}
    names = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in plugin_types:
            names.append(layer.name)
    return names


def network_io(trt, network) -> list[dict]:
    """The network's inputs and outputs: ``{name, mode, dtype, shape}``, -1 for dynamic dimensions.

    Recorded in the sidecar, so that the Triton and DeepStream writers know the engine's tensors
    without TensorRT."""
    tensors = []
    for mode, count, get in (("input", network.num_inputs, network.get_input),
                             ("output", network.num_outputs, network.get_output)):
        for index in range(count):
            tensor = get(index)
            tensors.append({"name": tensor.name, "mode": mode, "dtype": _enum_name(tensor.dtype),
                            "shape": [int(d) for d in tensor.shape]})
    return tensors
