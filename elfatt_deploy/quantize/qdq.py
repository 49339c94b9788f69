"""``quantize_onnx``: an exported ONNX file -> an explicit Q/DQ INT8 file, calibrated on a folder of images.

ONNX Runtime's ``quantize_static`` in QDQ format does the calibration and the Q/DQ insertion,
with the settings TensorRT's explicit quantization wants:

- only MatMul, Gemm and Conv are quantized (``op_types_to_quantize``); their outputs are not
  (``OpTypesToExcludeOutputQuantization``), so every Add (bias, residual), LayerNormalization,
  Softmax, GELU and the ElfattAttention nodes keep the file's precision (FP32, or FP16 in an FP16
  export) and the attention plugin gets FP32/FP16 I/O as it supports;
- weights INT8 symmetric per output channel, kept as float initializers with a Q->DQ pair
  (``AddQDQPairToWeight``, the form TensorRT's own Model Optimizer writes); activations INT8
  symmetric per tensor (zero point 0, as TensorRT requires); biases stay float (``QuantizeBias``
  off);
- the ElfattAttention nodes and their model-local function are left alone: ONNX Runtime runs
  the quantized file as is, and the TensorRT builder replaces the nodes by the plugin.

An FP16 export is quantized at opset >= 19 (QuantizeLinear takes float16 from opset 19 on):
an opset-18 FP16 file is upgraded with ONNX's version converter first, and its function body
is rebuilt for the new opset (the converter drops model-local functions).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import onnx

from .._version import __version__
from ..atomic import atomic_write_bytes, check_output_path
from ..errors import InputError
from ..export.metadata import PREFIX, describe_export, read_metadata, set_metadata
from ..export.inline import is_inlined
from ..export.onnx_function import DOMAIN, OP_TYPE, attach_functions

#: --method names -> onnxruntime.quantization.CalibrationMethod member names
METHODS = {"max": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
QUANTIZED_OP_TYPES = ("MatMul", "Gemm", "Conv")
QDQ_OP_TYPES = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
                "ConvInteger", "DynamicQuantizeLinear")
PRECISION = "int8-qdq"
#: QuantizeLinear takes float16 input from this opset on.
FP16_QDQ_OPSET = 19
DEFAULT_PERCENTILE = 99.999


@dataclass
class QuantizeResult:
    output: Path
    base_precision: str
    method: str
    calibration: dict
    quantized: list[str] = field(default_factory=list)
    #: MatMul/Gemm/Conv nodes left in float, with the reason
    unquantized: dict = field(default_factory=dict)
    #: op type -> count of the main graph's ops that stay in float (not Q/DQ'd by design)
    float_ops: dict = field(default_factory=dict)
    opset: int = 0
    reduce_range: bool = False  #: 7-bit weights (quantize --reduce-range)

    def to_dict(self) -> dict:
        return {"output": str(self.output), "precision": PRECISION, "base_precision": self.base_precision,
                "method": self.method, "calibration": self.calibration, "opset": self.opset,
                "reduce_range": self.reduce_range,
                "quantized": self.quantized, "unquantized": self.unquantized, "float_ops": self.float_ops}


def _check_loads_in_onnxruntime(data: bytes, source: str, opset: int) -> None:
    """Refuses to write a Q/DQ file ONNX Runtime cannot open with its default graph optimizations.

    Seen with static exports at opset 21 (ONNX Runtime 1.32): its optimizer fuses a Reshape into a Q/DQ pair
    and then fails type inference (output_dtype INT8 vs a UINT8 zero point); opsets 18-20 and dynamic files load."""
    import onnxruntime as ort  # noqa: PLC0415

    try:
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail / InvalidGraph / RuntimeException types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400].rstrip(".")
        raise InputError(
            f"ONNX Runtime {ort.__version__} cannot load the quantized {source} (opset {opset}): {first}. "
            "Nothing was written. Re-export with an opset from 18 to 20 (export --opset 18) or as a dynamic file "
            "and quantize that") from None


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_quantizable(model: onnx.ModelProto, source: str) -> dict:
    """InputError for files this command cannot quantize; returns the file's elfatt metadata."""
    meta = read_metadata(model)
    qdq = sorted({n.op_type for n in model.graph.node if n.op_type in QDQ_OP_TYPES})
    if qdq or meta.get("precision") == PRECISION:
        raise InputError(f"{source} is already quantized (it has {', '.join(qdq) or 'precision ' + PRECISION}); "
                         "quantize the FP32 or FP16 export it came from")
    if is_inlined(model):
        raise InputError(f"{source} is an inlined export (--inline): its attention is plain MatMuls that would be "
                         "quantized too; quantize the export without --inline (the ElfattAttention nodes stay in float)")
    nodes = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]
    has_function = any(f.domain == DOMAIN and f.name == OP_TYPE for f in model.functions)
    if nodes and not has_function:
        raise InputError(f"{source} is a plugin-only export ({len(nodes)} {DOMAIN}::{OP_TYPE} nodes, no function body), "
                         "which ONNX Runtime cannot run to calibrate; quantize an export without --plugin-only "
                         "(`elfatt-deploy build` removes the function body itself)")
    if not any(n.op_type in QUANTIZED_OP_TYPES for n in model.graph.node):
        raise InputError(f"{source} has no MatMul, Gemm or Conv node to quantize")
    if meta.get("precision") not in (None, "fp32", "fp16"):
        raise InputError(f"{source} has precision {meta['precision']!r}; quantize an fp32 or fp16 export")
    return meta


def _upgrade_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    had_function = any(f.domain == DOMAIN for f in model.functions)
    try:
        upgraded = version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises plain RuntimeErrors
        raise InputError(f"the file's opset {_default_opset(model)} could not be converted to {opset} for FP16 Q/DQ "
                         f"({exc}); re-export with --opset {opset}") from None
    _attach_function(upgraded, had_function)
    return upgraded


def _attach_function(model: onnx.ModelProto, had_function: bool) -> None:
    """The elfatt function body for the model's (possibly changed) opset, as the exporter writes it."""
    keep = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(keep)
    if had_function:
        attach_functions(model, _default_opset(model))


def _input_info(model: onnx.ModelProto, source: str):
    from ..engine.onnx_prep import single_image_input

    return single_image_input(model, source=source)


def calibration_shape(model: onnx.ModelProto, meta: dict, source: str, input_shape=None) -> tuple[int, int, int]:
    """(batch, height, width) of the calibration batches: --input-shape, else the file's static
    dims, else the traced shape in its metadata (dynamic batches calibrate 8 images at a time)."""
    from ..shapes import check_image_shape, parse_shape

    spec = _input_info(model, source)
    dims = list(spec.dims)
    if input_shape is not None:
        shape = parse_shape(input_shape, rank=4, what="--input-shape") if isinstance(input_shape, str) else tuple(input_shape)
        n, _, h, w = check_image_shape(shape, what="--input-shape")
        for axis, (want, have) in enumerate(zip((n, 3, h, w), dims)):
            if isinstance(have, int) and have != want:
                raise InputError(f"--input-shape {'x'.join(map(str, shape))} does not fit the file's static input "
                                 f"{spec.name} {dims} (axis {axis} is {have})")
        return n, h, w
    traced = meta.get("input_shape")
    traced_dims = [int(d) for d in traced.split("x")] if traced else [1, 3, 224, 224]
    batch = dims[0] if isinstance(dims[0], int) else 8
    h = dims[2] if isinstance(dims[2], int) else traced_dims[2]
    w = dims[3] if isinstance(dims[3], int) else traced_dims[3]
    return batch, h, w


#: why a MatMul of the position-embedding resample (elfatt_deploy/models/resample.py) stays in float
SIZE_ONLY_REASON = "reads the input's size only, not its values (the position-embedding resample)"


def size_only_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul/Gemm/Conv nodes whose inputs do not depend on the image's values.

    A dynamic ViT export resamples its position table with two MatMuls of interpolation matrices
    built from the input's height and width (models/resample.py): weights and sizes only, nothing
    to calibrate on images; they stay in float, as the bicubic Resize they replace did.
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    data = {i.name for i in graph.input if i.name not in initializers}
    for node in graph.node:
        if node.op_type not in ("Shape", "Size") and any(name in data for name in node.input):
            data.update(node.output)
    return [n.name for n in graph.node if n.op_type in QUANTIZED_OP_TYPES and not any(i in data for i in n.input)]


def _quantized_nodes(model: onnx.ModelProto, exclude: Sequence[str] = (),
                     size_only: Sequence[str] = ()) -> tuple[list[str], dict]:
    """Names of the MatMul/Gemm/Conv nodes that take a dequantized input, and of those that do not."""
    producers = {o: n for n in model.graph.node for o in n.output}
    quantized, unquantized = [], {}
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OP_TYPES:
            continue
        sources = [producers.get(i) for i in node.input[:2]]
        if all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            quantized.append(node.name)
        else:
            unquantized[node.name] = ("excluded (--exclude)" if node.name in exclude else SIZE_ONLY_REASON
                                      if node.name in size_only else "left in float by ONNX Runtime")
    return quantized, unquantized


def _float_ops(model: onnx.ModelProto) -> dict:
    """Op types of the main graph that stay in float, with counts (Q/DQ and shape plumbing left out)."""
    skip = set(QDQ_OP_TYPES) | set(QUANTIZED_OP_TYPES) | {"Shape", "Reshape", "Squeeze", "Unsqueeze", "Concat",
                                                          "Transpose", "Gather", "Slice", "Constant", "Cast", "Mod", "Neg"}
    counts: dict = {}
    for node in model.graph.node:
        if node.op_type not in skip:
            key = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


@contextlib.contextmanager
def _quiet_ort_quantizer(verbose: bool = False):
    """ORT's quantizer logs a pre-processing hint through the root logger and its histogram
    calibrators print to stdout: keep the hint off the terminal and the chatter off stdout
    (on stderr when ``verbose``, else dropped, as the CLI promises for library logs)."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr if verbose else io.StringIO()):
            yield
    finally:
        root.setLevel(previous)


def quantize_onnx(onnx_path, output, calib_dir, *, samples: Optional[int] = None, method: str = "max",
                  input_shape=None, exclude: Sequence[str] = (), percentile: float = DEFAULT_PERCENTILE,
                  progress: bool = True, verbose: bool = False, reduce_range: bool = False) -> QuantizeResult:
    """Quantizes ``onnx_path`` into ``output`` (written atomically; nothing is left there on error).
    ``verbose`` shows ONNX Runtime's calibrator output on stderr. ``reduce_range`` quantizes the weights to
    7 bits: for x86 CPUs without VNNI, whose int8 kernels (ONNX Runtime's MLAS, OpenVINO's oneDNN) sum u8 x s8
    products in saturating 16-bit pairs (ONNX Runtime's quantization docs); not needed for TensorRT."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from ..preprocess import normalization_from_props
    from ..engine.onnx_prep import load_model
    from .calibration import ImageCalibrationReader, open_calibration_set

    source, output = Path(onnx_path), Path(output)
    if method not in METHODS:
        raise InputError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    check_output_path(output, what="-o", suffix=".onnx", example_name="model.int8.onnx")
    if source.exists() and output.resolve() == source.resolve():
        raise InputError(f"-o {output} is the input file; write the quantized model to another file")
    if not 0 < percentile <= 100:
        raise InputError(f"--percentile {percentile} must be in (0, 100], e.g. 99.999")
    model = load_model(source)
    meta = check_quantizable(model, str(source))
    names = {n.name for n in model.graph.node}
    unknown = [e for e in exclude if e not in names]
    if unknown:
        candidates = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES]
        raise InputError(f"--exclude names node(s) {', '.join(unknown)} that are not in {source}; its MatMul/Gemm/Conv "
                         f"nodes are: {', '.join(candidates)}")
    base_precision = meta.get("precision", "fp32")
    batch, h, w = calibration_shape(model, meta, str(source), input_shape)
    dynamic_batch = not isinstance(_input_info(model, str(source)).dims[0], int)
    if method != "max" and dynamic_batch:
        batch = 1  # ORT's histogram calibrators stack per-batch outputs: batches must be of one size
    normalization = normalization_from_props({p.key: p.value for p in model.metadata_props})
    calib = open_calibration_set(calib_dir, samples=samples, size=(h, w), batch=batch, normalization=normalization,
                                 fixed_batch=not dynamic_batch)
    if base_precision == "fp16" and _default_opset(model) < FP16_QDQ_OPSET:
        model = _upgrade_opset(model, FP16_QDQ_OPSET)
    had_function = any(f.domain == DOMAIN for f in model.functions)
    input_name = _input_info(model, str(source)).name
    size_only = [name for name in size_only_layers(model) if name not in exclude]

    reader = ImageCalibrationReader(calib, input_name, progress=progress)
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "AddQDQPairToWeight": True,
        "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OP_TYPES),
        "CalibTensorRangeSymmetric": True,
    }
    if method == "percentile":
        extra["CalibPercentile"] = float(percentile)
    with tempfile.TemporaryDirectory(prefix="elfatt-quantize-") as tmp:
        staged_in, staged_out = Path(tmp) / "input.onnx", Path(tmp) / "quantized.onnx"
        onnx.save(model, str(staged_in))
        try:
            with _quiet_ort_quantizer(verbose):
                quantize_static(
                    str(staged_in), str(staged_out), reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=True, reduce_range=bool(reduce_range),
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(exclude) + size_only, calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                    calibration_providers=["CPUExecutionProvider"], extra_options=extra,
                )
        except AssertionError as exc:  # ORT's "scale issue": a range it cannot turn into a finite scale
            raise InputError(
                f"calibrating {source} gave activation ranges without a finite INT8 scale (ONNX Runtime: {exc}); "
                "the model overflows (inf/NaN) on these images: check its weights and the images, or keep the "
                "layers that overflow in float with --exclude"
            ) from None
        quantized_model = onnx.load(str(staged_out))
    _attach_function(quantized_model, had_function)
    quantized, unquantized = _quantized_nodes(quantized_model, exclude, size_only)
    if not quantized:
        raise InputError(f"ONNX Runtime quantized none of the MatMul/Gemm/Conv nodes of {source}")
    summary = calib.summary()
    summary["method"] = method
    if method == "percentile":
        summary["percentile"] = float(percentile)
    # ONNX Runtime's quantizer names itself (onnx.quantize 0.1.0); the quantizer is in elfatt.quantizer below
    quantized_model.producer_name, quantized_model.producer_version = "elfatt-deploy", __version__
    set_metadata(quantized_model, {
        PREFIX + "precision": PRECISION,
        PREFIX + "base_precision": base_precision,
        PREFIX + "quantizer": f"onnxruntime {__import__('onnxruntime').__version__} quantize_static (QDQ)",
        PREFIX + "calibration": json.dumps(summary, sort_keys=True),
        PREFIX + "calibration_images": str(summary["images"]),
        PREFIX + "calibration_sha256": summary["sha256"],
        PREFIX + "reduce_range": json.dumps(bool(reduce_range)),
        PREFIX + "quantized_nodes": str(len(quantized)),
        PREFIX + "unquantized_nodes": json.dumps(sorted(unquantized)),
    })
    quantized_model.doc_string = describe_export({p.key: p.value for p in quantized_model.metadata_props})
    try:
        onnx.checker.check_model(quantized_model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise InputError(f"the quantized model fails onnx.checker (full_check): {exc}") from exc
    data = quantized_model.SerializeToString()
    _check_loads_in_onnxruntime(data, source, _default_opset(quantized_model))
    atomic_write_bytes(output, data)
    return QuantizeResult(output=output, base_precision=base_precision, method=method, calibration=summary,
                          quantized=quantized, unquantized=unquantized, float_ops=_float_ops(quantized_model),
                          opset=_default_opset(quantized_model), reduce_range=bool(reduce_range))
