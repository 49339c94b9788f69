"""Whether an engine can run here: its metadata against the running environment.

TensorRT engines are specific to the TensorRT version and the GPU they were built
with (TensorRT refuses, or worse, misbehaves on another; hardware- and
version-compatible engines are not used by this toolkit). The plugin's op
contract version must match too. These rules are pure functions of two dicts.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Mapping, Optional


class EngineIncompatibleError(ValueError):
    """The engine was built for another TensorRT, GPU or plugin version."""


@dataclass(frozen=True)
class Issue:
    severity: str  # "error" or "warning"
    what: str  # "tensorrt", "gpu", "plugin"
    message: str


def version_parts(version: str) -> tuple[int, ...]:
    """The leading numeric parts of a version string: '10.3.0.30' -> (10, 3, 0, 30), '1.20.1rc1' -> (1, 20, 1)."""
    parts = []
    for piece in str(version).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece else ""
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)


def check_compatibility(metadata: Mapping, env: Mapping) -> list[Issue]:
    """Compares engine ``metadata`` with ``env`` (see ``environment.current_environment``).

    Errors: TensorRT major.minor.patch differ; GPU compute capability differs; the
    engine uses the plugin and the loaded plugin's version differs (or none is loaded).
    Warnings: TensorRT build number differs; same compute capability on a GPU of another name.
    """
    issues: list[Issue] = []
    built_trt = metadata.get("tensorrt_version")
    run_trt = env.get("tensorrt_version")
    if run_trt is None:
        issues.append(Issue("error", "tensorrt", "TensorRT is not installed here (cannot import tensorrt)"))
    elif not built_trt:
        issues.append(Issue("error", "tensorrt", "the engine metadata does not say which TensorRT built it"))
    else:
        b, r = version_parts(built_trt), version_parts(run_trt)
        if b[:3] != r[:3]:
            issues.append(Issue("error", "tensorrt", f"built with TensorRT {built_trt}, running TensorRT {run_trt}"))
        elif b != r:
            issues.append(Issue("warning", "tensorrt", f"built with TensorRT {built_trt}, running {run_trt} (same release, other build)"))

    built_gpu = metadata.get("gpu") or {}
    run_gpu = env.get("gpu")
    if run_gpu is None:
        issues.append(Issue("error", "gpu", "no CUDA GPU is visible here"))
    elif not built_gpu.get("compute_capability"):
        issues.append(Issue("error", "gpu", "the engine metadata does not say which GPU it was built for"))
    elif str(built_gpu["compute_capability"]) != str(run_gpu.get("compute_capability")):
        issues.append(Issue(
            "error", "gpu",
            f"built for {built_gpu.get('name', '?')} (compute capability {built_gpu['compute_capability']}), "
            f"running on {run_gpu.get('name', '?')} (compute capability {run_gpu.get('compute_capability')})",
        ))
    elif built_gpu.get("name") and run_gpu.get("name") and built_gpu["name"] != run_gpu["name"]:
        issues.append(Issue(
            "warning", "gpu",
            f"built on {built_gpu['name']}, running on {run_gpu['name']} (same compute capability "
            f"{run_gpu.get('compute_capability')}; kernels were tuned for the other GPU, latency may differ)",
        ))

    plugin = metadata.get("plugin") or {}
    if plugin.get("used"):
        run_plugin = env.get("plugin_version")
        if run_plugin is None:
            issues.append(Issue("error", "plugin", f"the engine uses the ElfattAttention plugin (version {plugin.get('version')}) but no plugin is loaded"))
        elif str(run_plugin) != str(plugin.get("version")):
            issues.append(Issue("error", "plugin", f"built with ElfattAttention plugin version {plugin.get('version')}, the loaded plugin is version {run_plugin} (load the plugin library the engine was built with, or rebuild the engine)"))
    return issues


def rebuild_command(metadata: Mapping, engine_path: Optional[str] = None) -> str:
    """The command that rebuilds this engine here (from the metadata's recorded build command)."""
    recorded = metadata.get("build_command")
    if isinstance(recorded, list) and recorded:
        return shlex.join(str(a) for a in recorded)
    from .metadata import source_onnx_path  # noqa: PLC0415

    onnx = source_onnx_path(metadata) or "MODEL.onnx"
    return shlex.join(["elfatt-deploy", "build", str(onnx), "-o", str(engine_path or "MODEL.engine")])


def require_compatible(metadata: Mapping, env: Mapping, *, engine_path: Optional[str] = None) -> list[Issue]:
    """Raises EngineIncompatibleError listing every error (and what to rebuild); returns the warnings."""
    issues = check_compatibility(metadata, env)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        where = f"engine {engine_path}" if engine_path else "the engine"
        lines = "; ".join(f"{i.what}: {i.message}" for i in errors)
        fixable = any(i.what in ("tensorrt", "gpu", "plugin") for i in errors) and env.get("tensorrt_version") and env.get("gpu")
        advice = (
            f" Rebuild it on this machine (an engine must be built with the TensorRT version and on the GPU it runs on): "
            f"{rebuild_command(metadata, engine_path)}"
            if fixable else " Run it on a machine with TensorRT and a CUDA GPU (see `elfatt-deploy doctor`)."
        )
        raise EngineIncompatibleError(f"{where} cannot run here: {lines}.{advice}")
    return [i for i in issues if i.severity == "warning"]


def plugin_library_warning(metadata: Mapping, plugin_info: Optional[Mapping]) -> Optional[str]:
    """A note when the loaded plugin library is not the file the engine was built with (same plugin version,
    so it loads; a rebuilt library may still differ in its kernels)."""
    recorded = (metadata.get("plugin") or {}).get("library_sha256")
    loaded = (plugin_info or {}).get("sha256")
    if not recorded or not loaded or recorded == loaded:
        return None
    return (f"the plugin library {plugin_info.get('path')} is not the one the engine was built with (SHA-256 "
            f"{loaded[:12]}... vs {recorded[:12]}... recorded); same plugin version, so it runs, but results and speed "
            "may differ from the build's")
