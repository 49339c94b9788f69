"""Runners for parity checks and benchmarks: PyTorch, ONNX Runtime and TensorRT.

Every runner is a Polygraphy ``BaseRunner``, so Polygraphy's Comparator can run
them side by side; ``backends.make_runner`` builds one by backend name.
"""

from __future__ import annotations

__all__ = ["make_runner", "BACKENDS"]


def __getattr__(name):
    if name in __all__:
        from . import backends

        return getattr(backends, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
