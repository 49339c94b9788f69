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
from ..engine.onnx_prep import (ELFATT_DOMAIN, check_no_renamed_elfatt_nodes, elfatt_functions, load_model,
                                remove_elfatt_functions)
from ..export.metadata import set_metadata
from ..export.model_loading import file_sha256
from ..models.probabilities import PROBABILITIES_OUTPUT
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
    classifier_threshold: Optional[float] = None  # default 0.0 (classifier mode only)
    gpu_id: int = 0
    force: bool = False  # overwrite a different file at the plugin-only copy's / labels file's path


def _check(options: DeepStreamOptions, info: EngineInfo) -> tuple[int, int, int]:
    if options.network_type not in NETWORK_TYPES:
        raise InputError(f"--network-type {options.network_type!r} must be one of {', '.join(NETWORK_TYPES)}")
    if options.network_type == "classifier":
        _check_classifier_output(info)
        if options.labels is None:
            raise InputError("--network-type classifier needs --labels FILE (the class names, one per line or one line "
                             "separated by ';'); or keep --network-type other and read the output from the tensor meta")
    elif options.labels is not None or options.classifier_threshold is not None:
        given = f"--labels {options.labels}" if options.labels is not None else \
            f"--classifier-threshold {options.classifier_threshold}"
        raise InputError(f"{given} applies with --network-type classifier only (nvinfer reads no labels or threshold "
                         "for network-type other); drop it or add --network-type classifier")
    if options.labels is not None:
        if not Path(options.labels).exists():
            raise FileNotFoundError(f"--labels {options.labels} does not exist")
        if Path(options.labels).is_dir():
            raise InputError(f"--labels {options.labels} is a folder; give the file of class names")
    threshold = 0.0 if options.classifier_threshold is None else options.classifier_threshold
    if not (isinstance(threshold, (int, float)) and 0.0 <= float(threshold) < 1.0):
        raise InputError(f"--classifier-threshold {threshold!r} must be a probability in [0, 1)")
    profile = info.profile
    batch = options.batch_size if options.batch_size is not None else profile.opt[0]
    height, width = options.input_size if options.input_size is not None else profile.opt[2:]
    shape = (batch, profile.opt[1], height, width)
    if not profile.contains(shape):
        raise InputError(f"batch {batch} and input {height}x{width} give {'x'.join(map(str, shape))}, outside the "
                         f"engine's profile ({profile.describe()}); pick --batch-size / --input-size inside it")
    return batch, height, width


def _check_classifier_output(info: EngineInfo) -> int:
    """The class count of an engine that nvinfer's classifier mode can read; InputError otherwise.

    nvinfer's default classifier parser reads each output layer as probabilities: per frame it takes the class
    whose value exceeds both classifier-threshold and 0, and reports that value as the confidence. Logits break
    both (a frame whose best logit is negative gets no class), a feature vector has no classes."""
    if len(info.outputs) != 1:
        raise InputError(f"{info.path} has {len(info.outputs)} outputs; --network-type classifier is written for one "
                         "[batch, classes] output")
    output = info.outputs[0]
    name, shape = output.get("name"), list(output.get("shape") or [])
    if name == "features":
        raise InputError(f"{info.path} outputs features (a model exported with num_classes 0), not classes: keep "
                         "--network-type other and read them from the tensor meta")
    if name != PROBABILITIES_OUTPUT:
        raise InputError(f"{info.path} outputs {name!r} (raw logits), but nvinfer's classifier mode reads "
                         "probabilities (it takes a class only where the value is above 0 and classifier-threshold): "
                         "export with `elfatt-deploy export --softmax` and build again, or keep --network-type other "
                         "and apply the softmax to the tensor meta")
    if len(shape) != 2 or shape[-1] < 1:
        raise InputError(f"{info.path}: output {name!r} has shape {shape}; --network-type classifier needs "
                         "[batch, classes]")
    return int(shape[-1])


def classifier_labels(path: Path, classes: int, data: bytes | None = None) -> str:
    """The class names of ``path`` (or of ``data``, its bytes already read: a pipe reads once) as nvinfer's
    classifier reads them: one line, names separated by ';' (each line of a labels file is one output layer's
    labels). Accepts that form or one name per line; the count must be ``classes``."""
    try:
        raw = Path(path).read_bytes() if data is None else data
        text = raw.decode("utf-8-sig")  # a BOM is not part of the first name
    except UnicodeDecodeError:
        raise InputError(f"--labels {path} is not a UTF-8 text file; give the class names, one per line") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and ";" in lines[0]:
        names = [n.strip() for n in lines[0].split(";")]
    else:
        bad = [line for line in lines if ";" in line]
        if bad:
            raise InputError(f"--labels {path}: line {bad[0]!r} holds ';' among several lines; give one class name "
                             "per line, or all of them on one line separated by ';'")
        names = lines
    if any(not n for n in names):
        raise InputError(f"--labels {path} has an empty class name; give {classes} non-empty names")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"--labels {path} names {', '.join(map(repr, duplicates))} more than once; each class needs "
                         "its own name")
    if len(names) != classes:
        raise InputError(f"--labels {path} has {len(names)} class names but the engine's output has {classes} "
                         "classes; give one name per class, in the order of the model's output")
    return ";".join(names) + "\n"


def _check_free(path: Path, data: bytes, *, force: bool, what: str) -> bool:
    """True when ``data`` must be written to ``path``; False when the file already holds exactly it; InputError
    when a different file is there and ``force`` is not set (a user's file is not overwritten silently)."""
    if not path.exists():
        return True
    if path.is_file() and path.read_bytes() == data:
        return False
    if not force:
        raise InputError(f"{path} exists and differs from the {what} this command writes there; move it away, or "
                         "pass --force to overwrite it")
    return True


def _check_onnx_for_engine(path: Path, info: EngineInfo, *, explicit: bool) -> onnx.ModelProto:
    """The ONNX nvinfer rebuilds from must be the engine's model: an ONNX file, with the engine's outputs, the
    same precision where both record one, and ElfattAttention nodes for a plugin engine."""
    model = load_model(path)
    what = f"--onnx {path}" if explicit else f"the engine's source ONNX {path}"
    outputs = [o.name for o in model.graph.output]
    wanted = [t["name"] for t in info.outputs]
    if outputs != wanted:
        raise InputError(f"{what} has the outputs {outputs}, the engine {wanted}: nvinfer would rebuild another "
                         "model; give the ONNX the engine was built from")
    for out, record in zip(model.graph.output, info.outputs):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in out.type.tensor_type.shape.dim]
        shape = list(record.get("shape") or [])
        if dims and shape and len(dims) == len(shape) and dims[-1] > 0 and shape[-1] > 0 and dims[-1] != shape[-1]:
            raise InputError(f"{what}: output {out.name!r} has {dims[-1]} elements per image, the engine's "
                             f"{shape[-1]}: nvinfer would rebuild another model; give the ONNX the engine was built from")
    props = {p.key: p.value for p in model.metadata_props}
    onnx_name = props.get("elfatt.model_name")
    engine_name = ((info.metadata or {}).get("model") or {}).get("elfatt.model_name")
    if onnx_name and engine_name and onnx_name != engine_name:
        raise InputError(f"{what} is an export of {onnx_name}, the engine of {engine_name}: nvinfer would rebuild "
                         "another model; give the ONNX the engine was built from")
    onnx_precision = props.get("elfatt.precision") or props.get("precision")
    engine_precision = (info.metadata or {}).get("precision")
    if onnx_precision and engine_precision and onnx_precision != engine_precision:
        raise InputError(f"{what} is an export at {onnx_precision}, the engine is {engine_precision}: nvinfer would rebuild "
                         "at the other precision; give the ONNX the engine was built from")
    if info.uses_plugin and not any(n.domain == ELFATT_DOMAIN for n in model.graph.node):
        raise InputError(f"{what} has no ElfattAttention nodes (an --inline export?), but the engine uses the "
                         "plugin; give the ONNX the engine was built from (or its --plugin-only export)")
    return model


def plugin_only_onnx(source: Path, target_dir: Path) -> Path:
    """``source`` if it has no elfatt function (a plugin-only export), else a plugin-only copy in ``target_dir``.

    nvinfer rebuilds the engine from this file when the engine does not load (another TensorRT or
    GPU); TensorRT's parser takes a local function over a registered plugin on several versions
    (docs/op-spec.md), so the copy drops the function and every version uses the plugin."""
    target, data = _plugin_only_copy(source, target_dir)
    if data is not None:
        atomic_write_bytes(target, data)
    return target


def _plugin_only_copy(source: Path, target_dir: Path,
                      model: Optional[onnx.ModelProto] = None) -> tuple[Path, Optional[bytes]]:
    """(path, bytes) of the plugin-only copy of ``source``; (source, None) when it is plugin-only already.
    ``model``: ``source`` already loaded (it is changed in place)."""
    model = load_model(source) if model is None else model
    check_no_renamed_elfatt_nodes(model, source=str(source))
    if not elfatt_functions(model):
        return source, None
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise InputError(f"{source} keeps its weights in external data files; export it again with --plugin-only "
                         "and pass it with --onnx")
    remove_elfatt_functions(model)
    set_metadata(model, {"elfatt.plugin_only": "true"})  # what it now is (validate reads the graph, too)
    return target_dir / (source.stem + ".plugin-only.onnx"), model.SerializeToString()


def keyfile_path(path) -> str:
    """``path`` resolved and escaped as a GLib key-file string value (nvinfer reads these with
    g_key_file_get_string, which decodes ``\\s`` ``\\n`` ``\\t`` ``\\r`` ``\\\\``), so that a backslash, a
    newline or a leading space in a directory name comes back as it is instead of breaking the group."""
    text = str(Path(path).resolve())
    text = (text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r"))
    return "\\s" + text[1:] if text.startswith(" ") else text


def _comment(text) -> str:
    """Text for a '#' comment line: a newline in a path would start a new line of the config."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


def render_config(info: EngineInfo, options: DeepStreamOptions, *, onnx_file: Optional[Path],
                  plugin: Optional[Path], batch: int, height: int, width: int,
                  labels_file: Optional[Path] = None) -> str:
    meta = info.metadata
    norm = normalization_from_props(meta.get("model") or {}) if meta else DEFAULT_NORMALIZATION
    scale, worst = norm.single_scale()
    exact = format_floats(norm.pixel_scales())
    precision = str(meta.get("precision") or "fp32")
    mode = NETWORK_MODES.get(precision, 0)
    channels = info.profile.opt[1]
    lines = [
        f"# DeepStream Gst-nvinfer config written by elfatt-deploy deepstream for {_comment(info.path)}",
        f"# engine: TensorRT {info.tensorrt_version or '? (no sidecar)'}, compute capability "
        f"{info.compute_capability or '?'}, precision {precision}, profile {info.profile.describe()}",
        "[property]",
        f"gpu-id={options.gpu_id}",
        "# the engine as elfatt-deploy build wrote it (a plain TensorRT plan)",
        f"model-engine-file={keyfile_path(info.path)}",
    ]
    if onnx_file is not None:
        kind = "this plugin-only ONNX" if plugin is not None else "this ONNX"
        lines += [f"# nvinfer rebuilds the engine from {kind} when the engine does not load here",
                  f"onnx-file={keyfile_path(onnx_file)}"]
    else:
        lines.append("# no onnx-file: the source ONNX is unknown (pass --onnx); nvinfer cannot rebuild the engine")
    if plugin is not None:
        lines += ["# the ElfattAttention plugin (static-registration build: nvinfer dlopens it)",
                  f"custom-lib-path={keyfile_path(plugin)}"]
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
        lines += ["# the output is class probabilities (export --softmax); the labels: one line, ';'-separated",
                  f"labelfile-path={keyfile_path(labels_file)}",
                  "# a class is reported where its probability is above this",
                  f"classifier-threshold={float(options.classifier_threshold or 0.0)!r}"]
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
    notes = []
    folder = output.parent if str(output.parent) else Path(".")
    for flag, path in (("the engine", options.engine), ("--onnx", options.onnx), ("--labels", options.labels),
                       ("--plugin", plugin)):
        if path is not None and Path(path).resolve() == output.resolve():
            raise InputError(f"-o {output} is {flag}: writing the config there would destroy it; write the config "
                             "to another file")
    # Everything is checked and rendered first; files are written only then (the copy and the labels before the
    # config that names them; a failure removes what this call wrote).
    writes: list[tuple[Path, bytes]] = []
    onnx_file = None
    if source is not None:
        model = _check_onnx_for_engine(source, info, explicit=bool(options.onnx))
        recorded = (info.metadata or {}).get("source_onnx")
        recorded_sha = recorded.get("sha256") if isinstance(recorded, dict) else None
        if recorded_sha and file_sha256(source) != recorded_sha:
            notes.append(f"{source} is not byte for byte the ONNX the engine was built from (sha256 differs from the "
                         "sidecar's; a --plugin-only export of the same model differs too): nvinfer rebuilds from "
                         "this file only when the engine does not load")
        onnx_file = source
        if plugin:
            onnx_file, data = _plugin_only_copy(source, folder, model)
            if data is not None and _check_free(onnx_file, data, force=options.force, what="plugin-only ONNX copy"):
                writes.append((onnx_file, data))
    labels_file = None
    if options.network_type == "classifier":
        given = Path(options.labels)
        raw = given.read_bytes()  # once: --labels may be a pipe (<(...)), which nvinfer could not read again
        labels = classifier_labels(given, _check_classifier_output(info), raw).encode()
        if raw == labels and given.is_file():
            labels_file = given
        else:  # another layout (one name per line): nvinfer's form beside the config
            labels_file = folder / (output.stem + ".labels.txt")
            if _check_free(labels_file, labels, force=options.force, what="nvinfer labels file"):
                writes.append((labels_file, labels))
    for path, _ in writes:
        if path.resolve() == output.resolve():
            raise InputError(f"-o {output} is where this command writes {path.name} beside the config; name the "
                             "config otherwise (e.g. config_infer.txt)")
    text = render_config(info, options, onnx_file=onnx_file, plugin=plugin, batch=batch, height=height, width=width,
                         labels_file=labels_file)
    written = []
    try:
        for path, data in writes:
            atomic_write_bytes(path, data)
            written.append(path)
        atomic_write_text(output, text)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return {"config": output, "onnx": onnx_file, "plugin": plugin, "labels": labels_file,
            "written": [p for p, _ in writes], "notes": notes}
