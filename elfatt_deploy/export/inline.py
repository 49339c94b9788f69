"""The inlined form of an export: every ``elfatt::ElfattAttention`` node replaced by its function body.

Our default file keeps one custom node per attention layer plus the model-local
function with the same math in standard ops. Runtimes that ignore model-local
functions (OpenVINO's ONNX frontend, some converters) cannot read it; they need
the same model with the function inlined (``onnx.inliner.inline_local_functions``):
standard ops only, no ``elfatt`` domain in the graph or in the opset imports.

``inline_elfatt_functions(model)`` returns that form as a new ModelProto:

- the body nodes of each call are named after the call site
  (``node_attention_3/Reshape_12``), so profiles and viewers show which layer a node
  belongs to;
- the ``elfatt`` opset import is dropped; the default-domain opset, the IR
  version, the producer and ``metadata_props`` are kept, and ``elfatt.inlined``
  says the file is inlined;
- the result is checked with ``onnx.checker.check_model(full_check=True)``.

A plugin-only file (nodes but no function) cannot be inlined: there is nothing to
inline it with; re-export it without ``--plugin-only``.
"""

from __future__ import annotations

import onnx

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
    return next((f for f in model.functions if f.domain == node.domain and f.name == node.op_type), None)


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


def inline_elfatt_functions(model: onnx.ModelProto, *, check: bool = True) -> onnx.ModelProto:
    """``model`` with every elfatt function call inlined into standard ops (a new ModelProto).

    Raises ValueError when an elfatt node has no function to inline (a plugin-only file).
    A model without elfatt nodes (the vanilla twin) comes back with only the metadata added.
    """
    calls = elfatt_call_nodes(model.graph)
    missing = sorted({f"{n.domain}::{n.op_type}" for n in calls if _function(model, n) is None})
    if missing:
        raise ValueError(
            f"the model has {len(calls)} {', '.join(missing)} node(s) but no model-local function for them (a "
            "plugin-only export), so they cannot be inlined; re-export without --plugin-only")
    from onnx import inliner  # noqa: PLC0415

    inlined = inliner.inline_local_functions(model)
    _name_inlined_nodes(model, inlined)
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
