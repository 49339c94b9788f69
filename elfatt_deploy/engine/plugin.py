"""Finding the plugin library and loading it into TensorRT's plugin registry.

The plugin comes as two libraries built from the same objects (docs/plugin.md), each loaded one
documented way:

- ``libelfatt_trt_plugin.so``: static registration (a load-time ``registerCreator``), for dlopen,
  ctypes, Polygraphy ``--plugins``, ``trtexec --staticPlugins``, Triton ``plugins=``, DeepStream
  ``custom-lib-path`` and ONNX Runtime's ``trt_extra_plugin_lib_paths``;
- ``libelfatt_trt_plugin_vc.so``: exports ``getCreators`` / ``setLoggerFinder`` and registers nothing
  itself, for ``IPluginRegistry::loadLibrary`` (``registry.load_library``), ``trtexec --dynamicPlugins``
  and ``--setPluginsToSerialize``.

:func:`load_plugin` reads which kind a file is from its exported symbols and loads it that way.

Search order when no path is given: ``$ELFATT_PLUGIN_PATH`` (a file, or a directory holding the
library; several joined by ':'), then ``plugins/build/**/`` (and ``build/tensorrt/``) in the
repository checkout this package was installed from, libraries built against the running TensorRT
major first, then the system library path (LD_LIBRARY_PATH, the ldconfig cache). Each candidate is
tried in turn until one registers the creator. Loading is never silent: after loading, the
``ElfattAttention`` creator must be in the registry, else PluginLoadError says which paths were
tried and what each reported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .._version import OP_VERSION
from ..errors import ToolkitError

PLUGIN_NAME = "ElfattAttention"
PLUGIN_VERSION = OP_VERSION
PLUGIN_NAMESPACE = ""
#: Static registration: dlopen / ctypes / Polygraphy / trtexec --staticPlugins / Triton / DeepStream / ORT-TRT.
PLUGIN_LIBRARY_NAME = "libelfatt_trt_plugin.so"
#: getCreators / setLoggerFinder: IPluginRegistry::loadLibrary / trtexec --dynamicPlugins / --setPluginsToSerialize.
VC_LIBRARY_NAME = "libelfatt_trt_plugin_vc.so"
LIBRARY_NAMES = (PLUGIN_LIBRARY_NAME, VC_LIBRARY_NAME)
STYLE_STATIC = "static registration"
STYLE_GET_CREATORS = "getCreators"
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


@dataclass(frozen=True)
class LibraryInfo:
    """What a plugin library's ELF headers say (None where they could not be read)."""

    path: Path
    style: Optional[str]  # STYLE_STATIC, STYLE_GET_CREATORS, or None (not an ELF shared library)
    tensorrt_major: Optional[int]  # from DT_NEEDED libnvinfer.so.<major>
    machine: Optional[str]  # "x86_64", "aarch64", ...
    exports: tuple[str, ...] = ()
    error: Optional[str] = None


_MACHINES = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64"}


def library_info(path: str | os.PathLike) -> LibraryInfo:
    """The registration style (from the exported symbols), TensorRT major (DT_NEEDED) and CPU of a library."""
    path = Path(path)
    try:
        from elftools.common.exceptions import ELFError  # noqa: PLC0415
        from elftools.elf.dynamic import DynamicSection  # noqa: PLC0415
        from elftools.elf.elffile import ELFFile  # noqa: PLC0415
        from elftools.elf.sections import SymbolTableSection  # noqa: PLC0415
    except ImportError:  # a dependency of elfatt-deploy; without it, go by the documented file names
        style = STYLE_GET_CREATORS if path.name == VC_LIBRARY_NAME else STYLE_STATIC
        return LibraryInfo(path, style, None, None, error="pyelftools is not installed: kind taken from the file name")
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            machine = _MACHINES.get(elf["e_machine"], str(elf["e_machine"]).replace("EM_", "").lower())
            needed, exports = [], []
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    needed += [t.needed for t in section.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
                elif isinstance(section, SymbolTableSection) and section.name == ".dynsym":
                    exports += [sym.name for sym in section.iter_symbols()
                                if sym.name and sym["st_shndx"] != "SHN_UNDEF"
                                and sym["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")]
    except (OSError, ELFError, ValueError, KeyError) as exc:
        return LibraryInfo(path, None, None, None, error=f"not a readable ELF shared library ({type(exc).__name__}: {exc})")
    majors = [int(m.group(1)) for n in needed if (m := re.fullmatch(r"libnvinfer\.so\.(\d+)", n))]
    style = STYLE_GET_CREATORS if "getCreators" in exports else STYLE_STATIC
    return LibraryInfo(path, style, majors[0] if majors else None, machine, tuple(sorted(exports)))


def _running_tensorrt_major() -> Optional[int]:
    from .environment import tensorrt_version  # noqa: PLC0415

    version = tensorrt_version()
    try:
        return int(str(version).split(".")[0]) if version else None
    except ValueError:
        return None


def prefer_major(paths: Iterable[Path], major: Optional[int]) -> list[Path]:
    """``paths`` with the libraries built against TensorRT ``major`` first, unknown ones next, others last
    (stable otherwise)."""
    paths = list(paths)
    if major is None:
        return paths

    def rank(path: Path) -> int:
        built = library_info(path).tensorrt_major
        return 0 if built == major else (1 if built is None else 2)

    return sorted(paths, key=rank)


def candidate_paths(*, env: Optional[dict] = None, root: Optional[Path] = None, system_dirs=None,
                    name: str = PLUGIN_LIBRARY_NAME, tensorrt_major: Optional[int] = None) -> list[tuple[str, list[Path]]]:
    """The search for library ``name``, as (description, [paths]) steps in order; not yet checked for existence.

    Several builds under plugins/build (one per TensorRT version, say) are ordered by
    :func:`prefer_major` with ``tensorrt_major`` (the running TensorRT's, when None and importable)."""
    env = os.environ if env is None else env
    steps: list[tuple[str, list[Path]]] = []
    env_value = env.get(ENV_VAR, "")
    if env_value:
        paths = []
        for entry in (p for p in env_value.split(os.pathsep) if p):
            entry_path = Path(entry).expanduser()
            paths.append(entry_path / name if entry_path.is_dir() else entry_path)
        steps.append((f"${ENV_VAR}={env_value}", paths))
    else:
        steps.append((f"${ENV_VAR} (not set)", []))
    root = repo_root() if root is None else root
    if root is not None:
        build = Path(root) / "plugins" / "build"
        found = sorted(build.glob(f"**/{name}")) if build.is_dir() else []
        if len(found) > 1:
            found = prefer_major(found, _running_tensorrt_major() if tensorrt_major is None else tensorrt_major)
        steps.append((f"{build}/**/{name}", found))
        # docs/plugin.md's example build directory (cmake -S plugins -B build)
        steps.append((f"{Path(root) / 'build'}/tensorrt/", [Path(root) / "build" / "tensorrt" / name]))
    else:
        steps.append(("plugins/build/** (no repository checkout around this installed package)", []))
    dirs = _system_dirs() if system_dirs is None else [Path(d) for d in system_dirs]
    system = [d / name for d in dirs]
    if system_dirs is None:
        found_name = ctypes.util.find_library(name[3:-3])
        if found_name:
            system.append(Path(found_name))
    steps.append(("system library path (LD_LIBRARY_PATH, /usr/local/lib, /usr/lib, ldconfig)", system))
    return steps


_BUILD_HINT = ("Build it (cmake -S plugins -B plugins/build -DELFATT_BUILD_TRT_PLUGIN=ON && cmake --build plugins/build -j), "
               f"then pass --plugin PATH or set {ENV_VAR}; or build a plugin-free engine with --no-plugin")


def find_plugin_libraries(explicit: Optional[str | os.PathLike] = None, *, name: str = PLUGIN_LIBRARY_NAME,
                          **search) -> list[Path]:
    """Every existing candidate, in the order to try them; raises PluginNotFoundError listing everything tried.

    ``explicit`` (``--plugin``) is a file, or a directory holding ``name`` (else the other library)."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_dir():
            inside = [path / n for n in (name, *LIBRARY_NAMES) if (path / n).is_file()]
            path = inside[0] if inside else path / name
        if not path.is_file():
            raise FileNotFoundError(
                f"plugin library {path} does not exist; build it with `cmake -S plugins -B plugins/build "
                "-DELFATT_BUILD_TRT_PLUGIN=ON && cmake --build plugins/build -j` or pass the right --plugin"
            )
        return [path]
    tried, found = [], []
    for description, paths in candidate_paths(name=name, **search):
        hits = [p for p in paths if p.is_file() or (not p.is_absolute() and p.name == str(p))]  # find_library: bare name
        found += [p for p in hits if p not in found]
        tried.append(f"  {description}: " + (", ".join(str(p) for p in paths) if paths else "nothing there"))
    if not found:
        raise PluginNotFoundError(f"could not find {name}. Tried, in order:\n" + "\n".join(tried) + "\n" + _BUILD_HINT)
    return found


def find_plugin_library(explicit: Optional[str | os.PathLike] = None, **search) -> Path:
    """The first candidate of :func:`find_plugin_libraries`."""
    return find_plugin_libraries(explicit, **search)[0]


def static_plugin_library(explicit: Optional[str | os.PathLike] = None, **search) -> Path:
    """The static-registration library (what ``trtexec --staticPlugins`` and ``ctypes`` loads need: it registers
    its creator when opened) for ``explicit``: a directory gives the file in it, the getCreators library its
    sibling; without ``explicit`` the usual search for it. Raises FileNotFoundError / PluginNotFoundError."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_dir():
            path = path / PLUGIN_LIBRARY_NAME
        elif path.name == VC_LIBRARY_NAME:
            path = path.with_name(PLUGIN_LIBRARY_NAME)
        if not path.is_file():
            raise FileNotFoundError(
                f"static-registration plugin library {path} does not exist (the getCreators build "
                f"{VC_LIBRARY_NAME} registers nothing when opened); build both with `cmake --build plugins/build`")
        return path
    return find_plugin_library(**search)


def _creators(registry) -> list:
    try:
        return list(registry.all_creators or [])
    except Exception:  # a registry that cannot list (should not happen on 10.x / 11.x)
        return []


def find_creator(registry, name: str = PLUGIN_NAME, version: str = PLUGIN_VERSION, namespace: str = PLUGIN_NAMESPACE):
    """The registered creator with this name, version and namespace, or None.

    Scans ``registry.all_creators`` (10.x and 11.x) instead of ``get_plugin_creator`` (deprecated, gone in 11,
    and it logs an error for every miss)."""
    for creator in _creators(registry):
        if (getattr(creator, "name", None), getattr(creator, "plugin_version", None),
                getattr(creator, "plugin_namespace", None)) == (name, version, namespace):
            return creator
    return None


def load_plugin(path: str | os.PathLike, *, registry=None) -> dict:
    """Loads one plugin library the way its kind documents, and checks the registry holds the creator.

    A static-registration library is opened with ``ctypes.CDLL`` (its load-time initializer registers
    the creator); a getCreators library with ``registry.load_library``. When the creator is already
    registered (an earlier load in this process), nothing is loaded. Returns {path, how, style, version,
    sha256, tensorrt_major}; raises FileNotFoundError or PluginLoadError saying what happened.
    """
    from .engine_file import sha256_file  # noqa: PLC0415

    path = Path(path)
    if path.exists():
        path = path.resolve()
    elif path.is_absolute() or os.sep in str(path):
        raise FileNotFoundError(f"plugin library {path} does not exist")
    if registry is None:
        import tensorrt as trt  # noqa: PLC0415

        registry = trt.get_plugin_registry()
    info = library_info(path)
    result = {"path": str(path), "style": info.style, "version": PLUGIN_VERSION, "tensorrt_major": info.tensorrt_major,
              "sha256": sha256_file(path) if path.is_file() else None}
    if find_creator(registry) is not None:
        loaded_here = str(path) in _LOADED
        return dict(result, how="already loaded" if loaded_here else "already registered in this process")
    if info.style is None:
        raise PluginLoadError(f"{path} is not a plugin library: {info.error}")
    if info.style == STYLE_GET_CREATORS:
        try:
            handle = registry.load_library(str(path))
        except Exception as exc:
            raise PluginLoadError(f"registry.load_library({path}) raised {type(exc).__name__}: {exc}") from None
        if handle is None:
            raise PluginLoadError(f"registry.load_library({path}) returned no handle; the TensorRT log above says why")
        how = "registry.load_library (getCreators)"
    else:
        try:
            handle = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise PluginLoadError(f"ctypes.CDLL({path}) failed: {exc}") from None
        how = "ctypes.CDLL (static registration)"
    if find_creator(registry) is None:
        raise PluginLoadError(
            f"{how} loaded {path}, but the registry holds no creator {PLUGIN_NAME!r} version {PLUGIN_VERSION!r} "
            f"namespace {PLUGIN_NAMESPACE!r} (the TensorRT log above says why; built against TensorRT "
            f"{info.tensorrt_major or '?'}: ldd it for libnvinfer, or rebuild it)"
        )
    _LOADED[str(path)] = handle
    return dict(result, how=how)


def load_first_plugin(candidates: Iterable[str | os.PathLike], *, registry=None) -> dict:
    """Tries each candidate library in order until one registers the creator; raises PluginLoadError listing
    every candidate's outcome."""
    outcomes = []
    for path in candidates:
        try:
            result = load_plugin(path, registry=registry)
        except (PluginLoadError, OSError) as exc:
            outcomes.append(f"  {path}: {exc}")
            continue
        if outcomes:
            result["skipped"] = [o.strip() for o in outcomes]
        return result
    raise PluginLoadError("no plugin library registered the ElfattAttention creator:\n" + "\n".join(outcomes)
                          + "\nCheck that the library was built against this TensorRT (ldd it for libnvinfer), or rebuild it.")
