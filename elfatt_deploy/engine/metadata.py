"""The metadata an engine's sidecar records (engine_file.py writes it next to the plan)."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Mapping, Optional, Sequence

from .._version import OP_VERSION, __version__
from .onnx_prep import InputSpec
from .profiles import Profile

#: Keys build_metadata owns; ``extra`` may not replace them (int8 adds e.g. "calibration").
CORE_KEYS = frozenset({
    "format", "format_version", "plan", "toolkit_version", "op_version", "created", "tensorrt_version", "gpu",
    "jetson", "plugin", "precision", "tf32", "strongly_typed", "input", "io", "profiles", "model", "source_onnx",
    "build_command", "workspace_mb",
})


def precision_from_onnx(props: Mapping[str, str], input_spec: InputSpec) -> str:
    """The export precision recorded in metadata_props, else guessed from the input dtype."""
    for key in ("precision", "elfatt.precision", "elfatt_deploy.precision"):
        if props.get(key):
            return str(props[key])
    return {"float16": "fp16", "float32": "fp32", "bfloat16": "bf16"}.get(input_spec.dtype, input_spec.dtype)


def plugin_record(plugin: Optional[Mapping]) -> dict:
    """``{"used": False}``, or the plugin's name, version, namespace, library file name, path and SHA-256."""
    if not plugin:
        return {"used": False}
    path = str(plugin.get("path", ""))
    return {"used": True, "name": "ElfattAttention", "version": str(plugin.get("version", OP_VERSION)),
            "namespace": "", "library": path.rsplit("/", 1)[-1], "library_path": path,
            "library_sha256": plugin.get("sha256"), "library_tensorrt_major": plugin.get("tensorrt_major")}


def quantization_from_onnx(props: Mapping[str, str]) -> Optional[dict]:
    """For a file from ``elfatt-deploy quantize`` (precision int8-qdq): how it was quantized and on
    which calibration set (image count and sha256), as recorded in its metadata_props; else None."""
    if props.get("elfatt.precision") != "int8-qdq":
        return None
    try:
        calibration = json.loads(props.get("elfatt.calibration", "{}"))
    except ValueError:
        calibration = {}
    images = props.get("elfatt.calibration_images")
    return {
        "mode": "explicit Q/DQ (strongly typed INT8)",
        "base_precision": props.get("elfatt.base_precision"),
        "quantizer": props.get("elfatt.quantizer"),
        "calibration_images": int(images) if images and images.isdigit() else None,
        "calibration_sha256": props.get("elfatt.calibration_sha256"),
        "calibration_method": calibration.get("method"),
        "quantized_nodes": int(props["elfatt.quantized_nodes"]) if props.get("elfatt.quantized_nodes", "").isdigit() else None,
        # 7-bit weights (quantize --reduce-range, for CPUs without VNNI); False for files from before the key
        "reduce_range": props.get("elfatt.reduce_range") == "true",
    }


def build_metadata(
    *,
    tensorrt_version: str,
    gpu: Optional[Mapping],
    jetson: Optional[Mapping],
    plugin: Optional[Mapping],
    input_spec: InputSpec,
    profiles: list[Profile],
    onnx_props: Mapping[str, str],
    source_onnx: str,
    build_command: list[str],
    workspace_mb: Optional[int],
    io: Sequence[Mapping] = (),
    source_onnx_sha256: Optional[str] = None,
    precision: Optional[str] = None,
    tf32: bool = False,
    extra: Optional[Mapping] = None,
    created: Optional[str] = None,
) -> dict:
    """The sidecar dict. ``plugin`` is load_plugin's result (path, version, sha256) when the plugin is used,
    else None; ``io`` lists the network's tensors ({name, mode, dtype, shape} with -1 for dynamic dims);
    ``precision`` overrides the one read from the ONNX (e.g. "int8-qdq"); ``tf32`` whether the build let FP32
    layers use TF32 (BuilderFlag.TF32); ``extra`` adds keys of its own."""
    metadata = {
        "toolkit_version": __version__,
        "op_version": OP_VERSION,
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tensorrt_version": tensorrt_version,
        "gpu": dict(gpu) if gpu else None,
        "jetson": dict(jetson) if jetson else None,
        "plugin": plugin_record(plugin),
        "precision": precision or precision_from_onnx(onnx_props, input_spec),
        "quantization": quantization_from_onnx(onnx_props),
        "tf32": bool(tf32),
        "strongly_typed": True,
        "input": input_spec.to_dict(),
        "io": [dict(t) for t in io],
        "profiles": [p.to_dict() for p in profiles],
        "model": dict(onnx_props),
        "source_onnx": {"path": source_onnx, "sha256": source_onnx_sha256},
        "build_command": list(build_command),
        "workspace_mb": workspace_mb,
    }
    clash = sorted(set(extra or {}) & CORE_KEYS)
    if clash:
        raise ValueError(f"extra engine metadata may not replace {', '.join(clash)}")
    metadata.update(extra or {})
    return metadata


def source_onnx_path(metadata: Mapping) -> Optional[str]:
    """The source ONNX path of a sidecar (``source_onnx`` was a plain string in the old header format)."""
    value = metadata.get("source_onnx")
    if isinstance(value, Mapping):
        return value.get("path")
    return value or None
