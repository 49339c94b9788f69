"""What a serving config needs to know about an engine: its tensors, profile and GPU.

From the sidecar (engine/engine_file.py) when there is one, which needs no TensorRT; for a plan
without a sidecar (trtexec, Polygraphy) by deserializing it with TensorRT, where TensorRT and a
GPU are present.

Also the plugin library a serving config points at (``--plugin`` checked, or the plugin search).
Both serving tools (Triton's ``plugins=``, DeepStream's ``custom-lib-path``) dlopen it, so it must be
the static-registration build, ``libelfatt_trt_plugin.so``. The errors follow the exit-code scheme
(docs/cli.md): a ``--plugin`` path that does not exist is bad input (FileNotFoundError, exit 2); a
search that finds nothing is the environment (``PluginNotFoundError``, a ToolkitError: exit 3, as in
``build``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..engine.engine_file import EngineFile, load_engine
from ..engine.plugin import (ENV_VAR, PLUGIN_LIBRARY_NAME, STYLE_STATIC, LibraryInfo, PluginNotFoundError,
                             candidate_paths, find_plugin_library, library_info)
from ..engine.profiles import Profile
from ..errors import InputError


@dataclass
class EngineInfo:
    path: Path
    inputs: list[dict]  # {name, dtype (TensorRT name, e.g. "FLOAT"), shape (-1 = dynamic)}
    outputs: list[dict]
    profile: Profile  # of the (single) image input
    compute_capability: Optional[str]
    tensorrt_version: Optional[str]
    uses_plugin: Optional[bool]  # None: unknown (no sidecar)
    metadata: dict = field(default_factory=dict)
    plan: bytes = field(default=b"", repr=False)  # the raw plan

    @property
    def input(self) -> dict:
        return self.inputs[0]


def _from_sidecar(engine: EngineFile) -> EngineInfo:
    meta = engine.metadata
    io = meta.get("io") or []
    profiles = meta.get("profiles") or []
    if not io or not profiles:
        lacking = [f'"{key}" {"is empty" if key in meta else "is missing"}'
                   for key, value in (("io", io), ("profiles", profiles)) if not value]
        what = "network inputs/outputs" if not io else "optimization profile"
        raise InputError(
            f"{engine.path}: its sidecar lists no {what} ({' and '.join(lacking)}: an engine from an older "
            "elfatt-deploy, or a sidecar edited by hand); rebuild it with `elfatt-deploy build` to write a serving "
            "config for it"
        )
    return EngineInfo(
        path=engine.path,
        inputs=[t for t in io if t.get("mode") == "input"],
        outputs=[t for t in io if t.get("mode") == "output"],
        profile=Profile.from_dict(profiles[0]),
        compute_capability=(meta.get("gpu") or {}).get("compute_capability"),
        tensorrt_version=meta.get("tensorrt_version"),
        uses_plugin=bool((meta.get("plugin") or {}).get("used")),
        metadata=meta,
        plan=engine.plan,
    )


def _from_tensorrt(engine: EngineFile, plugin: Optional[str]) -> EngineInfo:
    """Deserializes the plan (loading the plugin when it can be found) and reads its I/O tensors."""
    from ..engine.environment import gpu_info  # noqa: PLC0415
    from ..engine.plugin import PluginLoadError, find_plugin_libraries, load_first_plugin  # noqa: PLC0415
    from ..engine.trt_api import _enum_name, get_logger  # noqa: PLC0415

    try:
        import tensorrt as trt  # noqa: PLC0415
    except Exception:
        raise InputError(
            f"{engine.path} has no sidecar ({engine.path.name}.json), so its inputs and outputs are unknown without "
            "TensorRT: keep the sidecar beside the plan, or run this where TensorRT and a GPU can read it"
        ) from None
    runtime = trt.Runtime(get_logger(trt))
    try:
        load_first_plugin(find_plugin_libraries(plugin), registry=trt.get_plugin_registry())
    except (FileNotFoundError, PluginLoadError):
        pass  # a plan without the plugin deserializes without it; one with it fails below, saying so
    cuda_engine = runtime.deserialize_cuda_engine(engine.plan)
    if cuda_engine is None:
        raise InputError(f"TensorRT could not deserialize {engine.path} (its log above says why; pass --plugin if it "
                         "uses the ElfattAttention plugin)")
    inputs, outputs, profile = [], [], None
    for index in range(cuda_engine.num_io_tensors):
        name = cuda_engine.get_tensor_name(index)
        record = {"name": name, "dtype": _enum_name(cuda_engine.get_tensor_dtype(name)),
                  "shape": [int(d) for d in cuda_engine.get_tensor_shape(name)]}
        if cuda_engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            inputs.append(record)
            if profile is None:
                profile = Profile(*(tuple(int(d) for d in s) for s in cuda_engine.get_tensor_profile_shape(name, 0)))
        else:
            outputs.append(record)
    gpu = gpu_info()
    return EngineInfo(engine.path, inputs, outputs, profile, gpu["compute_capability"] if gpu else None,
                      trt.__version__, None, plan=engine.plan)


def describe_engine(path, *, plugin: Optional[str] = None) -> EngineInfo:
    """The EngineInfo of an engine file; raises InputError / FileNotFoundError / EngineFileError on bad input."""
    engine = load_engine(path)
    info = _from_sidecar(engine) if engine.checkable else _from_tensorrt(engine, plugin)
    if len(info.inputs) != 1:
        raise InputError(f"{engine.path} has {len(info.inputs)} inputs; the serving configs are written for one image input")
    if not info.outputs:
        raise InputError(f"{engine.path} has no outputs")
    return info


BUILD_COMMAND = "cmake -S plugins -B plugins/build -DELFATT_BUILD_TRT_PLUGIN=ON && cmake --build plugins/build -j"


def check_plugin_path(path, *, what: str = "--plugin") -> Path:
    """An explicit ``--plugin``: an existing file, or a directory holding ``libelfatt_trt_plugin.so``."""
    given = Path(path).expanduser()
    if given.is_dir():
        inside = given / PLUGIN_LIBRARY_NAME
        if not inside.is_file():
            raise InputError(f"{what} {path} is a directory without {PLUGIN_LIBRARY_NAME} in it; give the library "
                             f"file itself, e.g. {what} plugins/build/tensorrt/{PLUGIN_LIBRARY_NAME}")
        return inside
    if not given.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; give the path of {PLUGIN_LIBRARY_NAME} "
                                f"(build it with `{BUILD_COMMAND}`)")
    if not given.is_file():
        raise InputError(f"{what} {path} is not a regular file; give the path of {PLUGIN_LIBRARY_NAME}")
    return given


def search_plugin(needed_by: str) -> Path:
    """The plugin search (engine/plugin.py); when it finds nothing, a one-line PluginNotFoundError (exit 3).

    ``needed_by`` starts the message, e.g. "the engine uses the ElfattAttention plugin, which nvinfer must load"."""
    try:
        return find_plugin_library()
    except PluginNotFoundError:
        where = "; ".join(description for description, _ in candidate_paths())
        raise PluginNotFoundError(
            f"{needed_by}, but {PLUGIN_LIBRARY_NAME} was not found (looked in: {where}); pass --plugin "
            f"PATH/{PLUGIN_LIBRARY_NAME} or set {ENV_VAR} (build it with `{BUILD_COMMAND}`)"
        ) from None


def check_static_registration(path: Path, *, what: str, how: str) -> LibraryInfo:
    """``library_info`` of ``path``, refusing a library that is not the static-registration build.

    ``how`` says why, e.g. "Triton's plugins= option dlopens the library"."""
    info = library_info(path)
    if info.style != STYLE_STATIC:
        raise InputError(f"{what} {path}: {how}, so it needs {PLUGIN_LIBRARY_NAME} (static registration), not "
                         + ("a getCreators build" if info.style else f"this file ({info.error})"))
    return info
