"""The ``elfatt-deploy`` command line.

Subcommands live one per module in ``elfatt_deploy/cli/commands/``; each module
defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
They are discovered here, so adding a command never touches this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Optional, Sequence

from .._version import OP_VERSION, __version__
from ..errors import ToolkitError
from . import commands as _commands


class UsageError(Exception):
    """A user error: printed as ``error: ...`` with exit code 2, no traceback."""


def _command_modules():
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{_commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elfatt-deploy",
        description="ELFATT vision transformers from PyTorch to ONNX and TensorRT, with parity checks.",
    )
    parser.add_argument("--version", action="version", version=f"elfatt-deploy {__version__} (op contract v{OP_VERSION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"elfatt-deploy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ToolkitError as exc:
        print(f"elfatt-deploy {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
