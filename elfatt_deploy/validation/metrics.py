"""Error metrics between a backend's output and the PyTorch reference (computed in float64)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class OutputMetrics:
    max_abs_error: float
    rel_l2_error: float
    cosine_similarity: float
    #: fraction of rows whose argmax agrees, for [batch, classes] outputs; None otherwise
    top1_agreement: Optional[float]
    finite: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _as_float64(array) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu().double().numpy()  # float64 keeps float64 exact; bf16 has no numpy type
    return np.asarray(array, dtype=np.float64)


def compare_outputs(output, reference, *, classifier: bool = True) -> OutputMetrics:
    """Metrics of ``output`` against ``reference``; ValueError when their shapes differ.

    Top-1 agreement is computed for a [batch, classes] output of a classifier; ``classifier=False``
    (a [batch, features] output of a model without a head) leaves it None."""
    out, ref = _as_float64(output), _as_float64(reference)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {list(out.shape)} differs from the reference shape {list(ref.shape)}")
    finite = bool(np.isfinite(out).all())
    if out.size == 0:
        return OutputMetrics(0.0, 0.0, 1.0, None, True)
    diff = out - ref
    ref_norm, out_norm = float(np.linalg.norm(ref)), float(np.linalg.norm(out))
    diff_norm = float(np.linalg.norm(diff))
    if ref_norm > 0:
        rel_l2 = diff_norm / ref_norm
    else:
        rel_l2 = 0.0 if diff_norm == 0 else float("inf")
    denom = ref_norm * out_norm
    cosine = float(np.sum(out * ref) / denom) if denom > 0 else float(ref_norm == out_norm)
    top1 = None
    if classifier and out.ndim == 2 and out.shape[1] > 1:
        top1 = float(np.mean(np.argmax(out, axis=1) == np.argmax(ref, axis=1)))
    if not finite:
        rel_l2 = float("inf")
    return OutputMetrics(float(np.max(np.abs(diff))) if finite else float("inf"), rel_l2, cosine, top1, finite)
