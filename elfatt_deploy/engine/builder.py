"""ONNX -> strongly typed TensorRT engine, with the elfatt plugin or without it.

``prepare_build`` does everything that needs no TensorRT (read the ONNX, find the
input, resolve the profile, remove the elfatt function, find the plugin) and is
unit-tested; ``build_engine`` adds the TensorRT part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..atomic import atomic_write_bytes, check_output_path, check_outputs_spare_inputs
from ..errors import MissingDependencyError, ToolkitError
from ..export.inline import is_inlined
from .engine_file import sha256_file, sidecar_path, write_engine_file
from .environment import gpu_info, jetson_release
from .metadata import build_metadata
from .onnx_prep import (
    ELFATT_OP,
    check_no_renamed_elfatt_nodes,
    elfatt_functions,
    elfatt_nodes,
    load_model,
    metadata_props,
    prepare_function_body_build,
    remove_elfatt_functions,
    single_image_input,
)
from .plugin import PluginNotFoundError, find_plugin_libraries, load_first_plugin
from .profiles import Profile, parse_profile_spec, resolve_profile
from .trt_api import get_logger, network_io, plugin_layer_names, strongly_typed_network_flags


class EngineBuildError(ToolkitError):
    """TensorRT could not parse the model or build the engine (its messages are in the text)."""


@dataclass
class BuildOptions:
    onnx_path: Path
    output: Path
    plugin: Optional[str] = None
    use_plugin: bool = True
    shapes: Optional[str] = None
    recipe: Optional[str] = None
    workspace_mb: Optional[int] = None
    timing_cache: Optional[Path] = None
    progress: bool = True
    verbose: bool = False
    #: Let FP32 matrix multiplies and convolutions round their inputs to TF32 (BuilderFlag.TF32). Off by default,
    #: as in Polygraphy: TensorRT turns it on unless told otherwise, and then an fp32 engine is no longer within
    #: the fp32 tolerance of PyTorch (validation/tolerances.py, TENSORRT_TF32_RTOL_L2).
    tf32: bool = False
    #: Overrides the precision the sidecar records (read from the ONNX otherwise), e.g. "int8-qdq".
    precision: Optional[str] = None
    #: More sidecar keys (e.g. calibration info); may not replace the builder's own (metadata.CORE_KEYS).
    extra_metadata: dict = field(default_factory=dict)

    def command(self) -> list[str]:
        cmd = ["elfatt-deploy", "build", str(self.onnx_path), "-o", str(self.output)]
        if not self.use_plugin:
            cmd.append("--no-plugin")
        elif self.plugin:
            cmd += ["--plugin", str(self.plugin)]
        if self.shapes:
            cmd += ["--shapes", self.shapes]
        if self.recipe:
            cmd += ["--recipe", str(self.recipe)]
        if self.workspace_mb:
            cmd += ["--workspace", str(self.workspace_mb)]
        if self.timing_cache:
            cmd += ["--timing-cache", str(self.timing_cache)]
        if self.tf32:
            cmd.append("--tf32")
        return cmd


@dataclass
class BuildPlan:
    model_bytes: bytes
    input_spec: object
    profile: Profile
    onnx_props: dict
    plugin_candidates: list[Path]
    elfatt_node_count: int
    functions_removed: int
    notes: list[str] = field(default_factory=list)

    @property
    def plugin_path(self) -> Optional[Path]:
        """The first plugin candidate (the one tried first), or None without the plugin."""
        return self.plugin_candidates[0] if self.plugin_candidates else None

    @property
    def uses_plugin(self) -> bool:
        return bool(self.plugin_candidates)

    @property
    def expected_plugin_layers(self) -> int:
        """Plugin layers the parsed network must have: one per elfatt node with the plugin, none without."""
        return self.elfatt_node_count if self.uses_plugin else 0


def _load_recipe(path, shapes: Optional[str] = None):
    """The recipe; with ``--shapes`` its opt shape stands in for a recipe without opt_shape (as export's
    --input-shape does), since --shapes gives the profile then."""
    from ..export.recipes import load_recipe  # noqa: PLC0415  (engineer C's module)

    return load_recipe(path, opt_shape=parse_profile_spec(shapes).opt if shapes else None)


def prepare_build(options: BuildOptions) -> BuildPlan:
    """Checks the options against the ONNX file and returns what the TensorRT part needs."""
    onnx_path = Path(options.onnx_path)
    output = Path(options.output)
    if options.workspace_mb is not None and options.workspace_mb <= 0:
        raise ValueError(f"--workspace {options.workspace_mb} must be a positive number of MiB, e.g. --workspace 1024")
    # Every file the build writes must be writable before minutes of building: the engine, its metadata
    # beside it, and the timing cache (a directory, a missing or read-only directory: refused here).
    check_output_path(output, what="-o", example_name="model.engine")
    check_output_path(sidecar_path(output), what="-o (the metadata beside the engine)")
    if options.timing_cache is not None:
        check_output_path(options.timing_cache, what="--timing-cache", example_name="timing.cache")
    check_outputs_spare_inputs({"-o": output, "--timing-cache": options.timing_cache,
                                "-o (the metadata beside the engine)": sidecar_path(output)},
                               {"the ONNX file": onnx_path, "the plugin": options.plugin})
    if options.plugin and not options.use_plugin:
        raise ValueError("--plugin and --no-plugin contradict each other: give one of them")

    model = load_model(onnx_path)
    spec = single_image_input(model, source=str(onnx_path))
    recipe = _load_recipe(options.recipe, options.shapes) if options.recipe else None
    profile = resolve_profile(spec.name, spec.dims, shapes=options.shapes, recipe=recipe)
    nodes = elfatt_nodes(model)
    notes = []
    removed = 0
    candidates: list[Path] = []
    if options.use_plugin:
        check_no_renamed_elfatt_nodes(model, source=str(onnx_path))
        removed = remove_elfatt_functions(model)
        if nodes:
            candidates = find_plugin_libraries(options.plugin)
        elif is_inlined(model):
            raise ValueError(
                f"{onnx_path} is an inlined export (`export --inline`: the attention is in standard ONNX ops, there "
                f"are no {ELFATT_OP} nodes for the plugin), so it builds without the plugin only: add --no-plugin, "
                "or export without --inline to build with the plugin"
            )
        else:
            notes.append(f"{onnx_path} has no {ELFATT_OP} nodes: the engine does not use the plugin")
    else:
        if nodes and not elfatt_functions(model):
            raise ValueError(
                f"{onnx_path} is a plugin-only export (it has {len(nodes)} {ELFATT_OP} nodes but no elfatt local "
                "function), so a plugin-free engine cannot be built from it: drop --no-plugin, or re-export without "
                "--plugin-only"
            )
        prepare_function_body_build(model)
    props = metadata_props(model)
    if props.get("elfatt.precision") == "int8-qdq" and props.get("elfatt.base_precision") == "fp32" and nodes \
            and options.use_plugin:
        notes.append(f"{onnx_path} is INT8 Q/DQ over an FP32 export: the ElfattAttention plugin and the other float "
                     "layers run FP32; quantize an FP16 export (export --precision fp16) for FP16 plugin I/O")
    return BuildPlan(
        model_bytes=model.SerializeToString(),
        input_spec=spec,
        profile=profile,
        onnx_props=metadata_props(model),
        plugin_candidates=candidates,
        elfatt_node_count=len(nodes),
        functions_removed=removed,
        notes=notes,
    )


def format_parser_error(error) -> str:
    """One parser error, verbatim, plus node name/operator and function stack when not already in the text."""
    text = str(error)

    def call(name):
        fn = getattr(error, name, None)
        try:
            return fn() if callable(fn) else None
        except Exception:
            return None

    extra = []
    node_name, operator, node = call("node_name"), call("node_operator"), call("node")
    if node_name and node_name not in text:
        extra.append(f"node {node_name!r}")
    if operator and operator not in text:
        extra.append(f"operator {operator}")
    if node is not None and node >= 0 and not node_name:
        extra.append(f"node #{node}")
    stack = call("local_function_stack")
    if stack:
        extra.append("in local function " + " > ".join(str(s) for s in stack))
    return text + (f" [{', '.join(extra)}]" if extra else "")


def _tensorrt():
    try:
        import tensorrt as trt  # noqa: PLC0415
    except Exception as exc:
        raise MissingDependencyError(
            f"TensorRT's Python package is not importable here ({type(exc).__name__}: {exc}); build engines on the "
            "target machine (JetPack, or an NGC TensorRT container: see docker/README.md)"
        ) from None
    return trt


def build_engine(options: BuildOptions, *, log=print) -> dict:
    """Builds and writes the engine (raw plan + sidecar, engine_file.py); returns the sidecar's metadata."""
    try:
        plan_info = prepare_build(options)
    except PluginNotFoundError:
        _tensorrt()  # a missing TensorRT is said first: without it a plugin is of no use
        raise
    trt = _tensorrt()
    gpu = gpu_info()
    if gpu is None:
        raise MissingDependencyError("no CUDA GPU is visible: an engine is built on the GPU it will run on")
    for note in plan_info.notes:
        log(f"note: {note}")

    # one logger per process (TensorRT keeps a single logger pointer); the runner shares it
    logger = get_logger(trt, trt.Logger.VERBOSE if options.verbose else trt.Logger.WARNING)
    # the builder first: it hands the logger to TensorRT, so that load_library (and the plugin's
    # logger finder) report into it instead of nowhere
    builder = trt.Builder(logger)
    plugin = None
    if plan_info.uses_plugin:
        plugin = load_first_plugin(plan_info.plugin_candidates, registry=trt.get_plugin_registry())
        for skipped in plugin.get("skipped", []):
            log(f"note: plugin candidate skipped: {skipped}")
        log(f"plugin: {plugin['path']} ({plugin['how']}); {plan_info.elfatt_node_count} {ELFATT_OP} nodes, "
            f"{plan_info.functions_removed} elfatt local function(s) removed before parsing")
    else:
        log(f"plugin: not used ({plan_info.elfatt_node_count} {ELFATT_OP} nodes built from the ONNX function body)")

    network = builder.create_network(strongly_typed_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(plan_info.model_bytes, str(Path(options.onnx_path).resolve())):
        errors = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"TensorRT's ONNX parser rejected {options.onnx_path} ({len(errors)} error(s)):\n  " + "\n  ".join(errors)
        )
    check_plugin_layers(trt, network, plan_info, options.onnx_path)

    config = builder.create_builder_config()
    set_tf32(trt, config, options.tf32)
    if options.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    p = plan_info.profile
    profile.set_shape(plan_info.input_spec.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        if cache is None:
            raise EngineBuildError(f"--timing-cache {cache_path}: TensorRT could not read it (its log above says why); "
                                   "delete it or give a new path")
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise EngineBuildError(f"--timing-cache {cache_path} was made by another TensorRT/GPU; delete it or give a new path")
    monitor = make_monitor(trt, options.progress)
    if monitor is not None:
        config.progress_monitor = monitor

    log(f"building {options.output} from {options.onnx_path}: TensorRT {trt.__version__}, {gpu['name']} "
        f"(sm_{gpu['compute_capability'].replace('.', '')}), strongly typed, {'TF32 allowed' if options.tf32 else 'no TF32'}, "
        f"profile {p.describe()}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        if monitor is not None and getattr(monitor, "cancelled", False):
            raise KeyboardInterrupt
        raise EngineBuildError("TensorRT could not build the engine; its log above says why")
    metadata = build_metadata(
        tensorrt_version=trt.__version__,
        gpu=gpu,
        jetson=jetson_release(),
        plugin=plugin,
        input_spec=plan_info.input_spec,
        profiles=[p],
        onnx_props=plan_info.onnx_props,
        source_onnx=str(Path(options.onnx_path).resolve()),
        source_onnx_sha256=sha256_file(options.onnx_path),
        build_command=options.command(),
        workspace_mb=options.workspace_mb,
        io=network_io(trt, network),
        precision=options.precision,
        tf32=options.tf32,
        extra=options.extra_metadata,
    )
    # The timing cache first: a cache that cannot be written then leaves no engine behind with exit 2.
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    write_engine_file(options.output, metadata, memoryview(serialized))
    return metadata


def set_tf32(trt, config, allowed: bool) -> None:
    """Sets or clears BuilderFlag.TF32 (TensorRT sets it by default; every supported version has the flag).

    Cleared, FP32 layers compute in FP32 and an fp32 engine matches PyTorch within the fp32 tolerance;
    set, TensorRT may feed FP32 matrix multiplies and convolutions to tensor cores with 10-bit mantissas."""
    flag = getattr(getattr(trt, "BuilderFlag", None), "TF32", None)
    if flag is None:
        if allowed:
            raise EngineBuildError(f"--tf32: TensorRT {trt.__version__} has no BuilderFlag.TF32; build without --tf32")
        return  # no such flag: nothing can turn TF32 on either
    if allowed:
        config.set_flag(flag)
    else:
        config.clear_flag(flag)


def check_plugin_layers(trt, network, plan_info: BuildPlan, onnx_path) -> None:
    """The parsed network must hold exactly one plugin layer per elfatt node with the plugin, and none without.

    Which importer TensorRT's parser picks for a node that has both a plugin creator and a local function
    changed between versions (docs/op-spec.md); this check makes a wrong pick a clear build error on every
    version instead of an engine that fails to deserialize elsewhere."""
    found = plugin_layer_names(trt, network)
    expected = plan_info.expected_plugin_layers
    if len(found) == expected:
        return
    shown = ", ".join(repr(n) for n in found[:8]) + (" ..." if len(found) > 8 else "")
    if plan_info.uses_plugin:
        raise EngineBuildError(
            f"TensorRT parsed {onnx_path} into {len(found)} plugin layer(s) ({shown or 'none'}), but the model has "
            f"{expected} {ELFATT_OP} node(s): some nodes were not imported through the plugin. Check the parser "
            "messages above (run with --verbose), or report it with the TensorRT version"
        )
    raise EngineBuildError(
        f"the --no-plugin build of {onnx_path} contains {len(found)} plugin layer(s) ({shown}): TensorRT imported "
        "them through a registered plugin instead of the ONNX function body, so the engine would need the plugin. "
        "Build it in a process that has not loaded the plugin, or report it with the TensorRT version"
    )


def make_monitor(trt, enabled: bool):
    """The tqdm progress monitor (bars show on a terminal; tqdm stays quiet in logs)."""
    from .progress import make_progress_monitor  # noqa: PLC0415

    return make_progress_monitor(trt, enabled=enabled)
