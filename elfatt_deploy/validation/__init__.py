"""Parity checks: a backend against PyTorch on the same random inputs, with tolerances and reports."""

from __future__ import annotations

__all__ = ["compare_outputs", "default_rtol_l2", "run_parity", "ParityResult"]


def __getattr__(name):
    if name == "compare_outputs":
        from .metrics import compare_outputs

        return compare_outputs
    if name == "default_rtol_l2":
        from .tolerances import default_rtol_l2

        return default_rtol_l2
    if name in ("run_parity", "ParityResult"):
        from . import comparator

        return getattr(comparator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
