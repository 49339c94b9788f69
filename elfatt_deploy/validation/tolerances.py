"""Default parity tolerances: relative L2 error of a backend's outputs against PyTorch float32."""

from __future__ import annotations

from typing import Optional

#: (backend, precision of the deployed model) -> max relative L2 error
DEFAULT_RTOL_L2 = {
    ("onnxruntime", "fp32"): 1e-5,
    ("onnxruntime", "fp16"): 5e-3,
    ("tensorrt", "fp32"): 1e-4,
    ("tensorrt", "fp16"): 5e-3,
}


def default_rtol_l2(backend: str, precision: str, override: Optional[float] = None) -> float:
    """The tolerance to apply: ``override`` when given, else the default for backend and precision."""
    if override is not None:
        if not (override > 0):
            raise ValueError(f"relative L2 tolerance {override!r} must be a positive number, e.g. 1e-5")
        return float(override)
    try:
        return DEFAULT_RTOL_L2[(backend, precision)]
    except KeyError:
        known = ", ".join(sorted({f"{b}/{p}" for b, p in DEFAULT_RTOL_L2}))
        raise ValueError(f"no default tolerance for backend {backend!r} at precision {precision!r} (known: {known}); "
                         "pass --rtol-l2") from None
