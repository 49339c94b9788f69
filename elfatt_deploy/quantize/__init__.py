"""INT8 post-training quantization: explicit Q/DQ on MatMul/Gemm/Conv, calibrated on images.

``quantize_onnx`` (qdq.py) drives ONNX Runtime's ``quantize_static`` with TensorRT-friendly
settings; calibration.py feeds it a folder of images preprocessed as the model expects.
docs/quantization.md explains the choices.
"""

from __future__ import annotations

__all__ = ["quantize_onnx", "QuantizeResult", "METHODS"]


def __getattr__(name):
    if name in __all__:
        from . import qdq

        return getattr(qdq, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
