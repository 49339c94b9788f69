"""Atomic file output: a temporary file in the target's directory, then ``os.replace``.

The one place where the toolkit writes output files (ONNX exports, engines,
timing caches, JSON reports, benchmark results). A failure at any point leaves
no file at the target, and an existing target untouched; the temporary file is
removed. The data is flushed to disk before the rename, so a crash cannot leave
an empty file under the target's name either.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


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
        raise FileNotFoundError(f"cannot write {str(path)!r}: the output directory {str(directory)!r} does not exist; "
                                "create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
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
