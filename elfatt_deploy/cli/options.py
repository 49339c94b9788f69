"""Flags several commands share, and their checks (argparse types that name the flag on bad values)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (argparse prefixes the message with the flag, e.g. ``argument --seed:``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give one >= 0, e.g. 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give an integer >= 0, e.g. 0")
    if value >= 2**63:  # torch's generators and numpy's take 64-bit seeds
        raise argparse.ArgumentTypeError(f"{value} is too large; give an integer below 2**63, e.g. 0")
    return value


def add_force(parser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="run even when the memory estimate exceeds the memory available here")


def add_progress(parser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: when stderr is a terminal)")


def add_num_classes(parser) -> None:
    parser.add_argument("--num-classes", type=non_negative_int, metavar="N",
                        help="classifier classes of the model (default: the model's, 1000; match your checkpoint's; "
                             "0 = no head, features out)")


def config_overrides(args) -> dict:
    """create_model overrides from the shared flags (--num-classes)."""
    overrides = {}
    if getattr(args, "num_classes", None) is not None:
        overrides["num_classes"] = args.num_classes
    return overrides


def progress_bar(args, *, total: Optional[int], desc: str, unit: str = "step"):
    """A tqdm bar on stderr; shown when --progress, hidden with --no-progress, else when stderr is a terminal."""
    from tqdm import tqdm

    wanted = getattr(args, "progress", None)
    disable = (not sys.stderr.isatty()) if wanted is None else not wanted
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, leave=False,
                dynamic_ncols=True)


def check_backend_flags(args, flags: dict) -> None:
    """Refuses a flag given for another backend than ``args.backend`` (InputError, exit 2), rather than
    ignoring it: ``--providers cuda`` with ``--backend openvino`` would otherwise run on OpenVINO's CPU
    without a word. ``flags`` maps a flag (``"--providers"``) to the backends it applies to; a flag
    counts as given when its value is not None and not False (their defaults)."""
    from ..errors import InputError

    backend = args.backend
    for flag, backends in flags.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is None or value is False or backend in backends:
            continue
        mine = [f for f, b in flags.items() if backend in b]
        takes = f"; --backend {backend} takes {', '.join(mine)}" if mine else ""
        shown = "" if value is True else f" {value}"
        raise InputError(f"{flag}{shown} is for --backend {' or '.join(backends)}, not --backend {backend}{takes}; "
                         "drop it, or choose that backend")


def parse_providers(text):
    """``--providers a,b`` as a list (None when not given); an empty entry ("cpu,,", ",cpu") is bad input."""
    if text is None:
        return None
    names = [p.strip() for p in str(text).split(",")]
    if not any(names) or not all(names):
        from ..errors import InputError

        raise InputError(f"--providers {text!r} has an empty entry; give comma-separated names, e.g. --providers "
                         "cuda,cpu (or CUDAExecutionProvider,CPUExecutionProvider)")
    return names
