"""TensorRT engines for elfatt-deploy models.

One job per module:

- ``engine_file``: engine files: the raw TensorRT plan plus a JSON sidecar (``model.engine.json``).
- ``legacy_header``: the old header format (magic + JSON + plan), read-only.
- ``metadata``: what the sidecar records.
- ``environment``: what this machine runs (TensorRT version, GPU, Jetson release).
- ``compat``: whether an engine's metadata matches the running environment.
- ``profiles``: optimization-profile shapes (``--shapes``) and their checks.
- ``onnx_prep``: reading the ONNX input spec and removing the elfatt local function.
- ``plugin``: finding and loading the plugin libraries (static-registration and getCreators builds).
- ``progress``: a tqdm-driven ``trt.IProgressMonitor``.
- ``builder``: ONNX -> strongly typed engine.
- ``trt_api``: TensorRT version differences (network flags) and the process-wide logger.

Everything except ``builder``, ``progress`` and ``plugin.load_plugin`` runs without TensorRT.
"""

from .compat import EngineIncompatibleError, check_compatibility, require_compatible
from .engine_file import (
    ENGINE_MAGIC,
    EngineFile,
    EngineFileError,
    load_engine,
    read_engine_file,
    sidecar_path,
    write_engine_file,
)
from .plugin import PLUGIN_LIBRARY_NAME, PLUGIN_NAME, VC_LIBRARY_NAME, PluginLoadError, find_plugin_library
from .profiles import Profile, parse_profile_spec

__all__ = [
    "ENGINE_MAGIC",
    "EngineFile",
    "EngineFileError",
    "EngineIncompatibleError",
    "PLUGIN_LIBRARY_NAME",
    "PLUGIN_NAME",
    "PluginLoadError",
    "VC_LIBRARY_NAME",
    "Profile",
    "check_compatibility",
    "find_plugin_library",
    "load_engine",
    "parse_profile_spec",
    "read_engine_file",
    "require_compatible",
    "sidecar_path",
    "write_engine_file",
]
