"""The inlined form of an export: every ``elfatt::ElfattAttention`` node replaced by its function body.

Our default file keeps one custom node per attention layer plus the model-local
function with the same math in standard ops. Runtimes that ignore model-local
functions (OpenVINO's ONNX frontend, some converters) cannot read it; they need
the same model with the function inlined (``onnx.inliner.inline_local_functions``):
standard ops only, no ``elfatt`` domain in the graph or in the opset imports.

``inline_elfatt_functions(model)`` returns that form as a new ModelProto:

- the body nodes of each call are named after the call site
  (``/blocks.3/attn/ElfattAttention/Reshape_12``), so profiles and viewers show which layer a node
  belongs to;
- ``Constant(value_float=...)`` (and value_int, value_floats, value_ints), which the
  function's attribute references become, are written as ``Constant(value=tensor)``,
  so that onnx-graphsurgeon's constant folding keeps their type (constants_as_tensors),
  and ``Shape(start=, end=)`` as ``Shape`` + ``Slice``, which its shape folding reads
  right (shape_slices_as_slice): ``polygraphy surgeon sanitize --fold-constants``
  then gives a correct file;
- what the inlined body computes from weights alone (per layer the LePE weight's and bias's
  Split, Reshape, Concat, ... into the head parts) is folded into initializers (fold.py), so the
  depthwise LePE ``Conv`` reads its weight from an initializer, as tools that quantize or
  convert Conv layers expect (ONNX Runtime's ``quantize_dynamic`` refuses the unfolded form:
  ``Expected ... to be an initializer``); ONNX Runtime computes the folded values, so the
  outputs stay the same bit for bit. Only the body's nodes fold: the rest of the graph stays as
  the file has it (an int8-qdq file's weight Q/DQ pairs above all). Where ONNX Runtime cannot
  compute them the body stays unfolded, with a warning;
- the ``elfatt`` opset import is dropped; the default-domain opset, the IR
  version, the producer and ``metadata_props`` are kept, and ``elfatt.inlined``
  says the file is inlined;
- the result is checked with ``onnx.checker.check_model(full_check=True)``.

A plugin-only file (nodes but no function) cannot be inlined: there is nothing to
inline it with; re-export it without ``--plugin-only``.
"""

from __future__ import annotations

import warnings

import onnx

from .fold import fold_constant_nodes
from .metadata import PREFIX, set_metadata
from .onnx_function import DOMAIN, OP_TYPE

#: metadata key (after the ``elfatt.`` prefix) that marks an inlined file
INLINED_KEY = "inlined"


def elfatt_call_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The ``elfatt`` nodes of ``graph`` (ElfattAttention calls, or any other op of the domain)."""
    return [n for n in graph.node if n.domain == DOMAIN]


def is_inlined(model: onnx.ModelProto) -> bool:
    """True for a file written by ``export --inline`` (it says so in its metadata)."""
    return any(p.key == PREFIX + INLINED_KEY and p.value == "true" for p in model.metadata_props)


def _function(model: onnx.ModelProto, node: onnx.NodeProto):
    return next((f for f in model.functions if f.domain == node.domain and f.name == node.op_type
                 and f.overload == node.overload), None)


def _name_inlined_nodes(original: onnx.ModelProto, inlined: onnx.ModelProto) -> None:
    """Names each body node after its call site. The inliner replaces a call by its body's nodes
    in place and in order; the slice is checked op by op before any name is set."""
    names: list[str] = []
    position = 0
    new_nodes = inlined.graph.node
    for node in original.graph.node:
        function = _function(original, node)
        if function is None:
            if position >= len(new_nodes) or new_nodes[position].op_type != node.op_type:
                return  # not the layout we expect (e.g. a future inliner): keep the inliner's names
            names.append(new_nodes[position].name)
            position += 1
            continue
        body = new_nodes[position:position + len(function.node)]
        if [n.op_type for n in body] != [n.op_type for n in function.node]:
            return
        call = node.name or f"{node.op_type}_{len(names)}"
        names.extend(f"{call}/{n.op_type}_{i}" for i, n in enumerate(body))
        position += len(function.node)
    if position != len(new_nodes) or len(set(names)) != len(names):
        return
    for node, name in zip(new_nodes, names):
        node.name = name


#: Constant attributes that hold a plain number or list, and the tensor type each one means (ONNX spec)
_CONSTANT_SCALARS = {"value_float": (onnx.TensorProto.FLOAT, False), "value_floats": (onnx.TensorProto.FLOAT, True),
                     "value_int": (onnx.TensorProto.INT64, False), "value_ints": (onnx.TensorProto.INT64, True)}


def constants_as_tensors(graph: onnx.GraphProto) -> int:
    """Rewrites (in place) ``Constant(value_float=x)`` and its int / list siblings as ``Constant(value=tensor)``.

    The same value and type. The function body reads its attributes through such Constants
    (``ref_attr_name``), and inlining leaves them with the layer's number; onnx-graphsurgeon
    (``polygraphy surgeon sanitize --fold-constants``) folds a ``value_float`` into a float64
    initializer, which breaks the model (``Equal`` bound to double and float in ONNX Runtime).
    A ``value`` tensor folds as the float32 it is. Returns how many nodes were rewritten.
    """
    from onnx import helper  # noqa: PLC0415

    rewritten = 0
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
            continue
        attribute = node.attribute[0]
        if attribute.name not in _CONSTANT_SCALARS:
            continue
        data_type, is_list = _CONSTANT_SCALARS[attribute.name]
        values = list(helper.get_attribute_value(attribute)) if is_list else [helper.get_attribute_value(attribute)]
        tensor = helper.make_tensor("value", data_type, [len(values)] if is_list else [], values)
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("value", tensor))
        rewritten += 1
    return rewritten


def shape_slices_as_slice(graph: onnx.GraphProto) -> int:
    """Rewrites (in place) ``Shape(x, start=a, end=b)`` as ``Slice(Shape(x), [a], [b])``: the same values.

    onnx-graphsurgeon's shape folding (``fold_constants(fold_shapes=True)``, which ``polygraphy
    surgeon sanitize --fold-constants`` runs) replaces a Shape node of a static tensor by the whole
    shape and ignores ``start``/``end`` (opset 15), which breaks a static file (``Incompatible
    dimensions`` in ONNX Runtime); Shape followed by Slice it folds correctly. Returns how many nodes
    were rewritten.
    """
    from onnx import TensorProto, helper  # noqa: PLC0415

    nodes = []
    rewritten = 0
    for node in graph.node:
        attrs = {a.name: a.i for a in node.attribute}
        if node.op_type != "Shape" or node.domain not in ("", "ai.onnx") or not attrs:
            nodes.append(node)
            continue
        base = node.name or f"{node.output[0]}_shape"
        full, starts, ends = f"{node.output[0]}__full", f"{node.output[0]}__start", f"{node.output[0]}__end"
        end = attrs.get("end", 2**63 - 1)  # Slice clamps, as Shape's end does
        nodes += [
            helper.make_node("Shape", [node.input[0]], [full], name=f"{base}/full"),
            helper.make_node("Constant", [], [starts], name=f"{base}/start",
                             value=helper.make_tensor("value", TensorProto.INT64, [1], [attrs.get("start", 0)])),
            helper.make_node("Constant", [], [ends], name=f"{base}/end",
                             value=helper.make_tensor("value", TensorProto.INT64, [1], [end])),
            helper.make_node("Slice", [full, starts, ends], list(node.output), name=base),
        ]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten


def _fold_the_bodies(original: onnx.ModelProto, inlined: onnx.ModelProto) -> None:
    """Folds what the inlined bodies compute from constants alone. A body node is one that makes no value
    the original graph's other nodes made (the inliner keeps those nodes and their output names, and gives
    a body's last node the call's output, which no other node made)."""
    kept = {o for n in original.graph.node if _function(original, n) is None for o in n.output if o}
    try:
        fold_constant_nodes(inlined, only=lambda node: not kept.intersection(node.output))
    except Exception as exc:  # noqa: BLE001  (ONNX Runtime's and shape inference's errors have no common base)
        warnings.warn(f"the inlined attention's weight-only arithmetic was left unfolded ({type(exc).__name__}: "
                      f"{exc}); the file is correct, but tools that want constant Conv weights may refuse it",
                      RuntimeWarning, stacklevel=3)


def inline_elfatt_functions(model: onnx.ModelProto, *, check: bool = True) -> onnx.ModelProto:
    """``model`` with every elfatt function call inlined into standard ops (a new ModelProto).

    Raises ValueError when an elfatt node has no function to inline (a plugin-only file).
    A model without elfatt nodes (the vanilla twin) comes back with only the metadata added.
    """
    calls = elfatt_call_nodes(model.graph)
    missing = sorted({f"{n.domain}::{n.op_type}" + (f" (overload {n.overload!r})" if n.overload else "") for n in calls if _function(model, n) is None})
    if missing:
        raise ValueError(
            f"the model has {len(calls)} {', '.join(missing)} node(s) but no model-local function for them (a "
            "plugin-only export), so they cannot be inlined; re-export without --plugin-only")
    from onnx import inliner  # noqa: PLC0415

    inlined = inliner.inline_local_functions(model)
    _name_inlined_nodes(model, inlined)
    constants_as_tensors(inlined.graph)
    shape_slices_as_slice(inlined.graph)
    _fold_the_bodies(model, inlined)
    left = elfatt_call_nodes(inlined.graph)
    if left or any(f.domain == DOMAIN for f in inlined.functions):
        raise ValueError(f"inlining left {len(left)} {DOMAIN} node(s) in the graph; this onnx "
                         f"{onnx.__version__} inliner does not handle the {DOMAIN}::{OP_TYPE} function")
    kept = [o for o in inlined.opset_import if o.domain != DOMAIN]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    set_metadata(inlined, {PREFIX + INLINED_KEY: "true"})
    if check:
        try:
            onnx.checker.check_model(inlined, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ValueError(f"the inlined model fails onnx.checker (full_check): {exc}") from exc
    return inlined
