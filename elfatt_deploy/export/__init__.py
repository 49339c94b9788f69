"""ONNX export: one ``elfatt::ElfattAttention`` node per attention layer, plus its function body."""

from __future__ import annotations

__all__ = ["export_onnx"]


def __getattr__(name):
    if name == "export_onnx":
        from .exporter import export_onnx

        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
