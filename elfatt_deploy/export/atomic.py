"""Atomic file output: a temporary file in the target's directory, then ``os.replace``.

A failure at any point leaves no file at the target, and an existing target
untouched; the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union


@contextlib.contextmanager
def atomic_output(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces ``path`` in one step."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"output directory {str(directory)!r} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
