"""The ``elfatt-deploy`` command line.

Subcommands live one per module in ``elfatt_deploy/cli/commands/``; each module
defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
They are discovered here, so adding a command never touches this file.

Every command follows one exit-code scheme (``elfatt_deploy.errors``, docs/cli.md):
0 ok, 1 a check failed, 2 bad input or usage, 3 the environment lacks something,
4 internal error. Errors are printed as one ``elfatt-deploy CMD: error: ...`` line
(no traceback); ``--debug`` or ``ELFATT_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import pkgutil
import sys
import traceback
from typing import Optional, Sequence

from .._version import OP_VERSION, __version__
from ..errors import (EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_ENVIRONMENT, EXIT_INTERNAL, BackendRunError, InputError,
                      MissingDependencyError, ToolkitError)
from . import commands as _commands
from .logs import configure_library_logs

#: Set to 1 to get the traceback of every error (the same as --debug).
DEBUG_ENV = "ELFATT_DEBUG"


class UsageError(InputError):
    """A user error: printed as ``error: ...`` with exit code 2, no traceback."""


def _command_modules():
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{_commands.__name__}.{info.name}")


def _add_common_options(cmd: argparse.ArgumentParser) -> None:
    """``--debug`` and ``-v/--verbose`` on every command (a command's own ``--verbose`` is kept)."""
    taken = cmd._option_string_actions  # noqa: SLF001  (argparse has no public lookup)
    if "--verbose" not in taken:
        flags = ["--verbose"] if "-v" in taken else ["-v", "--verbose"]
        cmd.add_argument(*flags, action="store_true",
                         help="show the libraries' logs (Polygraphy, ONNX Runtime, torch.onnx) on stderr")
    if "--debug" not in taken:
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help=f"print the full traceback of an error (also: {DEBUG_ENV}=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elfatt-deploy",
        description="ELFATT vision transformers from PyTorch to ONNX and TensorRT, with parity checks.",
        epilog="exit codes: 0 ok, 1 a check failed (parity tolerance, benchmark threshold), 2 bad input or usage, "
               "3 the environment lacks something (TensorRT, GPU, plugin, a package), 4 internal error. "
               "See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"elfatt-deploy {__version__} (op contract v{OP_VERSION})")
    parser.add_argument("--debug", action="store_true", help=f"print the full traceback of an error (also: {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        _add_common_options(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def _debug_requested(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or torch's allocator failures (RuntimeError / torch.OutOfMemoryError)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def exit_code_of(exc: BaseException) -> int:
    """The exit code an exception maps to (docs/cli.md)."""
    if isinstance(exc, BackendRunError):
        return EXIT_CHECK_FAILED
    if isinstance(exc, ToolkitError) or _out_of_memory(exc):
        return EXIT_ENVIRONMENT
    if isinstance(exc, ImportError):  # a package the command needs is not installed (e.g. Pillow on a device)
        return EXIT_ENVIRONMENT
    if isinstance(exc, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return EXIT_BAD_INPUT
    if isinstance(exc, OSError):  # disk full, I/O errors
        return EXIT_ENVIRONMENT
    return EXIT_INTERNAL


def _report(command: str, exc: BaseException, debug: bool) -> int:
    code = exit_code_of(exc)
    prefix = f"elfatt-deploy {command}"
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if code == EXIT_INTERNAL:
        first = _one_line(exc).splitlines()[0]
        print(f"{prefix}: internal error: {type(exc).__name__}: {first}", file=sys.stderr)
        if not debug:
            print(f"{prefix}: this is a bug (or a case the toolkit does not handle yet); rerun with --debug "
                  f"(or {DEBUG_ENV}=1) for the traceback, and report it with the command line",
                  file=sys.stderr)
        return code
    message = _one_line(exc)
    if _out_of_memory(exc):
        first = message.splitlines()[0]
        message = (f"out of memory ({first}); use a smaller input shape or batch, or a machine with more memory"
                   if first != "MemoryError" else
                   "out of memory; use a smaller input shape or batch, or a machine with more memory")
    elif isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.filename and \
            str(exc.filename) not in message:
        message = f"{message}: {exc.filename}"
    if isinstance(exc, ImportError) and getattr(exc, "name", None):
        package = {"PIL": "Pillow", "cv2": "opencv-python", "yaml": "PyYAML"}.get(exc.name.split(".")[0],
                                                                              exc.name.split(".")[0])
        message = (f"{message}: a package this command needs is not installed; install it with "
                   f"python3 -m pip install {package} (or reinstall elfatt-deploy with its dependencies)")
    print(f"{prefix}: error: {message}", file=sys.stderr)
    if isinstance(exc, MissingDependencyError) and exc.extra:
        print(f"{prefix}: install it with: python3 -m pip install \"elfatt-deploy[{exc.extra}]\"", file=sys.stderr)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    debug = _debug_requested(args)
    restore_logs = restore_term = _nothing_to_restore
    try:  # the set-up too: an error in it (e.g. a too old polygraphy) is one line and an exit code
        restore_logs = configure_library_logs(verbose=bool(getattr(args, "verbose", False)))
        restore_term = _terminate_as_interrupt()
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"elfatt-deploy {args.command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"elfatt-deploy {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except BrokenPipeError:  # `elfatt-deploy doctor | head`: the reader left; not an error of the environment
        _silence_closed_stdout()
        return 141
    except Exception as exc:  # noqa: BLE001  (every error becomes one line and an exit code)
        return _report(args.command, exc, debug)
    finally:
        restore_term()
        restore_logs()


def _nothing_to_restore() -> None:
    return None


class _Terminated(BaseException):
    """SIGTERM (docker stop, timeout, a job scheduler) as an exception, so that temporary files and partial
    outputs are cleaned up by the same finally blocks as for Ctrl-C; exit 143 (128 + 15)."""


def _silence_closed_stdout() -> None:
    """Points stdout at /dev/null so that the interpreter's final flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # a stdout without a file descriptor (captured in tests): nothing will flush to the pipe


def _terminate_as_interrupt():
    """Installs a SIGTERM handler that raises _Terminated (main thread only, and only where SIGTERM still has
    its default action); returns the function that puts the previous handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return lambda: None

    def handler(signum, frame):
        raise _Terminated()

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
