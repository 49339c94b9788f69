"""TensorRT engines for elfatt-deploy models.

One job per module:

- ``engine_file``: the ``.engine`` file format (metadata header + TensorRT plan).
- ``environment``: what this machine runs (TensorRT version, GPU, Jetson release).
- ``compat``: whether an engine's metadata matches the running environment.
- ``profiles``: optimization-profile shapes (``--shapes``) and their checks.
- ``onnx_prep``: reading the ONNX input spec and removing the elfatt local function.
- ``plugin``: finding and loading ``libelfatt_trt_plugin.so`` into the registry.
- ``progress``: a tqdm-driven ``trt.IProgressMonitor``.
- ``builder``: ONNX -> strongly typed engine.
- ``trt_api``: TensorRT version differences (network flags) and the process-wide logger.

Everything except ``builder``, ``progress`` and ``plugin.load_plugin`` runs without TensorRT.
"""

from .compat import EngineIncompatibleError, check_compatibility, require_compatible
from .engine_file import ENGINE_MAGIC, EngineFileError, read_engine_file, write_engine_file
from .plugin import PLUGIN_LIBRARY_NAME, PLUGIN_NAME, PluginLoadError, find_plugin_library
from .profiles import Profile, parse_profile_spec

__all__ = [
    "ENGINE_MAGIC",
    "EngineFileError",
    "EngineIncompatibleError",
    "PLUGIN_LIBRARY_NAME",
    "PLUGIN_NAME",
    "PluginLoadError",
    "Profile",
    "check_compatibility",
    "find_plugin_library",
    "parse_profile_spec",
    "read_engine_file",
    "require_compatible",
    "write_engine_file",
]
