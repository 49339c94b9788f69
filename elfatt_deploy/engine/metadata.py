"""The metadata an engine carries in its header (see engine_file.py)."""

from __future__ import annotations

import datetime as _dt
from typing import Mapping, Optional

from .._version import OP_VERSION, __version__
from .onnx_prep import InputSpec
from .profiles import Profile

FORMAT_NAME = "elfatt-deploy engine"


def precision_from_onnx(props: Mapping[str, str], input_spec: InputSpec) -> str:
    """The export precision recorded in metadata_props, else guessed from the input dtype."""
    for key in ("precision", "elfatt.precision", "elfatt_deploy.precision"):
        if props.get(key):
            return str(props[key])
    return {"float16": "fp16", "float32": "fp32", "bfloat16": "bf16"}.get(input_spec.dtype, input_spec.dtype)


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
    created: Optional[str] = None,
) -> dict:
    """The header dict. ``plugin`` is ``{"path": ..., "how": ...}`` when the plugin is used, else None."""
    return {
        "format": FORMAT_NAME,
        "toolkit_version": __version__,
        "op_version": OP_VERSION,
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tensorrt_version": tensorrt_version,
        "gpu": dict(gpu) if gpu else None,
        "jetson": dict(jetson) if jetson else None,
        "plugin": (
            {"used": True, "name": "ElfattAttention", "version": plugin.get("version", OP_VERSION), "namespace": "",
             "library_hint": str(plugin.get("path", ""))}
            if plugin else {"used": False}
        ),
        "precision": precision_from_onnx(onnx_props, input_spec),
        "strongly_typed": True,
        "input": input_spec.to_dict(),
        "profiles": [p.to_dict() for p in profiles],
        "model": dict(onnx_props),
        "source_onnx": source_onnx,
        "build_command": list(build_command),
        "workspace_mb": workspace_mb,
    }
