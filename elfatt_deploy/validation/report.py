"""Parity reports: a table per output for the terminal, and a JSON file."""

from __future__ import annotations

import platform
from typing import Mapping, Optional

from .. import jsonio
from ..cli.table import format_table
from ..atomic import atomic_write_text
from ..shapes import format_shape
from .comparator import ParityResult


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_parity_tables(result: ParityResult) -> str:
    """One table per output: a row per input shape and sample."""
    blocks = []
    for output in result.outputs():
        rows = []
        for r in (r for r in result.rows if r.output == output):
            m = r.metrics
            rows.append([format_shape(r.shape), r.sample, _fmt(m.max_abs_error, ".3e"), _fmt(m.rel_l2_error, ".3e"),
                         _fmt(m.cosine_similarity, ".8f"), _fmt(m.top1_agreement, ".3f"), "ok" if r.passed else "FAIL"])
        table = format_table(["input", "sample", "max abs err", "rel L2 err", "cosine", "top-1 agree", "result"], rows)
        blocks.append(f"output {output!r}: {result.backend} vs {result.reference} "
                      f"(pass: rel L2 <= {result.rtol_l2:.1e})\n{table}")
    return "\n\n".join(blocks)


def environment() -> dict:
    import onnx
    import onnxruntime
    import polygraphy
    import torch

    from .._version import OP_VERSION, __version__

    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "polygraphy": polygraphy.__version__, "elfatt_deploy": __version__, "op_version": OP_VERSION}


def write_report(path, result: ParityResult, settings: Mapping) -> None:
    """Writes the JSON report atomically: settings, environment, every row, and the verdict."""
    report = {"passed": result.passed, "settings": dict(settings), "environment": environment(), **result.to_dict()}
    atomic_write_text(path, jsonio.dumps(report, indent=2, sort_keys=False) + "\n")
