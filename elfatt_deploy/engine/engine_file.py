"""The ``.engine`` file: a metadata header followed by the TensorRT plan.

Layout (all integers little-endian)::

    8 bytes   magic  b"ELFATTE\\x01"  (the last byte is the header format version)
    4 bytes   n      length of the JSON header in bytes (uint32)
    n bytes   UTF-8 JSON object (the engine metadata)
    rest      the serialized TensorRT plan, as ``IHostMemory`` gave it

Like the ultralytics ``.engine`` files (length + JSON + plan) with a magic marker
in front, so that a plain TensorRT plan (from trtexec, Polygraphy ...) is
recognised and refused with a clear message instead of being misread.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Mapping

from ..atomic import atomic_write_bytes

ENGINE_MAGIC = b"ELFATTE\x01"
_LENGTH = struct.Struct("<I")
#: Larger headers are refused as corrupt (a real one is a few KiB).
MAX_HEADER_BYTES = 16 * 1024 * 1024


class EngineFileError(ValueError):
    """The file is not a readable elfatt-deploy engine (truncated, corrupt, plain plan ...)."""


def encode_engine(metadata: Mapping[str, Any], plan: bytes | bytearray | memoryview) -> bytes:
    """Returns the bytes of an engine file holding ``metadata`` and ``plan``."""
    if not isinstance(metadata, Mapping):
        raise TypeError(f"engine metadata must be a mapping, got {type(metadata).__name__}")
    plan = bytes(plan)
    if not plan:
        raise ValueError("the TensorRT plan is empty: the engine build failed, nothing to write")
    header = json.dumps(metadata, sort_keys=True, ensure_ascii=False).encode("utf-8")
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"engine metadata is {len(header)} bytes of JSON; at most {MAX_HEADER_BYTES} are allowed")
    return ENGINE_MAGIC + _LENGTH.pack(len(header)) + header + plan


def decode_engine(data: bytes, *, source: str = "<bytes>") -> tuple[dict, bytes]:
    """Splits engine file bytes into ``(metadata, plan)``; raises EngineFileError on bad input."""
    data = bytes(data)
    if not data.startswith(ENGINE_MAGIC):
        if data[: len(ENGINE_MAGIC) - 1] == ENGINE_MAGIC[:-1]:
            raise EngineFileError(
                f"{source}: engine header format version {data[len(ENGINE_MAGIC) - 1]} is not supported by this "
                f"elfatt-deploy (it reads version {ENGINE_MAGIC[-1]}); rebuild the engine with `elfatt-deploy build`"
            )
        if len(data) < len(ENGINE_MAGIC):
            raise EngineFileError(f"{source}: the file is {len(data)} bytes long, too short to be an engine (truncated?)")
        raise EngineFileError(
            f"{source}: not an elfatt-deploy engine (no {ENGINE_MAGIC[:-1].decode()} header). If it is a plain "
            "TensorRT plan (trtexec --saveEngine, Polygraphy), rebuild it with `elfatt-deploy build MODEL.onnx -o "
            "MODEL.engine` so that it carries the metadata the runner checks, or run it with trtexec/Polygraphy"
        )
    offset = len(ENGINE_MAGIC)
    if len(data) < offset + _LENGTH.size:
        raise EngineFileError(f"{source}: truncated engine file: it ends inside the header length field")
    (length,) = _LENGTH.unpack_from(data, offset)
    offset += _LENGTH.size
    if length > MAX_HEADER_BYTES:
        raise EngineFileError(f"{source}: corrupt engine file: header length {length} exceeds {MAX_HEADER_BYTES}")
    if len(data) < offset + length:
        raise EngineFileError(
            f"{source}: truncated engine file: the header says {length} bytes of metadata but only "
            f"{len(data) - offset} follow"
        )
    try:
        metadata = json.loads(data[offset : offset + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineFileError(f"{source}: corrupt engine file: the metadata header is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise EngineFileError(f"{source}: corrupt engine file: the metadata header is a JSON {type(metadata).__name__}, not an object")
    plan = data[offset + length :]
    if not plan:
        raise EngineFileError(f"{source}: truncated engine file: the metadata header is followed by no TensorRT plan")
    return metadata, plan


def write_engine_file(path: str | os.PathLike, metadata: Mapping[str, Any], plan_bytes) -> Path:
    """Writes an engine file atomically: either the whole new file exists at ``path`` or nothing changed."""
    return atomic_write_bytes(path, encode_engine(metadata, plan_bytes))


def read_engine_file(path: str | os.PathLike) -> tuple[dict, bytes]:
    """Reads an engine file written by :func:`write_engine_file`; returns ``(metadata, plan_bytes)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"engine file {path} does not exist; build one with `elfatt-deploy build MODEL.onnx -o {path}`")
    return decode_engine(path.read_bytes(), source=str(path))


def read_engine_metadata(path: str | os.PathLike) -> dict:
    """Reads only the metadata header (does not load the plan into memory)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"engine file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(len(ENGINE_MAGIC) + _LENGTH.size)
        if len(head) == len(ENGINE_MAGIC) + _LENGTH.size and head.startswith(ENGINE_MAGIC):
            (length,) = _LENGTH.unpack_from(head, len(ENGINE_MAGIC))
            if length <= MAX_HEADER_BYTES:
                body = f.read(length + 1)
                return decode_engine(head + body, source=str(path))[0]
    return decode_engine(head, source=str(path))[0]
