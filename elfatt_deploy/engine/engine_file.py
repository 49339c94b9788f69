"""Engine files: the TensorRT plan exactly as TensorRT serialized it, and a JSON sidecar beside it.

``model.engine`` holds the bytes of ``IBuilder.build_serialized_network`` and nothing else, so
``trtexec --loadEngine``, Triton's TensorRT backend, DeepStream's nvinfer and Polygraphy load it as
it is. ``model.engine.json`` records what the plan cannot say about itself (TensorRT version, GPU,
plugin, precision, profiles, model, source ONNX; engine/metadata.py) and the plan's SHA-256, so a
sidecar left over from an earlier build is never taken to describe a new plan.

Writing: the old sidecar is removed first, then the plan and then the sidecar are each written
atomically. A crash in between leaves a plan without a sidecar (it runs, unchecked), never a
sidecar describing the wrong plan.

Reading (:func:`load_engine`) accepts three kinds of file:

- a plan with its sidecar: the sidecar's plan hash must match (else EngineFileError);
- a plan alone (trtexec ``--saveEngine``, Polygraphy): loads, with a warning that nothing can be checked,
  unless it is certainly something else (an ONNX model, a checkpoint, a library, text: not_a_plan.py),
  which is an EngineFileError that says what the file is and what to do;
- the old elfatt-deploy header format (legacy_header.py): read-only, loads with its embedded metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from ..atomic import atomic_write_bytes, atomic_write_text
from .legacy_header import ENGINE_MAGIC, EngineFileError, decode_engine, has_legacy_header
from .not_a_plan import describe_non_plan

SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = "elfatt-deploy engine sidecar"
SIDECAR_VERSION = 1

#: Where the metadata came from.
SOURCE_SIDECAR = "sidecar"
SOURCE_LEGACY = "legacy header"
SOURCE_NONE = "none"

__all__ = [
    "ENGINE_MAGIC",
    "EngineFile",
    "EngineFileError",
    "load_engine",
    "read_engine_file",
    "read_engine_metadata",
    "sha256_bytes",
    "sha256_file",
    "sidecar_path",
    "write_engine_file",
]


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.engine`` -> ``model.engine.json`` (the name Triton, DeepStream and trtexec ignore)."""
    path = Path(engine_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def sha256_bytes(data) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class EngineFile:
    """A loaded engine: the plan bytes, the metadata ({} when there is none) and where it came from."""

    path: Path
    plan: bytes
    metadata: dict
    source: str  # SOURCE_SIDECAR, SOURCE_LEGACY or SOURCE_NONE
    warnings: list[str] = field(default_factory=list)

    @property
    def checkable(self) -> bool:
        """Whether the metadata allows the compatibility checks (engine/compat.py)."""
        return bool(self.metadata)


def _sidecar_text(metadata: Mapping[str, Any], plan: bytes) -> str:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"engine metadata must be a mapping, got {type(metadata).__name__}")
    record = dict(metadata)
    record["format"] = SIDECAR_FORMAT
    record["format_version"] = SIDECAR_VERSION
    record["plan"] = {"sha256": sha256_bytes(plan), "bytes": len(plan)}
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_engine_file(path: str | os.PathLike, metadata: Mapping[str, Any], plan_bytes) -> Path:
    """Writes ``path`` (the raw plan) and ``path.json`` (the sidecar), each atomically; returns ``path``.

    The metadata is encoded before anything is touched (a bad value changes nothing), and an old
    sidecar is removed before the new plan replaces the old one.
    """
    plan = bytes(plan_bytes)
    if not plan:
        raise ValueError("the TensorRT plan is empty: the engine build failed, nothing to write")
    path = Path(path)
    text = _sidecar_text(metadata, plan)
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise FileNotFoundError(f"cannot write {path}: the directory {path.parent} does not exist; create it first")
    side = sidecar_path(path)
    side.unlink(missing_ok=True)
    atomic_write_bytes(path, plan)
    atomic_write_text(side, text)
    return path


#: the sidecar keys whose type the readers (triton, deepstream, doctor, validate) rely on: key -> (types, words)
_SIDECAR_TYPES = {
    "plan": ((dict,), "an object"),
    "tensorrt_version": ((str,), "a string"),
    "gpu": ((dict, type(None)), "an object or null"),
    "jetson": ((dict, type(None)), "an object or null"),
    "plugin": ((dict, type(None)), "an object or null"),
    "precision": ((str, type(None)), "a string or null"),
    "tf32": ((bool,), "true or false"),
    "io": ((list,), "a list"),
    "profiles": ((list,), "a list"),
    "model": ((dict, type(None)), "an object or null"),
    "source_onnx": ((dict, str, type(None)), "an object, a string or null"),
}


def _is_shape(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value)


def check_sidecar_fields(metadata: Mapping[str, Any], side) -> None:
    """EngineFileError naming the first field whose type (or, for a profile, shape) is not what `build` writes:
    a sidecar edited by hand or written by another tool, which the readers would otherwise trip over."""
    def refuse(what: str, value, expected: str) -> None:
        shown = json.dumps(value)[:60] if not isinstance(value, bytes) else repr(value)[:60]
        raise EngineFileError(f"{side}: {what} is {shown}, but elfatt-deploy's sidecar has {expected} there (edited "
                              "by hand or written by another tool?); rebuild the engine with `elfatt-deploy build`, or "
                              "move the sidecar away to run the plan unchecked (validate, bench)")

    for key, (types, words) in _SIDECAR_TYPES.items():
        if key in metadata and not isinstance(metadata[key], types):
            refuse(f'"{key}"', metadata[key], words)
    for i, entry in enumerate(metadata.get("io") or []):
        if not isinstance(entry, dict):
            refuse(f'"io"[{i}]', entry, "an object")
    for i, profile in enumerate(metadata.get("profiles") or []):
        if not isinstance(profile, dict):
            refuse(f'"profiles"[{i}]', profile, "an object")
        shapes = [profile.get(k) for k in ("min", "opt", "max")]
        for key, shape in zip(("min", "opt", "max"), shapes):
            if not _is_shape(shape):
                refuse(f'"profiles"[{i}].{key}', shape, "a list of positive integers")
        if len({len(x) for x in shapes}) != 1 or any(not (a <= b <= c) for a, b, c in zip(*shapes)):
            refuse(f'"profiles"[{i}]', profile, "min <= opt <= max, dimension by dimension")


def _read_sidecar(side: Path, plan: bytes, engine: Path) -> dict:
    try:
        metadata = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineFileError(f"{side}: the sidecar of {engine} is not valid UTF-8 JSON ({exc}); delete it to run the "
                              "plan unchecked, or rebuild the engine with `elfatt-deploy build`") from None
    if not isinstance(metadata, dict) or metadata.get("format") != SIDECAR_FORMAT:
        raise EngineFileError(f"{side} is not an elfatt-deploy engine sidecar (no \"format\": \"{SIDECAR_FORMAT}\"); "
                              "move it away to run the plan unchecked")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > SIDECAR_VERSION:
        raise EngineFileError(f"{side}: sidecar format version {version!r} is newer than this elfatt-deploy reads "
                              f"({SIDECAR_VERSION}); upgrade elfatt-deploy")
    check_sidecar_fields(metadata, side)
    recorded = (metadata.get("plan") or {}).get("sha256")
    actual = sha256_bytes(plan)
    if recorded != actual:
        raise EngineFileError(
            f"{side} describes another plan than {engine} (plan SHA-256 {actual[:16]}..., the sidecar records "
            f"{str(recorded)[:16]}...): the engine was replaced after the sidecar was written. Rebuild it with "
            "`elfatt-deploy build` (validate and bench also run a plan whose sidecar is moved away, unchecked; triton and "
            "deepstream need the sidecar)"
        )
    return metadata


def load_engine(path: str | os.PathLike) -> EngineFile:
    """Reads an engine of any of the three kinds (module docstring); raises FileNotFoundError / EngineFileError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"engine file {path} does not exist; build one with `elfatt-deploy build MODEL.onnx -o {path}`")
    data = path.read_bytes()
    if not data:
        raise EngineFileError(f"{path} is empty (0 bytes): not a TensorRT plan; rebuild it with `elfatt-deploy build`")
    side = sidecar_path(path)
    if has_legacy_header(data):
        metadata, plan = decode_engine(data, source=str(path))
        warnings = [f"{path} is in the old elfatt-deploy header format, which only elfatt-deploy reads; rebuild it "
                    "with `elfatt-deploy build` for a plain plan that trtexec, Triton and DeepStream load"]
        if side.exists():
            warnings.append(f"{side} is ignored: the old format carries its metadata inside the file")
        return EngineFile(path, plan, metadata, SOURCE_LEGACY, warnings)
    if side.is_file():
        return EngineFile(path, data, _read_sidecar(side, data, path), SOURCE_SIDECAR)
    other = describe_non_plan(data)
    if other:
        raise EngineFileError(f"{path} is {other}".replace("FILE", str(path)))
    return EngineFile(path, data, {}, SOURCE_NONE, [
        f"{path} has no sidecar ({side.name}): a plan from trtexec or Polygraphy, or one copied without it. It runs, "
        "but its TensorRT version, GPU and plugin version cannot be checked against this machine"
    ])


def read_engine_file(path: str | os.PathLike) -> tuple[dict, bytes]:
    """``(metadata, plan)`` of an engine; metadata is {} for a plan without a sidecar."""
    engine = load_engine(path)
    return engine.metadata, engine.plan


def read_engine_metadata(path: str | os.PathLike) -> dict:
    """The metadata only ({} for a plan without a sidecar); checks the sidecar's plan hash like load_engine."""
    return load_engine(path).metadata


#: Why an engine's metadata cannot say whether TF32 was allowed (EngineTf32Record.why_unknown).
TF32_NO_SIDECAR = "no sidecar"
TF32_NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class EngineRecord:
    """What validate needs from an engine's metadata, read without hashing the plan (the runner checks that).

    ``tf32`` is the sidecar's "tf32" (``build --tf32``), or None when not known: ``why_unknown`` is
    TF32_NO_SIDECAR (a plan from trtexec, which allows TF32 unless --noTF32, or Polygraphy) or
    TF32_NOT_RECORDED (a sidecar or old-format header written before the key; those builds left
    TensorRT's default, TF32 allowed). A missing or unreadable engine gives False: the runner then says
    what is wrong with it. ``precision`` is the recorded precision and ``source_onnx_sha256`` the hash of
    the ONNX it was built from (the sidecar's ``source_onnx.sha256``) and ``source_onnx_path`` its path, if
    recorded, ``model_name`` the model it is an export of."""

    tf32: Optional[bool]
    why_unknown: Optional[str] = None
    precision: Optional[str] = None
    source_onnx_sha256: Optional[str] = None
    source_onnx_path: Optional[str] = None
    model_name: Optional[str] = None  # the ONNX's elfatt.model_name, as the sidecar keeps it under "model"


def engine_record(path: str | os.PathLike) -> EngineRecord:
    """The record of the metadata load_engine would use: an old-format header first, else the sidecar."""
    path = Path(path)
    side = sidecar_path(path)
    try:
        with open(path, "rb") as handle:
            legacy = has_legacy_header(handle.read(len(ENGINE_MAGIC)))
        if legacy:
            metadata = load_engine(path).metadata  # the old format: its metadata is inside the file
        elif side.is_file():
            metadata = json.loads(side.read_text(encoding="utf-8"))
            if not isinstance(metadata, dict) or metadata.get("format") != SIDECAR_FORMAT:
                return EngineRecord(False)  # not our sidecar: load_engine refuses it with the reason
        else:
            return EngineRecord(None, TF32_NO_SIDECAR)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, EngineFileError):
        return EngineRecord(False)

    from .metadata import source_onnx_path  # noqa: PLC0415  (it imports onnx, which plain engine reads need not)

    def text(value) -> Optional[str]:
        return value if isinstance(value, str) and value else None

    precision = text(metadata.get("precision"))
    source = metadata.get("source_onnx")  # {"path", "sha256"} (engine/metadata.py); a plain path in old headers
    source_sha256 = text(source.get("sha256")) if isinstance(source, Mapping) else None
    source_path = text(source_onnx_path(metadata))
    model = metadata.get("model")
    model_name = text(model.get("elfatt.model_name")) if isinstance(model, Mapping) else None
    value = metadata.get("tf32")
    if isinstance(value, bool):
        return EngineRecord(value, None, precision, source_sha256, source_path, model_name)
    return EngineRecord(None, TF32_NOT_RECORDED, precision, source_sha256, source_path, model_name)
