"""JSON that strict parsers read: non-finite floats (NaN, +-inf) become ``null``.

Python's ``json.dumps`` writes ``NaN`` and ``Infinity``, which are not JSON (RFC 8259): jq, JavaScript's
``JSON.parse`` and Go's ``encoding/json`` refuse the file. A parity report can hold them (a NaN output, an
infinite relative error against an all-zero reference), so every report the CLI writes goes through here.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float (also numpy floats) replaced by None, containers copied."""
    if isinstance(obj, float) or (hasattr(obj, "dtype") and getattr(obj, "shape", None) == () and
                                  getattr(obj.dtype, "kind", "") == "f"):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, dict):
        return {key: finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(value) for value in obj]
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """``json.dumps`` of ``finite_or_none(obj)`` with ``allow_nan=False`` (so nothing non-standard slips out)."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)
