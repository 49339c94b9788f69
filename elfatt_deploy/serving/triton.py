"""A Triton Inference Server model repository for one or more engines of one model.

Layout written under ``REPO`` (docs/serving.md)::

    REPO/README.md                      the exact tritonserver commands, for every model in REPO
    REPO/NAME/config.pbtxt              platform "tensorrt_plan", I/O, batching, instances, parameters
    REPO/NAME/1/model.plan              one engine; or model.sm87.plan, model.sm90.plan ... with cc_model_filenames
    REPO/NAME/plugins/<cpu>/libelfatt_trt_plugin.so   the plugin (static registration: what plugins= dlopens)
    REPO/NAME/elfatt_triton.json        what README.md says of the model (rewritten from all of them each run)

Triton ignores subdirectories of a model that are not numerically named, so the plugin can live
beside the plans without being taken for a version. Batching follows the profile: a dynamic batch
dimension gives ``max_batch_size`` = the profile's max batch and dims without it; a static one
gives ``max_batch_size: 0`` and the full dims. The config is checked by parsing it with Triton's
own schema (tritonclient's model_config_pb2) in the tests.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .._version import __version__
from ..atomic import atomic_output, atomic_write_text, check_output_path
from ..errors import InputError
from ..engine.engine_file import sha256_file
from ..engine.profiles import Profile
from ..shapes import format_shape
from .engine_info import EngineInfo, check_plugin_path, check_static_registration, describe_engine, search_plugin

#: TensorRT DataType name -> Triton data_type (model_config.proto).
TRITON_DTYPES = {"FLOAT": "TYPE_FP32", "HALF": "TYPE_FP16", "BF16": "TYPE_BF16", "INT8": "TYPE_INT8",
                 "INT32": "TYPE_INT32", "INT64": "TYPE_INT64", "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8"}
INSTANCE_KINDS = ("KIND_GPU", "KIND_AUTO")


@dataclass
class TritonOptions:
    engines: Sequence[Path]
    repository: Path
    name: str
    version: int = 1
    instances: int = 1
    kind: str = "KIND_GPU"
    dynamic_batching: bool = False
    max_queue_delay_us: int = 100
    plugins: Sequence[Path] = field(default_factory=list)  # static-registration libraries, one per CPU architecture


#: Triton model names are directory names in the repository and go into URLs (/v2/models/NAME) and
#: command lines: letters, digits, '_', '-', '.', not starting with '.'.
MODEL_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _check_options(options: TritonOptions) -> None:
    """Every check that needs no engine: the flags, the --plugin files, the output directory (nothing written)."""
    name = options.name
    if not name or not MODEL_NAME.fullmatch(name):
        raise InputError(f"--name {name!r} must be a plain directory name (Triton's model name): letters, digits, "
                         "'_', '-' and '.', not starting with '.', e.g. --name vit_small")
    if options.version < 1:
        raise InputError(f"--version {options.version} must be >= 1 (Triton ignores version 0 and non-numbers)")
    if options.instances < 1:
        raise InputError(f"--instances {options.instances} must be >= 1")
    if options.kind not in INSTANCE_KINDS:
        raise InputError(f"--kind {options.kind!r} must be one of {', '.join(INSTANCE_KINDS)} (TensorRT runs on GPUs)")
    if options.max_queue_delay_us < 0:
        raise InputError(f"--max-queue-delay-us {options.max_queue_delay_us} must be >= 0")
    if not options.engines:
        raise InputError("give at least one engine")
    for plugin in options.plugins:
        check_plugin_path(plugin)
    _check_repository(Path(options.repository), name)


def _check_repository(repo: Path, name: str) -> None:
    """The model repository can be written: an existing writable directory, or a new one in an existing
    writable directory (as every command's output path, elfatt_deploy/atomic.py)."""
    if not str(repo).strip():
        raise InputError("-o is empty; give the model repository directory")
    if repo.exists():
        if not repo.is_dir():
            raise InputError(f"-o {repo} exists and is not a directory; give the model repository directory")
        check_output_path(repo / "README.md", what="-o")  # probes that the directory takes new files
        model_dir = repo / name
        if model_dir.exists() and not model_dir.is_dir():
            raise InputError(f"{model_dir} exists and is not a directory, so model {name!r} cannot be written there; "
                             "remove it or give another --name")
    else:
        check_output_path(repo, what="-o")  # its parent must exist and take a new directory


def _dims(shape: Sequence[int], profile: Profile, *, drop_batch: bool, is_input: bool) -> list[int]:
    """Triton dims: a dimension fixed by the profile keeps its size, a dynamic one is -1."""
    dims = [int(d) for d in shape]
    if is_input:
        dims = [lo if lo == hi else -1 for lo, hi in zip(profile.min, profile.max)]
    return dims[1:] if drop_batch else dims


def batch_layout(info: EngineInfo) -> tuple[int, dict[str, list[int]]]:
    """``(max_batch_size, {tensor name: dims})`` for one engine, from its profile (module docstring)."""
    profile = info.profile
    dynamic_batch = profile.min[0] != profile.max[0]
    dims = {}
    for tensor in info.inputs + info.outputs:
        shape = tensor["shape"]
        if dynamic_batch and (not shape or shape[0] not in (-1,)):
            raise InputError(f"{info.path}: tensor {tensor['name']!r} has shape {shape}, whose first dimension is not "
                             "the dynamic batch; Triton's batching needs it to be")
        dims[tensor["name"]] = _dims(shape, profile, drop_batch=dynamic_batch, is_input=tensor in info.inputs)
    return (profile.max[0] if dynamic_batch else 0), dims


def _dtype(tensor: dict, path: Path) -> str:
    try:
        return TRITON_DTYPES[tensor["dtype"]]
    except KeyError:
        raise InputError(f"{path}: tensor {tensor['name']!r} has TensorRT type {tensor['dtype']}, which has no "
                         "Triton data_type here") from None


def plan_filename(info: EngineInfo, several: bool) -> str:
    if not several:
        return "model.plan"
    return f"model.sm{str(info.compute_capability).replace('.', '')}.plan"


def _parameters(infos: list[EngineInfo], filenames: list[str]) -> dict[str, str]:
    """Our metadata as Triton ``parameters`` (strings; the TensorRT backend reads only its own keys)."""
    first = infos[0].metadata
    model = first.get("model") or {}
    params = {
        "elfatt.toolkit_version": str(first.get("toolkit_version", "")),
        "elfatt.model_name": str(model.get("elfatt.model_name", "")),
        "elfatt.model_config": str(model.get("elfatt.model_config", "")),
        "elfatt.input_normalization": str(model.get("elfatt.input_normalization", "")),
        "elfatt.precision": str(first.get("precision", "")),
        "elfatt.plugin": json.dumps(first.get("plugin") or {"used": None}, sort_keys=True),
    }
    for info, filename in zip(infos, filenames):
        meta = info.metadata
        params[f"elfatt.plan.{filename}"] = json.dumps({
            "tensorrt_version": info.tensorrt_version, "compute_capability": info.compute_capability,
            "gpu": (meta.get("gpu") or {}).get("name"), "jetson": (meta.get("jetson") or {}).get("jetpack"),
            "plan_sha256": (meta.get("plan") or {}).get("sha256"), "sidecar": bool(meta),
        }, sort_keys=True)
    return {k: v for k, v in params.items() if v}


def _quote(text: str) -> str:
    """A protobuf text-format string literal (protobuf's own escaping; UTF-8 kept as is)."""
    from google.protobuf import text_encoding  # noqa: PLC0415  (protobuf comes with onnx)

    return '"' + text_encoding.CEscape(str(text), as_utf8=True) + '"'



def render_config(name: str, infos: list[EngineInfo], filenames: list[str], options: TritonOptions) -> str:
    """config.pbtxt for engines that share their I/O (checked by the caller)."""
    max_batch, dims = batch_layout(infos[0])
    info = infos[0]
    lines = [f"# written by elfatt-deploy triton from {', '.join(str(i.path) for i in infos)}",
             f"name: {_quote(name)}", 'platform: "tensorrt_plan"', f"max_batch_size: {max_batch}"]
    if len(infos) == 1:
        lines.append(f"default_model_filename: {_quote(filenames[0])}")
    for section, tensors in (("input", info.inputs), ("output", info.outputs)):
        lines.append(f"{section} [")
        entries = []
        for tensor in tensors:
            entries.append("  {\n"
                           f"    name: {_quote(tensor['name'])}\n"
                           f"    data_type: {_dtype(tensor, info.path)}\n"
                           f"    dims: [ {', '.join(str(d) for d in dims[tensor['name']])} ]\n"
                           "  }")
        lines.append(",\n".join(entries))
        lines.append("]")
    lines.append(f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {options.kind}\n  }}\n]")
    if options.dynamic_batching:
        if max_batch == 0:
            raise InputError("--dynamic-batching needs an engine whose profile has a dynamic batch dimension "
                             f"(this one's is fixed at {info.profile.min[0]}); rebuild with --shapes min:1x...,max:Nx...")
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}")
    if len(infos) > 1:
        lines.append("cc_model_filenames [")
        lines.append(",\n".join(f"  {{\n    key: {_quote(i.compute_capability)}\n    value: {_quote(f)}\n  }}"
                                for i, f in zip(infos, filenames)))
        lines.append("]")
    for key, value in _parameters(infos, filenames).items():
        lines.append(f"parameters {{\n  key: {_quote(key)}\n  value: {{\n    string_value: {_quote(value)}\n  }}\n}}")
    return "\n".join(lines) + "\n"


def _check_same_io(infos: list[EngineInfo]) -> None:
    ref, ref_layout = infos[0], batch_layout(infos[0])
    for info in infos[1:]:
        for what, a, b in (("inputs", ref.inputs, info.inputs), ("outputs", ref.outputs, info.outputs)):
            if [(t["name"], t["dtype"]) for t in a] != [(t["name"], t["dtype"]) for t in b]:
                raise InputError(f"{info.path} and {ref.path} have different {what} ({[t['name'] for t in b]} vs "
                                 f"{[t['name'] for t in a]}): one Triton model serves engines of one model only")
        if batch_layout(info) != ref_layout:
            raise InputError(f"{info.path} and {ref.path} have different profiles ({info.profile.describe()} vs "
                             f"{ref.profile.describe()}): build them with the same --shapes for one Triton model")
    ccs = [i.compute_capability for i in infos]
    if None in ccs:
        missing = infos[ccs.index(None)].path
        raise InputError(f"{missing}: its compute capability is unknown (no sidecar), so it cannot be one of several "
                         "engines told apart by cc_model_filenames; keep its sidecar")
    if len(set(ccs)) != len(ccs):
        raise InputError(f"two engines were built for the same compute capability ({', '.join(ccs)}): give one engine "
                         "per GPU architecture (e.g. 8.7 for Orin, 9.0 for H100)")


def _plugin_copies(options: TritonOptions, infos: list[EngineInfo], model_dir: Path) -> list[tuple[Path, Path]]:
    """(source, destination) of the plugin libraries to copy, one per CPU architecture."""
    from ..engine.plugin import PLUGIN_LIBRARY_NAME, find_plugin_library  # noqa: PLC0415

    needed = [i.uses_plugin for i in infos]
    if not any(n is None or n for n in needed):
        if options.plugins:
            raise InputError("--plugin given, but none of the engines uses the ElfattAttention plugin (their sidecars "
                             "say so); drop --plugin")
        return []
    explicit = bool(options.plugins)
    sources = [check_plugin_path(p) for p in options.plugins]
    if not sources:
        if all(needed):
            sources = [search_plugin("the engines use the ElfattAttention plugin, which Triton must load")]
        else:  # no sidecar says so: the plan may not need it; copy it when it is here
            try:
                sources = [find_plugin_library()]
            except FileNotFoundError:
                return []
    copies, machines = [], set()
    for source in sources:
        info = check_static_registration(source, what="--plugin" if explicit else "the plugin found",
                                         how="Triton's plugins= option dlopens the library")
        if info.machine in machines:
            raise InputError(f"two --plugin libraries for the same CPU ({info.machine}); give one per architecture")
        machines.add(info.machine)
        copies.append((source, model_dir / "plugins" / str(info.machine) / PLUGIN_LIBRARY_NAME))
    return copies


def _plugin_library_warnings(infos: Sequence[EngineInfo], copies) -> list[str]:
    """A warning per engine whose sidecar records another plugin library (SHA-256) than the one copied into the
    repository: the same plugin version loads, but the kernels Triton runs are not the build's."""
    from ..engine.compat import plugin_library_warning

    found = []
    for source in dict.fromkeys(source for source, _ in copies):
        loaded = {"path": str(source), "sha256": sha256_file(source)}
        for info in infos:
            note = plugin_library_warning(info.metadata or {}, loaded)
            if note and f"{info.path}: {note}" not in found:
                found.append(f"{info.path}: {note}")
    return found


def _make_directories(repo: Path, targets: Sequence[Path]) -> None:
    """Before the first file is written: every target's directory exists or is made, and no target is taken by a
    directory or another non-file, so that a repository is never left half written (InputError names the path)."""
    for target in targets:
        for parent in reversed([target.parent, *target.parent.parents]):
            if parent.exists() and not parent.is_dir():
                raise InputError(f"cannot write {target}: {parent} exists and is not a directory; move it away or "
                                 "give another -o")
        if target.exists() and not target.is_file():
            raise InputError(f"cannot write {target}: it exists and is not a regular file; move it away or give "
                             "another -o")
    for directory in dict.fromkeys(t.parent for t in targets):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the directory {directory} ({exc.strerror or exc}); fix its parent's "
                             "permissions or give another -o") from None


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_output(target) as tmp:  # (its directory: _make_directories, before the first write)
        shutil.copyfile(source, tmp)


#: Per model, what REPO/README.md is made from (Triton ignores files in a model directory other than config.pbtxt).
MANIFEST_NAME = "elfatt_triton.json"


def min_batch_warning(info: EngineInfo, max_batch: int) -> Optional[str]:
    """A warning when Triton would send the engine batches below its profile's minimum (None when it cannot)."""
    low = info.profile.min[0]
    if not max_batch or low <= 1:
        return None
    profile = info.profile
    shapes = ",".join(f"{k}:{format_shape(s)}" for k, s in (("min", (1, *profile.min[1:])), ("opt", profile.opt),
                                                              ("max", profile.max)))
    return (f"{info.path}: the engine's profile has minimum batch {low} ({profile.describe()}), but the config says "
            f"max_batch_size: {max_batch}, so Triton accepts batches 1 to {max_batch} and the TensorRT backend rejects "
            f"every request with a batch below {low} (batch-1 requests included, also under dynamic batching); "
            f"rebuild the engine with min batch 1 (elfatt-deploy build ... --shapes {shapes})")


def _manifest(options: TritonOptions, infos: list[EngineInfo], filenames: list[str], copies: list[tuple[Path, Path]],
              max_batch: int, warnings: list[str]) -> dict:
    model_dir = Path(options.repository) / options.name
    info = infos[0]
    return {
        "written_by": "elfatt-deploy triton", "toolkit_version": __version__, "name": options.name,
        "version": options.version,
        "plans": [{"file": f"{options.version}/{f}", "engine": str(Path(i.path).resolve()),
                   "tensorrt_version": i.tensorrt_version, "compute_capability": i.compute_capability}
                  for i, f in zip(infos, filenames)],
        "plugins": [{"machine": target.parent.name, "path": target.relative_to(model_dir).as_posix(),
                     "sha256": sha256_file(source)} for source, target in copies],
        "input": info.input["name"], "max_batch_size": max_batch, "min_batch": min(i.profile.min[0] for i in infos),
        "opt_shape": list(info.profile.opt), "warnings": list(warnings),
    }


_MANIFEST_KEYS = {"name", "plans", "plugins", "input", "max_batch_size", "min_batch", "opt_shape"}


def _repository_models(repo: Path) -> list[dict]:
    """The models in ``repo``: our manifests, and a stand-in for each other model directory (its plugins found
    under NAME/plugins/<cpu>/, as an older elfatt-deploy wrote them)."""
    from ..engine.plugin import PLUGIN_LIBRARY_NAME  # noqa: PLC0415

    models = []
    for model_dir in sorted((d for d in repo.iterdir() if d.is_dir() and not d.name.startswith(".")),
                            key=lambda d: d.name):
        manifest = model_dir / MANIFEST_NAME
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text())
                if isinstance(data, dict) and data.get("name") == model_dir.name and _MANIFEST_KEYS <= set(data):
                    models.append(data)
                    continue
            except (OSError, ValueError):
                pass
        if not (model_dir / "config.pbtxt").is_file():
            continue
        plugins = [{"machine": p.parent.name, "path": p.relative_to(model_dir).as_posix(), "sha256": sha256_file(p)}
                   for p in sorted(model_dir.glob(f"plugins/*/{PLUGIN_LIBRARY_NAME}")) if p.is_file()]
        models.append({"name": model_dir.name, "plugins": plugins, "other": True})
    return models


def _server_plugins(repo: Path, models: list[dict]) -> tuple[dict[str, Path], list[str]]:
    """{cpu: the one plugin library the server loads}, and notes where models carry different builds."""
    chosen: dict[str, tuple[Path, str, str]] = {}
    notes = []
    for model in models:
        for plugin in model.get("plugins") or []:
            machine, path = plugin["machine"], repo / model["name"] / plugin["path"]
            if machine not in chosen:
                chosen[machine] = (path, plugin.get("sha256"), model["name"])
            elif chosen[machine][1] != plugin.get("sha256"):
                notes.append(f"models {chosen[machine][2]!r} and {model['name']!r} carry different builds of "
                             f"{path.name} for {machine}; a server registers one ElfattAttention creator, so the "
                             f"commands load {chosen[machine][2]!r}'s: write both with the same --plugin")
    return {m: v[0] for m, v in sorted(chosen.items())}, notes


def _server_commands(repo: Path, plugin: Optional[Path]) -> list[str]:
    if plugin is None:
        return ["```sh", f"tritonserver --model-repository={repo}", "```", ""]
    return ["The TensorRT backend loads the ElfattAttention plugin with `plugins=` (a `;`-separated list; it dlopens "
            "each file, so this is the static-registration build):", "", "```sh",
            f"tritonserver --model-repository={repo} \\", f"    --backend-config=tensorrt,plugins=\"{plugin}\"",
            "```", "", "or preloads it into the server process:", "", "```sh",
            f"LD_PRELOAD={plugin} tritonserver --model-repository={repo}", "```", "",
            "In a container, mount the repository at the same path (or rewrite the paths above):", "", "```sh",
            f"docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002 -v {repo}:{repo} \\",
            "    nvcr.io/nvidia/tritonserver:<release>-py3 \\",
            f"    tritonserver --model-repository={repo} --backend-config=tensorrt,plugins=\"{plugin}\"",
            "```", ""]


def _model_section(model: dict) -> list[str]:
    name = model["name"]
    lines = [f"### {name}", ""]
    if model.get("other"):
        return lines + [f"Not written by this version of `elfatt-deploy triton` (no {name}/{MANIFEST_NAME}): see its "
                        "config.pbtxt" + (", its plugin is in the server commands above." if model.get("plugins")
                                          else "; add what it needs to the server commands yourself."), ""]
    versions = sorted({p["tensorrt_version"] for p in model.get("plans", []) if p.get("tensorrt_version")})
    plans = ", ".join(f"`{name}/{p['file']}` (from {p['engine']}, compute capability "
                      f"{p.get('compute_capability') or '?'})" for p in model.get("plans", []))
    plugins = ", ".join(f"`{name}/{p['path']}`" for p in model.get("plugins", []))
    max_batch, low, opt = model["max_batch_size"], model["min_batch"], model["opt_shape"]
    shape = opt[1:] if max_batch else opt
    batch_flag = f" -b {low}" if max_batch and low > 1 else ""
    lines += [f"Plans: {plans}; TensorRT {', '.join(versions) or 'unknown (no sidecar)'}.",
              f"Plugin: {plugins} (in the server commands above)." if plugins else "Plugin: none needed.", ""]
    for warning in model.get("warnings") or []:
        lines += [f"**Warning**: {warning}", ""]
    lines += ["```sh", f"curl -s localhost:8000/v2/models/{name}/ready && echo ready",
              f"curl -s localhost:8000/v2/models/{name}/config",
              f"perf_analyzer -m {name}{batch_flag} --shape {model['input']}:{','.join(str(d) for d in shape)}",
              "```", "",
              "The input is float NCHW, normalized as the model expects (`elfatt.input_normalization` in "
              f"config.pbtxt's parameters); the profile's opt shape is {'x'.join(str(d) for d in opt)}.", ""]
    return lines


def render_readme(repo: Path, models: list[dict]) -> tuple[str, list[str]]:
    """REPO/README.md for every model in the repository; returns (text, notes on conflicting plugins)."""
    repo = repo.resolve()
    plugins, notes = _server_plugins(repo, models)
    ours = [m for m in models if not m.get("other")]
    versions = sorted({p["tensorrt_version"] for m in ours for p in m.get("plans", []) if p.get("tensorrt_version")})
    lines = ["# Triton model repository", "",
             f"Models: {', '.join(m['name'] for m in models)}. Written by `elfatt-deploy triton`, which rewrites this "
             f"file from every model in the repository each time it writes one (NAME/{MANIFEST_NAME} holds what it "
             "knows of each).", "",
             "Engines run only with the TensorRT version they were built with "
             f"({', '.join(versions) or 'unknown: no sidecar'}): use the Triton release whose TensorRT is that version "
             "(x86: the NGC `tritonserver` container of that release; Jetson: the Triton release for JetPack whose "
             "TensorRT matches, e.g. TensorRT 10.3 on JetPack 6.1/6.2).", "",
             "## Start the server", ""]
    if not plugins:
        lines += _server_commands(repo, None)
    elif len(plugins) == 1:
        lines += _server_commands(repo, next(iter(plugins.values())))
    else:
        lines += ["Use the commands of the server's CPU (each plugin library is built for one).", ""]
        for machine, plugin in plugins.items():
            lines += [f"### {machine}", ""] + _server_commands(repo, plugin)
    for note in notes:
        lines += [f"**Note**: {note}", ""]
    lines += ["## Models", ""]
    for model in models:
        lines += _model_section(model)
    return "\n".join(lines) + "\n", notes


#: The plan file names write_repository gives (plan_filename): model.plan, or model.smNN.plan per GPU.
_PLAN_NAME = re.compile(r"model(\.sm\d+)?\.plan")


def _print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def write_repository(options: TritonOptions, *, warn: Callable[[str], None] = _print_warning) -> dict:
    """Writes the model and rewrites REPO/README.md for every model there; returns {"config": path, "plans": [...],
    "plugins": [...], "readme": path, "manifest": path, "warnings": [...]}. ``warn`` gets each warning (default:
    ``warning: ...`` on stderr)."""
    _check_options(options)
    infos = [describe_engine(p, plugin=(options.plugins[0] if options.plugins else None)) for p in options.engines]
    several = len(infos) > 1
    if several:
        _check_same_io(infos)
    filenames = [plan_filename(i, several) for i in infos]
    config = render_config(options.name, infos, filenames, options)  # every check before the first write
    repo = Path(options.repository)
    model_dir = repo / options.name
    copies = _plugin_copies(options, infos, model_dir)
    max_batch = batch_layout(infos[0])[0]
    warnings = [w for w in (min_batch_warning(i, max_batch) for i in infos) if w]
    warnings += _plugin_library_warnings(infos, copies)
    version_dir = model_dir / str(options.version)
    _make_directories(repo, [version_dir / f for f in filenames] + [t for _, t in copies]
                      + [model_dir / "config.pbtxt", model_dir / MANIFEST_NAME, repo / "README.md"])
    plans = []
    for info, filename in zip(infos, filenames):
        target = version_dir / filename
        with atomic_output(target) as tmp:
            tmp.write_bytes(info.plan)  # the raw plan (an old-format file is unwrapped: Triton needs the plain plan)
        plans.append(target)
    for source, target in copies:
        _copy_atomic(source, target)
    config_path = atomic_write_text(model_dir / "config.pbtxt", config)
    # plans an earlier run wrote into this version (model.plan, model.smNN.plan) that this config does not name:
    # Triton would ignore them, and they would be taken for part of the model
    removed = []
    for old in sorted(version_dir.iterdir()):
        if old.is_file() and _PLAN_NAME.fullmatch(old.name) and old.name not in filenames:
            old.unlink()
            removed.append(old)
    manifest = atomic_write_text(model_dir / MANIFEST_NAME, json.dumps(
        _manifest(options, infos, filenames, copies, max_batch, warnings), indent=2, sort_keys=True) + "\n")
    text, notes = render_readme(repo, _repository_models(repo))
    readme = atomic_write_text(repo / "README.md", text)
    notes = notes + [f"removed {old} (an earlier run's plan that this config does not name)" for old in removed]
    for message in warnings + notes:
        warn(message)
    return {"config": config_path, "plans": plans, "plugins": [t for _, t in copies], "readme": readme,
            "manifest": manifest, "warnings": warnings + notes, "removed": removed}
