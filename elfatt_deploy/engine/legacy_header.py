"""The engine header format of elfatt-deploy <= 0.1 (read-only): a metadata header followed by the plan.

``elfatt-deploy build`` now writes the plan exactly as TensorRT serialized it, with the metadata in a
sidecar file (engine_file.py); files in this older format still load.

Layout (all integers little-endian)::

    8 bytes   magic  b"ELFATTE\\x01"  (the last byte is the header format version)
    4 bytes   n      length of the JSON header in bytes (uint32)
    n bytes   UTF-8 JSON object (the engine metadata)
    rest      the serialized TensorRT plan, as ``IHostMemory`` gave it

Like the ultralytics ``.engine`` files (length + JSON + plan) with a magic marker in front. No
other tool can load such a file, which is why the format was replaced.
"""

from __future__ import annotations

import json
import struct


ENGINE_MAGIC = b"ELFATTE\x01"
_LENGTH = struct.Struct("<I")
#: Larger headers are refused as corrupt (a real one is a few KiB).
MAX_HEADER_BYTES = 16 * 1024 * 1024


class EngineFileError(ValueError):
    """The file is not a readable engine (truncated, corrupt, a sidecar that describes another plan ...)."""


def has_legacy_header(data: bytes) -> bool:
    """Whether ``data`` starts with the old header's magic (any header format version)."""
    return bytes(data[: len(ENGINE_MAGIC) - 1]) == ENGINE_MAGIC[:-1]


def decode_engine(data: bytes, *, source: str = "<bytes>") -> tuple[dict, bytes]:
    """Splits old-format engine bytes into ``(metadata, plan)``; raises EngineFileError on bad input."""
    data = bytes(data)
    if not data.startswith(ENGINE_MAGIC):
        if has_legacy_header(data) and len(data) >= len(ENGINE_MAGIC):
            raise EngineFileError(
                f"{source}: engine header format version {data[len(ENGINE_MAGIC) - 1]} is not supported by this "
                f"elfatt-deploy (it reads version {ENGINE_MAGIC[-1]}); rebuild the engine with `elfatt-deploy build`"
            )
        raise EngineFileError(f"{source}: no {ENGINE_MAGIC[:-1].decode()} header (truncated?)")
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
