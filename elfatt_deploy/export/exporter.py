"""``export_onnx``: a model to an ONNX file with one ``elfatt::ElfattAttention`` node per attention layer.

torch.export traces the model (``torch.onnx.export(..., dynamo=True)``); the
custom translation (translation.py) turns each ``elfatt::attention`` call into
one node; the main-graph nodes that depend on weights alone are computed once
(fold.py: in a static export the resampled position-embedding table), the GELUs are put in
the operand order ONNX Runtime fuses (gelu.py); then the model-local function (onnx_function.py) is attached unless
``plugin_only``, the metadata is set, the file is checked with
``onnx.checker.check_model(full_check=True)``, inlined into standard ops with
``inline`` (inline.py) and written atomically.
"""

from __future__ import annotations

import contextlib
import io
import os
import logging
import re
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import onnx
import torch
from torch import nn

from .._version import __version__
from ..atomic import atomic_write_bytes, check_output_path
from ..models.probabilities import PROBABILITIES_OUTPUT, WithProbabilities
from ..nn.attention import ATTENTION_KINDS, ElfattAttention
from ..op.spec import ElfattAttrs
from ..shapes import check_image_shape, format_shape, parse_shape
from .fold import fold_constant_nodes
from .gelu import reorder_erf_gelu
from .fp16 import to_half_precision
from .inline import inline_elfatt_functions, shape_slices_as_slice
from .metadata import INPUT_NAME, PRECISIONS, describe_export, export_metadata, set_metadata
from .naming import name_after_modules
from .onnx_function import DOMAIN, MIN_OPSET, OP_TYPE, attach_functions
from .onnx_schema import register_schema
from .translation import custom_translation_table

DEFAULT_OPSET = 18
#: Highest default-domain opset tested here (ONNX Runtime 1.32, TensorRT 10.x parse up to this).
MAX_OPSET = 21


def elfatt_layers(model: nn.Module) -> list[tuple[str, ElfattAttention]]:
    """The attention layers that export as ElfattAttention nodes, by module path."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, ElfattAttention) and m.attention == "elfatt"]


def check_exportable(model: nn.Module) -> None:
    """Raises ValueError naming the module when the model cannot be exported as the contract says."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        where = name or "<model>"
        if isinstance(module, nn.MultiheadAttention):
            raise ValueError(
                f"module {where!r} is a torch.nn.MultiheadAttention, which this exporter does not map to "
                "ElfattAttention; build the model from elfatt_deploy.nn.ElfattAttention layers")
        if isinstance(module, ElfattAttention):
            if module.attention not in ATTENTION_KINDS:
                raise ValueError(f"module {where!r} has attention={module.attention!r}; use one of {ATTENTION_KINDS}")
            attrs = module.attrs
            if not isinstance(attrs, ElfattAttrs):
                raise ValueError(f"module {where!r} has attrs of type {type(attrs).__name__}; expected ElfattAttrs")
            try:  # heads and windows must be plain Python numbers: they become node attributes
                ElfattAttrs(attrs.global_heads, attrs.local_heads, attrs.window_h, attrs.window_w, attrs.scale)
            except ValueError as exc:
                raise ValueError(f"module {where!r} has a head configuration that is not static: {exc}") from None


def _check_opset(opset: Optional[int]) -> int:
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset={opset!r} is not supported; use an int from {MIN_OPSET} to {MAX_OPSET} "
                         f"(default {DEFAULT_OPSET})")
    return opset


#: Traced height and width of a dynamic export: torch.export's range for the symbolic sizes.
MIN_DYNAMIC_SIDE, MAX_DYNAMIC_SIDE = 32, 16384


def check_traced_shape(shape: Sequence[int], dynamic: bool, *, what: str = "input_shape") -> None:
    """Refuses, before any work, a traced size outside torch.export's range for a dynamic export."""
    _, _, h, w = (int(d) for d in shape)
    if dynamic and not (MIN_DYNAMIC_SIDE <= h <= MAX_DYNAMIC_SIDE and MIN_DYNAMIC_SIDE <= w <= MAX_DYNAMIC_SIDE):
        raise ValueError(
            f"{what} {format_shape(shape)}: a dynamic export is traced at a height and width from "
            f"{MIN_DYNAMIC_SIDE} to {MAX_DYNAMIC_SIDE}; give a traced shape in that range (the file still runs at "
            "any size, smaller images included), or export a static file (--no-dynamic) at this size")


def _input_shape(model: nn.Module, input_shape, dynamic: bool = False) -> tuple[int, int, int, int]:
    if isinstance(input_shape, str):
        input_shape = parse_shape(input_shape, what="input_shape")
    shape = check_image_shape(tuple(int(d) for d in input_shape), channels=int(getattr(model, "in_chans", 3)),
                              what="input_shape")
    check_traced_shape(shape, dynamic)
    return shape


def _dynamic_shapes(dynamic: bool):
    if not dynamic:
        return None
    dim = torch.export.Dim
    return {"x": {0: dim("batch", min=1, max=4096), 2: dim("height", min=MIN_DYNAMIC_SIDE, max=MAX_DYNAMIC_SIDE),
                  3: dim("width", min=MIN_DYNAMIC_SIDE, max=MAX_DYNAMIC_SIDE)}}


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain(text: str) -> str:
    """Text without terminal colour codes (torch.export's messages carry them)."""
    return _ANSI_ESCAPE.sub("", text)


def _trace_input(shape: Sequence[int], dynamic: bool) -> torch.Tensor:
    n, c, h, w = shape
    if dynamic:
        # torch.export specializes a dimension of size 1 (and equal sizes stay separate symbols)
        n = max(n, 2)
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def _log_level(logger: logging.Logger, level: int):
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _run_exporter(model: nn.Module, example: torch.Tensor, dynamic: bool, opset: int, output_name: str,
                  requested: Sequence[int] = ()):
    """torch.onnx.export (dynamo) with our translation; its progress chatter is kept off stdout."""
    chatter = io.StringIO()
    # The exporter logs a warning for every torchvision op it cannot register when
    # torchvision is absent: irrelevant for our models, so keep it quiet.
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    register_schema()  # before the exporter: a too old onnx is the environment, not the model
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), _log_level(registration_log, logging.ERROR):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[output_name],
                dynamic_shapes=_dynamic_shapes(dynamic), custom_translation_table=custom_translation_table(),
                opset_version=opset, optimize=True, external_data=False, verbose=False,
            )
    except Exception as exc:
        interruption = _interruption(exc)
        if interruption is not None:  # Ctrl-C or SIGTERM while torch.export ran, which wraps what it catches
            raise interruption from None
        text = _plain(str(exc)).strip()
        first_line = text.splitlines()[0] if text else type(exc).__name__
        traced = format_shape(example.shape)
        if requested and tuple(requested) != tuple(example.shape):
            traced += f" (the requested {format_shape(requested)} with batch >= 2: torch.export specializes size 1)"
        raise ValueError(
            f"torch.onnx.export could not export {type(model).__name__} traced at {traced}: "
            f"{type(exc).__name__}: {first_line}. Models must be built from modules torch.export can trace "
            "(see elfatt_deploy.models)") from exc
    return program.model_proto


def _interruption(exc: BaseException):
    """The KeyboardInterrupt (or the CLI's SIGTERM exception, or SystemExit) in ``exc``'s chain of causes, if
    any: torch.export reports what interrupted it as an export error of its own."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if not isinstance(exc, Exception):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _strip_exporter_props(model: onnx.ModelProto) -> None:
    """Drops the exporter's per-node debugging metadata (stack traces, fx nodes): smaller, deterministic files."""
    for node in model.graph.node:
        del node.metadata_props[:]
    for value in list(model.graph.input) + list(model.graph.output):
        del value.metadata_props[:]
    for init in model.graph.initializer:
        del init.metadata_props[:]


def _default_opset_version(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


#: torch.onnx.export(dynamo=True) takes custom_translation_table from this release on.
MIN_TORCH_FOR_EXPORT = (2, 6)


def check_torch_version(version: Optional[str] = None) -> None:
    """Refuses a torch too old for the exporter, saying what to do instead."""
    version = torch.__version__ if version is None else version
    parts = version.split("+")[0].split(".")
    try:
        found = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return  # an unusual local build: let the exporter speak for itself
    if found < MIN_TORCH_FOR_EXPORT:
        need = ".".join(map(str, MIN_TORCH_FOR_EXPORT))
        raise ValueError(
            f"ONNX export needs torch >= {need} (torch.onnx.export with dynamo=True and a custom translation "
            f"table); this is torch {version}. Upgrade torch, or export on another machine (tested with 2.13) "
            "and copy the .onnx file: engines can be built from it anywhere"
        )


def build_onnx_model(
    model: nn.Module,
    input_shape: Union[str, Sequence[int]],
    *,
    dynamic: bool = True,
    precision: str = "fp32",
    plugin_only: bool = False,
    opset: Optional[int] = None,
    inline: bool = False,
    softmax: bool = False,
    progress: Optional[Callable[[str], None]] = None,
) -> onnx.ModelProto:
    """The exported ModelProto, checked, without writing anything.

    ``softmax``: the output is ``probabilities``, the softmax of the logits over the classes in float32
    (models/probabilities.py; for DeepStream's classifier mode and other consumers of probabilities).

    ``progress`` is called with the name of each stage as it starts (the CLI shows them).
    The metadata records ``model.weights_provenance`` when the model has it (build_model sets it).
    """
    stage = progress or (lambda name: None)
    check_torch_version()
    check_exportable(model)
    if plugin_only and inline:
        raise ValueError("plugin_only and inline contradict each other: a plugin-only file has no function body to "
                         "inline; choose one (--plugin-only for TensorRT with the plugin, --inline for OpenVINO and "
                         "other tools that ignore ONNX functions)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
    opset = _check_opset(opset)
    shape = _input_shape(model, input_shape, dynamic)
    layers = elfatt_layers(model)
    was_training = model.training
    model.eval()
    try:
        traced = to_half_precision(model) if precision == "fp16" else model
        root = "model" if precision == "fp16" else ""  # where the user's model sits in what is traced
        output_name = "logits" if getattr(model, "num_classes", 1) > 0 else "features"
        if softmax:
            traced = WithProbabilities(traced)  # ValueError for a model without a classifier head
            root = "model." + root if root else "model"
            output_name = PROBABILITIES_OUTPUT
        stage("tracing (torch.export) and translating to ONNX")
        proto = _run_exporter(traced, _trace_input(shape, dynamic), dynamic, opset, output_name, requested=shape)
    finally:
        model.train(was_training)

    nodes = [n for n in proto.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]
    if len(nodes) != len(layers):
        raise ValueError(f"the exported graph has {len(nodes)} {DOMAIN}::{OP_TYPE} nodes for {len(layers)} attention "
                         "layers; the model calls the op outside ElfattAttention layers or a layer was folded away")
    stage("attaching the ElfattAttention function and metadata")
    try:  # from the exporter's module scopes, which the next line strips
        name_after_modules(proto, traced, root)
    except Exception as exc:  # names only: the file is right with torch.onnx's names too
        warnings.warn(f"kept torch.onnx's node and weight names: naming them after the modules failed "
                      f"({type(exc).__name__}: {exc}); please report it", RuntimeWarning, stacklevel=2)
    _strip_exporter_props(proto)
    stage("folding what depends on the weights only (the position-embedding table)")
    fold_constant_nodes(proto)
    reorder_erf_gelu(proto)  # the MLPs' GELU in the operand order ONNX Runtime fuses (bitwise the same)
    # torch.onnx's sym_size as Shape + Slice: onnx-graphsurgeon (polygraphy surgeon sanitize --fold-constants)
    # folds Shape(x, start, end) of a static tensor to the whole shape, breaking the file
    shape_slices_as_slice(proto.graph)
    del proto.functions[:]
    if not plugin_only:
        attach_functions(proto, _default_opset_version(proto))
    proto.producer_name = "elfatt-deploy"  # torch.onnx wrote "pytorch" and its own version
    proto.producer_version = __version__
    model_name = getattr(model, "model_name", type(model).__name__)
    metadata = export_metadata(
        model_name=model_name,
        model_config=getattr(model, "model_config", {}),
        precision=precision, dynamic=dynamic, input_shape=shape, output_name=output_name, plugin_only=plugin_only,
        inlined=inline,
        weights=getattr(model, "weights_provenance", None),
        torch_version=torch.__version__,
    )
    set_metadata(proto, metadata)
    proto.doc_string = describe_export(metadata)
    proto.graph.name = model_name  # torch.onnx wrote "main_graph"
    stage("checking (onnx.checker, full check)")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"the exported model fails onnx.checker (full_check): {exc}") from exc
    if inline:  # checked again, after inlining
        stage("inlining the function into standard ops")
        proto = inline_elfatt_functions(proto)
    return proto


def export_onnx(
    model: nn.Module,
    path: Union[str, os.PathLike],
    input_shape: Union[str, Sequence[int]],
    dynamic: bool = True,
    precision: str = "fp32",
    plugin_only: bool = False,
    opset: Optional[int] = None,
    inline: bool = False,
    softmax: bool = False,
    progress: Optional[Callable[[str], None]] = None,
) -> Path:
    """Exports ``model`` to ``path``; returns the path.

    ``input_shape`` (N x C x H x W, e.g. ``"1x3x224x224"`` or a tuple) is the
    traced shape; with ``dynamic`` the file accepts any batch, height and
    width. ``precision="fp16"`` writes an FP16 graph with float32 I/O
    (fp16.py). ``plugin_only`` leaves out the function body (for trtexec /
    Polygraphy with the TensorRT plugin). ``inline`` writes the function body
    inlined into standard ops instead of the custom nodes (for OpenVINO and
    other tools that ignore ONNX functions; inline.py). ``opset`` defaults to 18.
    ``softmax`` makes the output ``probabilities`` (softmax of the logits, float32).
    The file is written atomically: on any error no file is left at ``path``.
    """
    path = check_output_path(path, what="output path", suffix=".onnx", example_name="model.onnx")
    proto = build_onnx_model(model, input_shape, dynamic=dynamic, precision=precision,
                             plugin_only=plugin_only, opset=opset, inline=inline, softmax=softmax,
                             progress=progress)
    if progress:
        progress("writing")
    atomic_write_bytes(path, proto.SerializeToString())
    return path
