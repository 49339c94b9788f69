"""A DeepStream Gst-nvinfer ``[property]`` config for an engine (docs/serving.md).

nvinfer preprocesses each frame as ``y = net-scale-factor * (x - offsets[c])`` on 8-bit RGB
pixels, with one scale for all channels; the models expect ``(x / 255 - mean[c]) / std[c]``
(elfatt_deploy/preprocess.py). ``offsets`` is exact (``255 * mean``); the scale is
``1 / (255 * mean(std))``, whose worst relative error per channel the config states in a
comment (1.3 % for the ImageNet std). Where that matters, fold the per-channel std into the
model, or preprocess with nvdspreprocess and a custom library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import onnx

from ..atomic import atomic_write_bytes, atomic_write_text
from ..engine.metadata import source_onnx_path
from ..engine.onnx_prep import check_no_renamed_elfatt_nodes, elfatt_functions, load_model, remove_elfatt_functions
from ..engine.plugin import find_plugin_library
from ..errors import InputError
from ..preprocess import DEFAULT_NORMALIZATION, format_floats, normalization_from_props
from .engine_info import EngineInfo, check_plugin_path, check_static_registration, describe_engine, search_plugin

#: elfatt-deploy precision -> nvinfer network-mode (0 FP32, 1 INT8, 2 FP16).
NETWORK_MODES = {"fp32": 0, "int8": 1, "int8-qdq": 1, "fp16": 2}
#: nvinfer network-type: 1 classifier (needs labels), 100 "other" (raw output tensors as tensor meta).
NETWORK_TYPES = {"classifier": 1, "other": 100}


@dataclass
class DeepStreamOptions:
    engine: Path
    output: Path
    onnx: Optional[Path] = None  # default: the sidecar's source ONNX
    plugin: Optional[Path] = None  # default: the plugin search (engine/plugin.py)
    batch_size: Optional[int] = None  # default: the profile's opt batch
    input_size: Optional[tuple[int, int]] = None  # (H, W); default: the profile's opt H, W
    network_type: str = "other"
    labels: Optional[Path] = None
    gpu_id: int = 0


def _check(options: DeepStreamOptions, info: EngineInfo) -> tuple[int, int, int]:
    if options.network_type not in NETWORK_TYPES:
        raise InputError(f"--network-type {options.network_type!r} must be one of {', '.join(NETWORK_TYPES)}")
    if options.network_type == "classifier" and options.labels is None:
        raise InputError("--network-type classifier needs --labels FILE (one class name per line, as nvinfer reads "
                         "them); or keep --network-type other and read the logits from the tensor meta")
    if options.labels is not None and not Path(options.labels).is_file():
        raise FileNotFoundError(f"--labels {options.labels} does not exist")
    profile = info.profile
    batch = options.batch_size if options.batch_size is not None else profile.opt[0]
    height, width = options.input_size if options.input_size is not None else profile.opt[2:]
    shape = (batch, profile.opt[1], height, width)
    if not profile.contains(shape):
        raise InputError(f"batch {batch} and input {height}x{width} give {'x'.join(map(str, shape))}, outside the "
                         f"engine's profile ({profile.describe()}); pick --batch-size / --input-size inside it")
    return batch, height, width


def plugin_only_onnx(source: Path, target_dir: Path) -> Path:
    """``source`` if it has no elfatt function (a plugin-only export), else a plugin-only copy in ``target_dir``.

    nvinfer rebuilds the engine from this file when the engine does not load (another TensorRT or
    GPU); TensorRT's parser takes a local function over a registered plugin on several versions
    (docs/op-spec.md), so the copy drops the function and every version uses the plugin."""
    model = load_model(source)
    check_no_renamed_elfatt_nodes(model, source=str(source))
    if not elfatt_functions(model):
        return source
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise InputError(f"{source} keeps its weights in external data files; export it again with --plugin-only "
                         "and pass it with --onnx")
    remove_elfatt_functions(model)
    target = target_dir / (source.stem + ".plugin-only.onnx")
    atomic_write_bytes(target, model.SerializeToString())
    return target


def render_config(info: EngineInfo, options: DeepStreamOptions, *, onnx_file: Optional[Path],
                  plugin: Optional[Path], batch: int, height: int, width: int) -> str:
    meta = info.metadata
    norm = normalization_from_props(meta.get("model") or {}) if meta else DEFAULT_NORMALIZATION
    scale, worst = norm.single_scale()
    exact = format_floats(norm.pixel_scales())
    precision = str(meta.get("precision") or "fp32")
    mode = NETWORK_MODES.get(precision, 0)
    channels = info.profile.opt[1]
    lines = [
        f"# DeepStream Gst-nvinfer config written by elfatt-deploy deepstream for {info.path}",
        f"# engine: TensorRT {info.tensorrt_version or '? (no sidecar)'}, compute capability "
        f"{info.compute_capability or '?'}, precision {precision}, profile {info.profile.describe()}",
        "[property]",
        f"gpu-id={options.gpu_id}",
        "# the engine as elfatt-deploy build wrote it (a plain TensorRT plan)",
        f"model-engine-file={Path(info.path).resolve()}",
    ]
    if onnx_file is not None:
        lines += ["# nvinfer rebuilds the engine from this plugin-only ONNX when the engine does not load here",
                  f"onnx-file={Path(onnx_file).resolve()}"]
    else:
        lines.append("# no onnx-file: the source ONNX is unknown (pass --onnx); nvinfer cannot rebuild the engine")
    if plugin is not None:
        lines += ["# the ElfattAttention plugin (static-registration build: nvinfer dlopens it)",
                  f"custom-lib-path={Path(plugin).resolve()}"]
    lines += [
        f"# 0 FP32, 1 INT8, 2 FP16: used only when nvinfer rebuilds (the engine's precision is {precision})",
        f"network-mode={mode}",
        f"infer-dims={channels};{height};{width}",
        f"batch-size={batch}",
        "# the models take RGB",
        "model-color-format=0",
        f"# y = net-scale-factor * (x - offsets[c]); the models expect (x * {norm.to_metadata()['scale']} - mean[c]) / "
        f"std[c] with mean {list(norm.mean)}, std {list(norm.std)}.",
        f"# offsets = mean / scale is exact; nvinfer has one scale for all channels, so net-scale-factor = "
        f"scale / mean(std) (the exact per-channel factors are {exact}): at most {worst * 100:.2f} % off in a channel.",
        f"net-scale-factor={scale!r}",
        f"offsets={format_floats(norm.pixel_offsets())}",
        "# 1 = primary (full frame)",
        "process-mode=1",
        "gie-unique-id=1",
        f"network-type={NETWORK_TYPES[options.network_type]}",
        f"output-blob-names={';'.join(t['name'] for t in info.outputs)}",
    ]
    if options.network_type == "other":
        lines += ["# the outputs (logits) are attached as NvDsInferTensorMeta for the application to read",
                  "output-tensor-meta=1"]
    else:
        lines += [f"labelfile-path={Path(options.labels).resolve()}", "classifier-threshold=0.0"]
    return "\n".join(lines) + "\n"


def _check_options(options: DeepStreamOptions) -> Optional[Path]:
    """The checks that need no engine, before reading it; returns the checked ``--plugin`` (or None)."""
    if isinstance(options.gpu_id, bool) or not isinstance(options.gpu_id, int) or options.gpu_id < 0:
        raise InputError(f"--gpu-id {options.gpu_id} must be a GPU index >= 0 (0 is the first GPU; nvidia-smi "
                         "lists them)")
    if options.batch_size is not None and options.batch_size < 1:
        raise InputError(f"--batch-size {options.batch_size} must be >= 1")
    return check_plugin_path(options.plugin) if options.plugin else None


def write_config(options: DeepStreamOptions) -> dict:
    """Writes the config (and a plugin-only ONNX copy when needed); returns {"config", "onnx", "plugin"}."""
    output = Path(options.output)
    explicit = _check_options(options)
    info = describe_engine(options.engine, plugin=explicit)
    batch, height, width = _check(options, info)
    plugin = None
    if info.uses_plugin is not False:
        if explicit is not None:
            plugin = explicit
        elif info.uses_plugin:
            plugin = search_plugin("the engine uses the ElfattAttention plugin, which nvinfer must load")
        else:  # no sidecar says whether the plan needs it: point at it when it is here
            try:
                plugin = find_plugin_library()
            except FileNotFoundError:
                plugin = None
        if plugin is not None:
            check_static_registration(plugin, what="--plugin" if explicit is not None else "the plugin found",
                                      how="nvinfer's custom-lib-path dlopens the library")
    elif options.plugin:
        raise InputError("--plugin given, but the engine does not use the ElfattAttention plugin (its sidecar says so)")
    source = Path(options.onnx) if options.onnx else None
    if source is None and info.metadata:
        recorded = source_onnx_path(info.metadata)
        source = Path(recorded) if recorded and Path(recorded).is_file() else None
    if options.onnx and not Path(options.onnx).is_file():
        raise FileNotFoundError(f"--onnx {options.onnx} does not exist")
    onnx_file = None
    if source is not None:
        onnx_file = plugin_only_onnx(source, output.parent if str(output.parent) else Path(".")) if plugin else source
    text = render_config(info, options, onnx_file=onnx_file, plugin=plugin, batch=batch, height=height, width=width)
    atomic_write_text(output, text)
    return {"config": output, "onnx": onnx_file, "plugin": plugin}
