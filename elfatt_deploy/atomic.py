"""Atomic file output: a temporary file in the target's directory, then ``os.replace``.

The one place where the toolkit writes output files (ONNX exports, engines,
timing caches, JSON reports, benchmark results). A failure at any point leaves
no file at the target, and an existing target untouched; the temporary file is
removed. The data is flushed to disk before the rename, so a crash cannot leave
an empty file under the target's name either.

``check_output_path`` is the up-front check every command runs on each of its
output paths (``-o``, ``--report``, ``--json``, ...) before it starts any work, so
that a path it cannot write is refused in a second, not after a long export.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import InputError

PathLike = Union[str, os.PathLike]


def _flag(what: Optional[str]) -> str:
    return f"{what} " if what else ""


def _check_directory(path: Path, what: Optional[str]) -> Path:
    """The directory ``path`` will be written in; it must exist and take a new file."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.exists():
        raise FileNotFoundError(f"cannot write {_flag(what)}{str(path)!r}: the output directory {str(directory)!r} does "
                                f"not exist; create it first (mkdir -p {directory})")
    if not directory.is_dir():
        raise InputError(f"cannot write {_flag(what)}{str(path)!r}: {str(directory)!r} is not a directory")
    try:  # a probe, not os.access: that says yes to root on read-only mounts and to ACL-denied writes
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=directory)
    except OSError as exc:
        raise InputError(f"cannot write {_flag(what)}{str(path)!r}: the directory {str(directory)!r} is not writable "
                         f"({exc.strerror or exc}); write somewhere else or fix its permissions") from None
    os.close(fd)
    os.unlink(probe)
    return directory


def check_output_path(path: PathLike, *, what: Optional[str] = None, suffix: Optional[str] = None,
                      example_name: Optional[str] = None) -> Path:
    """Checks, before any work, that ``path`` can be written as an output file; returns it as a Path.

    ``what`` names the flag in messages (``"-o"``, ``"--report"``), ``suffix`` the required
    extension (``".onnx"``), ``example_name`` the file name suggested inside a directory given
    instead of a file (default ``output`` plus the suffix). Refused: an empty path, a directory, another suffix (InputError),
    a directory that does not exist (FileNotFoundError) or that takes no new file (InputError).
    """
    if path is None or not str(path).strip():
        raise InputError(f"{_flag(what)}output path is empty; give a file name")
    path = Path(path).expanduser()
    if path.is_dir():
        example = path / (example_name or f"output{suffix or ''}")
        raise InputError(f"{_flag(what)}{str(path)!r} is a directory; give a file name, e.g. {example}")
    if suffix is not None and path.name.lower() == suffix.lower():  # '.onnx': a suffix with no name before it
        raise InputError(f"{_flag(what)}{str(path)!r} has no name before {suffix}; give one, "
                         f"e.g. {path.with_name((example_name or f'output{suffix}'))}")
    if suffix is not None and path.suffix.lower() != suffix.lower():
        raise InputError(f"{_flag(what)}{str(path)!r} must end in {suffix}, e.g. {path.with_suffix(suffix).name}")
    if path.exists() and not path.is_file():
        raise InputError(f"{_flag(what)}{str(path)!r} exists and is not a regular file; give another path")
    _check_directory(path, what)
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_outputs_spare_inputs(outputs: dict, inputs: dict) -> None:
    """Refuses, before any work, an output path that is one of the command's inputs or another of its outputs.

    ``outputs`` maps a flag (``"--report"``) to the path it writes, ``inputs`` a description (``"the ONNX
    file"``) to a path the command reads; None values are skipped. Writing there would replace the input
    (atomically, so without a trace) or one output with the next."""
    given_outputs = [(flag, Path(path).expanduser()) for flag, path in outputs.items() if path]
    given_inputs = [(what, Path(path).expanduser()) for what, path in inputs.items() if path]
    for i, (flag, path) in enumerate(given_outputs):
        for what, source in given_inputs:
            if _same_file(path, source):
                raise InputError(f"{flag} {str(path)!r} is {what}, which the command reads: writing it would replace "
                                 "that file; give another path")
        for other, second in given_outputs[i + 1:]:
            if _same_file(path, second):
                raise InputError(f"{flag} and {other} are the same file ({str(path)!r}): one would replace the other; "
                                 "give two paths")


def _output_mode(path: Path) -> int:
    """The mode the output gets: an existing target's, else what a plain ``open(path, "w")`` would give.

    (mkstemp creates its file 0600, which would make every output private to its owner.)
    """
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces ``path`` in one step."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        _check_directory(path, None)  # raises, naming the directory
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError:
        _check_directory(path, None)  # says why in words
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _output_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically; returns the path."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Writes ``text`` as UTF-8 to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
