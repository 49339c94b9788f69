"""Finding ``libelfatt_trt_plugin.so`` and loading it into TensorRT's plugin registry.

Search order when no path is given: ``$ELFATT_PLUGIN_PATH`` (a file, or a
directory holding the library; several joined by ':'), then
``plugins/build/**/libelfatt_trt_plugin.so`` (and ``build/tensorrt/``) in the
repository checkout this package was installed from, then the system library path (LD_LIBRARY_PATH,
the ldconfig cache). Loading is never silent: after loading, the
``ElfattAttention`` creator must be in the registry, else PluginLoadError says
which path was tried and what each loading way reported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Optional

from .._version import OP_VERSION
from ..errors import ToolkitError

PLUGIN_NAME = "ElfattAttention"
PLUGIN_VERSION = OP_VERSION
PLUGIN_NAMESPACE = ""
PLUGIN_LIBRARY_NAME = "libelfatt_trt_plugin.so"
ENV_VAR = "ELFATT_PLUGIN_PATH"

#: Handles of loaded libraries, kept alive for the life of the process.
_LOADED: dict[str, object] = {}


class PluginLoadError(ToolkitError):
    """The plugin library was not found, or loading it did not register the ElfattAttention creator."""


class PluginNotFoundError(PluginLoadError, FileNotFoundError):
    """The search found no plugin library (an environment problem: exit 3; an explicit path that does
    not exist stays a plain FileNotFoundError, bad input)."""


def repo_root() -> Optional[Path]:
    """The repository checkout this package runs from (an editable install), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "plugins").is_dir() else None


def _system_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) for p in ("/usr/local/lib", "/usr/lib", "/usr/local/lib64", "/usr/lib64")]
    return dirs


def candidate_paths(*, env: Optional[dict] = None, root: Optional[Path] = None, system_dirs=None) -> list[tuple[str, list[Path]]]:
    """The search, as (description, [paths]) steps in order; globbed, not yet checked for existence."""
    env = os.environ if env is None else env
    steps: list[tuple[str, list[Path]]] = []
    env_value = env.get(ENV_VAR, "")
    if env_value:
        paths = []
        for entry in (p for p in env_value.split(os.pathsep) if p):
            entry_path = Path(entry).expanduser()
            paths.append(entry_path / PLUGIN_LIBRARY_NAME if entry_path.is_dir() else entry_path)
        steps.append((f"${ENV_VAR}={env_value}", paths))
    else:
        steps.append((f"${ENV_VAR} (not set)", []))
    root = repo_root() if root is None else root
    if root is not None:
        build = Path(root) / "plugins" / "build"
        found = sorted(build.glob(f"**/{PLUGIN_LIBRARY_NAME}")) if build.is_dir() else []
        steps.append((f"{build}/**/{PLUGIN_LIBRARY_NAME}", found))
        # docs/plugin.md's example build directory (cmake -S plugins -B build)
        steps.append((f"{Path(root) / 'build'}/tensorrt/", [Path(root) / "build" / "tensorrt" / PLUGIN_LIBRARY_NAME]))
    else:
        steps.append(("plugins/build/** (no repository checkout around this installed package)", []))
    dirs = _system_dirs() if system_dirs is None else [Path(d) for d in system_dirs]
    system = [d / PLUGIN_LIBRARY_NAME for d in dirs]
    if system_dirs is None:
        found_name = ctypes.util.find_library("elfatt_trt_plugin")
        if found_name:
            system.append(Path(found_name))
    steps.append(("system library path (LD_LIBRARY_PATH, /usr/local/lib, /usr/lib, ldconfig)", system))
    return steps


def find_plugin_library(explicit: Optional[str | os.PathLike] = None, **search) -> Path:
    """Returns the plugin library path; raises PluginNotFoundError (a FileNotFoundError) listing everything tried."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_dir():
            path = path / PLUGIN_LIBRARY_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"plugin library {path} does not exist; build it with `cmake -S plugins -B plugins/build "
                "-DELFATT_BUILD_TRT_PLUGIN=ON && cmake --build plugins/build -j` or pass the right --plugin"
            )
        return path
    tried = []
    for description, paths in candidate_paths(**search):
        for path in paths:
            if path.is_file() or (not path.is_absolute() and path.name == str(path)):  # find_library gives a bare name
                return path
        tried.append(f"  {description}: " + (", ".join(str(p) for p in paths) if paths else "nothing there"))
    raise PluginNotFoundError(
        f"could not find {PLUGIN_LIBRARY_NAME}. Tried, in order:\n" + "\n".join(tried) + "\n"
        "Build it (cmake -S plugins -B plugins/build -DELFATT_BUILD_TRT_PLUGIN=ON && cmake --build plugins/build -j), "
        f"then pass --plugin PATH or set {ENV_VAR}; or build a plugin-free engine with --no-plugin"
    )


def find_creator(registry, name: str = PLUGIN_NAME, version: str = PLUGIN_VERSION, namespace: str = PLUGIN_NAMESPACE):
    """The registered creator (IPluginCreatorV3One or V2), or None."""
    for getter in ("get_creator", "get_plugin_creator"):
        get = getattr(registry, getter, None)
        if get is None:
            continue
        try:
            creator = get(name, version, namespace)
        except Exception:
            creator = None
        if creator is not None:
            return creator
    return None


def load_plugin(path: str | os.PathLike, *, registry=None) -> dict:
    """Loads the plugin library so that TensorRT's registry holds the ElfattAttention creator.

    ``registry.load_library`` first (runs the library's getCreators/setLoggerFinder);
    when it fails (e.g. the creators are already registered by an earlier dlopen),
    ``ctypes.CDLL`` (static registration) and a registry lookup. Returns how it was
    loaded; raises PluginLoadError with the path and every attempt's outcome otherwise.
    """
    path = Path(path)
    if path.exists():
        path = path.resolve()
    elif path.is_absolute() or os.sep in str(path):
        raise FileNotFoundError(f"plugin library {path} does not exist")
    if registry is None:
        import tensorrt as trt  # noqa: PLC0415

        registry = trt.get_plugin_registry()
    attempts = []
    if str(path) in _LOADED and find_creator(registry) is not None:
        return {"path": str(path), "how": "already loaded", "version": PLUGIN_VERSION}
    if find_creator(registry) is not None:
        attempts.append("the creator was already registered before loading")
    try:
        handle = registry.load_library(str(path))
    except Exception as exc:
        handle = None
        attempts.append(f"registry.load_library raised {type(exc).__name__}: {exc}")
    else:
        if handle is None:
            attempts.append("registry.load_library returned no handle (see the TensorRT log above)")
    if handle is not None:
        if find_creator(registry) is not None:
            _LOADED[str(path)] = handle
            return {"path": str(path), "how": "registry.load_library", "version": PLUGIN_VERSION}
        attempts.append("registry.load_library returned a handle but the creator is not in the registry")
    try:
        lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        attempts.append(f"ctypes.CDLL raised OSError: {exc}")
    else:
        if find_creator(registry) is not None:
            _LOADED[str(path)] = lib
            return {"path": str(path), "how": "ctypes.CDLL (static registration)", "version": PLUGIN_VERSION}
        attempts.append("ctypes.CDLL loaded the library but the creator is not in the registry")
    raise PluginLoadError(
        f"loading the TensorRT plugin {path} did not register the creator {PLUGIN_NAME!r} version "
        f"{PLUGIN_VERSION!r} namespace {PLUGIN_NAMESPACE!r}: " + "; ".join(attempts)
        + ". Check that the library was built against this TensorRT (ldd it for libnvinfer), or rebuild it."
    )
