"""Library logs of a command: on stderr, quiet unless ``-v``/``--verbose``.

stdout carries the command's own result (tables, ``wrote ...`` lines) and nothing else,
so it can be piped. Polygraphy prints its ``[W]``/``[I]`` lines to stdout by default;
here it goes through Python logging to stderr. ONNX Runtime's C++ logger (coloured
warnings such as unused-initializer notes) is set to errors only unless verbose.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Callable

from elfatt_deploy.errors import MissingDependencyError

#: Python loggers of the libraries a command drives.
LIBRARY_LOGGERS = ("Polygraphy", "torch.onnx", "onnxscript", "onnx_ir", "torch._dynamo", "torch.export")

#: onnxruntime.set_default_logger_severity levels
_ORT_WARNING, _ORT_ERROR = 2, 3


def configure_library_logs(*, verbose: bool) -> Callable[[], None]:
    """Routes library logs to stderr at WARNING/INFO (verbose) or ERROR; returns a function that undoes it."""
    level = logging.INFO if verbose else logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = []
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(level)
        logger.addHandler(handler)
        logger.propagate = False
    undo_polygraphy = _route_polygraphy(verbose)
    _quiet_onnxruntime(verbose)
    previous_format = warnings.formatwarning
    warnings.formatwarning = _toolkit_warnings_as_one_line(previous_format)

    def restore() -> None:
        warnings.formatwarning = previous_format
        undo_polygraphy()
        for logger, previous_level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(previous_level)
            logger.propagate = propagate

    return restore


def _toolkit_warnings_as_one_line(fallback: Callable) -> Callable:
    """Formats the toolkit's own warnings (ImageDecodeWarning, ...) as ``warning: MESSAGE``, without Python's
    source path and code line; other libraries' warnings as Python formats them. (A formatter, not a
    showwarning: code that records warnings, such as warnings.catch_warnings(record=True), still gets them.)"""

    def format_warning(message, category, filename, lineno, line=None):
        if getattr(category, "__module__", "").startswith("elfatt_deploy."):
            return f"warning: {message}\n"
        return fallback(message, category, filename, lineno, line)

    return format_warning


def _route_polygraphy(verbose: bool) -> Callable[[], None]:
    try:
        from polygraphy.logger import G_LOGGER
    except Exception:  # polygraphy missing or broken: doctor says so
        return lambda: None
    if not hasattr(G_LOGGER, "use_python_logging_system"):
        import polygraphy  # noqa: PLC0415

        raise MissingDependencyError(
            f"polygraphy {getattr(polygraphy, '__version__', '?')} is too old: elfatt-deploy needs polygraphy >= 0.49.14; "
            "upgrade it with: python3 -m pip install -U \"polygraphy>=0.49.14\"")
    previous = (G_LOGGER.use_python_logging_system, G_LOGGER.module_severity, G_LOGGER.colors)
    G_LOGGER.use_python_logging_system = True
    G_LOGGER.module_severity = G_LOGGER.INFO if verbose else G_LOGGER.ERROR
    G_LOGGER.colors = False

    def undo() -> None:
        G_LOGGER.use_python_logging_system, G_LOGGER.module_severity, G_LOGGER.colors = previous

    return undo


def polygraphy_severity(verbose: bool) -> int:
    """The Polygraphy severity a command's own ``G_LOGGER.verbosity(...)`` block should use."""
    from polygraphy.logger import G_LOGGER

    return G_LOGGER.INFO if verbose else G_LOGGER.ERROR


def _quiet_onnxruntime(verbose: bool) -> None:
    try:
        import onnxruntime
    except Exception:
        return
    onnxruntime.set_default_logger_severity(_ORT_WARNING if verbose else _ORT_ERROR)
