"""Recognising files that are certainly not a TensorRT plan, before TensorRT is asked to load them.

TensorRT does not publish its plan format, so nothing here says a file *is* a plan. What it can say
is that a file is something else that people pass as ``--engine`` by mistake: the ONNX model the
engine was meant to be built from, a PyTorch checkpoint, a safetensors file, the plugin library, the
engine's own JSON sidecar or another text file. Without this check such a file reaches
``IRuntime.deserialize_cuda_engine``, which fails with "Magic tag does not match", or is reported by
``doctor --engine`` as a plan without a sidecar.
"""

from __future__ import annotations

from typing import Optional

ZIP_MAGIC = b"PK\x03\x04"
ELF_MAGIC = b"\x7fELF"
#: How much of the file's start the text check reads, and the least it needs (shorter files are not judged).
TEXT_PROBE_BYTES = 4096
TEXT_MIN_BYTES = 16


def _is_onnx_model(data: bytes) -> bool:
    """A ModelProto that parses and has an opset import and a graph with nodes. ONNX writers emit
    ir_version (field 1, varint: tag byte 0x08) first; anything else is not parsed at all."""
    if not data.startswith(b"\x08"):
        return False
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return False
    return model.ir_version > 0 and len(model.opset_import) > 0 and len(model.graph.node) > 0


def _is_safetensors(data: bytes) -> bool:
    """8-byte little-endian header length, then a JSON object of that length (padded with spaces)."""
    if len(data) < 10:
        return False
    length = int.from_bytes(data[:8], "little")
    if not 2 <= length <= len(data) - 8 or data[8:9] != b"{":
        return False
    return data[8:8 + length].rstrip(b" ").endswith(b"}")


def _is_text(data: bytes) -> bool:
    if len(data) < TEXT_MIN_BYTES:
        return False
    probe = data[3:TEXT_PROBE_BYTES] if data.startswith(b"\xef\xbb\xbf") else data[:TEXT_PROBE_BYTES]  # UTF-8 BOM
    try:
        text = probe.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the probe's end is still text.
        try:
            text = probe[:-3].decode("utf-8") if len(probe) == TEXT_PROBE_BYTES else None
        except UnicodeDecodeError:
            text = None
        if text is None:
            return False
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text)


def describe_non_plan(data: bytes) -> Optional[str]:
    """What ``data`` is instead of a TensorRT plan, as a phrase, with what to do; None when it may be a plan."""
    data = bytes(data)
    if data.startswith(ELF_MAGIC):
        return ("an ELF shared library or program (the plugin library libelfatt_trt_plugin.so?), not a TensorRT plan; "
                "give the plugin with --plugin PATH and the engine with --engine PATH")
    if data.startswith(ZIP_MAGIC):
        return ("a ZIP archive (a PyTorch checkpoint written by torch.save?), not a TensorRT plan; export it to ONNX "
                "with `elfatt-deploy export --checkpoint FILE`, then build an engine with `elfatt-deploy build`")
    if _is_safetensors(data):
        return ("a safetensors checkpoint, not a TensorRT plan; export it to ONNX with `elfatt-deploy export "
                "--checkpoint FILE`, then build an engine with `elfatt-deploy build`")
    if _is_onnx_model(data):
        return ("an ONNX model, not a TensorRT plan; build an engine from it with `elfatt-deploy build FILE -o "
                "model.engine` (validate and bench also run the ONNX file itself, with --backend onnxruntime)")
    if _is_text(data):
        kind = "a JSON file (an engine's sidecar?)" if data.lstrip()[:1] in (b"{", b"[") else "a text file"
        return f"{kind}, not a TensorRT plan (a plan is binary); give the .engine or .plan file itself"
    return None


def check_engine_argument(path, *, what: str = "--engine") -> None:
    """Bad input before any runtime is asked: FileNotFoundError for a missing file, InputError (exit 2) for
    one that is certainly not a TensorRT plan (an ONNX model, a checkpoint, the plugin, text) -- so that a
    machine without TensorRT names the wrong file too instead of only saying that TensorRT is missing."""
    from pathlib import Path

    from ..errors import InputError

    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist or is not a file; give a TensorRT engine "
                                "(`elfatt-deploy build` writes one)")
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if not head:
        raise InputError(f"{what} {str(path)!r} is empty (0 bytes): not a TensorRT plan; rebuild it with "
                         "`elfatt-deploy build`")
    other = describe_non_plan(head if len(head) < (1 << 20) else Path(path).read_bytes())
    if other:
        raise InputError(f"{what} {str(path)!r} is {other}".replace("FILE", str(path)))
