"""Constant folding of the exported main graph: what depends on weights alone is computed once, at export.

``fold_constant_nodes(model)`` finds the main-graph nodes whose inputs are all
constants (initializers, ``Constant`` nodes, or outputs of such nodes), computes
them with ONNX Runtime (CPU, graph optimizations off) and stores the values the
rest of the graph reads as initializers. Initializers nothing reads any more are
dropped.

What it folds in our models is the position-embedding table: in a static export
the whole bicubic resample (elfatt_deploy/models/resample.py) becomes one
``[1, h, w, C]`` initializer, so nothing of it runs per inference; in a dynamic
export only the layout ops on the table (its ``[g_h, g_w * C]`` view) fold, the
interpolation matrices depend on the input size and stay.

Only standard-domain nodes without subgraphs fold (never an ``elfatt`` node, never
anything inside a function, never a QuantizeLinear / DequantizeLinear: the Q/DQ pair on a
weight is how explicit INT8 says that weight is int8, and folding it would store the weight
dequantized), and with ``only`` just the nodes it accepts; nodes without inputs (``Constant``, random generators)
stay as they are; a value over ``max_bytes``, and a ``Cast`` to a wider type that
the run-time graph reads (an fp16 export's table cast to float32), are left to be
computed at run time by the node that makes them (their constant inputs still fold).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import onnx
from onnx import numpy_helper

#: a folded value larger than this stays computed at run time (the file would grow by it)
DEFAULT_MAX_BYTES = 256 * 2**20

#: the domains of the standard ONNX operator set
STANDARD_DOMAINS = ("", "ai.onnx")

#: never folded: explicit quantization (a weight's Q/DQ pair) must reach the runtime as it is
NEVER_FOLDED = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _foldable_nodes(graph: onnx.GraphProto,
                    only: Optional[Callable[[onnx.NodeProto], bool]] = None) -> list[onnx.NodeProto]:
    """The nodes of ``graph`` whose inputs are all constant (and that ``only`` accepts), in graph order."""
    graph_inputs = {i.name for i in graph.input}
    constant = {init.name for init in graph.initializer if init.name not in graph_inputs}
    foldable = []
    for node in graph.node:
        standard = node.domain in STANDARD_DOMAINS and not _has_subgraph(node)
        if standard and node.op_type == "Constant":
            if not any(a.ref_attr_name for a in node.attribute):
                constant.update(node.output)
            continue
        inputs = [name for name in node.input if name]
        allowed = node.op_type not in NEVER_FOLDED and (only is None or only(node))
        if standard and allowed and inputs and all(name in constant for name in inputs):
            foldable.append(node)
            constant.update(o for o in node.output if o)
    return foldable


def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto], wanted: list[str]) -> dict[str, np.ndarray]:
    """Runs ``nodes`` (and the Constant nodes and initializers they read) in ONNX Runtime."""
    import onnxruntime as ort  # noqa: PLC0415

    graph = model.graph
    produced = {o for n in nodes for o in n.output}
    needed = {name for n in nodes for name in n.input if name and name not in produced}
    constants = [n for n in graph.node if n.op_type == "Constant" and n.domain in STANDARD_DOMAINS
                 and n.output[0] in needed]
    initializers = [init for init in graph.initializer if init.name in needed]
    sub_graph = onnx.helper.make_graph(constants + list(nodes), "fold", [], [], initializers)
    opsets = [o for o in model.opset_import if o.domain in STANDARD_DOMAINS]
    sub = onnx.helper.make_model(sub_graph, opset_imports=opsets, ir_version=model.ir_version)
    types = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(sub, strict_mode=True).graph.value_info}
    sub.graph.output.extend(types[name] for name in wanted)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(sub.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip(wanted, session.run(wanted, {})))


def _read_outside(graph: onnx.GraphProto, folded: set[int]) -> set[str]:
    """Names read by the nodes not in ``folded`` (ids) and by the graph outputs."""
    read = {name for n in graph.node if id(n) not in folded for name in n.input}
    read.update(o.name for o in graph.output)
    return read


def fold_constant_nodes(model: onnx.ModelProto, *, max_bytes: int = DEFAULT_MAX_BYTES,
                        only: Optional[Callable[[onnx.NodeProto], bool]] = None) -> int:
    """Folds (in place) the main-graph nodes of ``model`` that depend on constants only; returns how many.

    ``only``: fold just the nodes it accepts (a node it refuses stays, and so does what reads it).
    The values stay the ones ONNX Runtime computes for the unfolded file.
    """
    graph = model.graph
    constant = _foldable_nodes(graph, only)  # every node whose value depends on constants only
    initializers = {init.name: init for init in graph.initializer}
    kept: set[int] = set()  # ids of those that stay computed at run time all the same
    while True:
        removed = [n for n in constant if id(n) not in kept]
        if not removed:
            return 0
        read = _read_outside(graph, {id(n) for n in removed})
        wanted = [name for n in removed for name in n.output if name and name in read]
        casts = [n for n in removed if n.op_type == "Cast" and n.output[0] in read]
        extra = [n.input[0] for n in casts if n.input[0] not in initializers and n.input[0] not in wanted]
        values = _evaluate(model, constant, wanted + extra) if wanted else {}

        def itemsize(name: str) -> int:
            if name in initializers:
                return onnx.helper.tensor_dtype_to_np_dtype(initializers[name].data_type).itemsize
            return values[name].itemsize

        # a Cast to a wider type would store a larger copy of a constant the file holds: it stays a run-time Cast
        drop = {n.output[0] for n in casts if itemsize(n.output[0]) > itemsize(n.input[0])}
        drop.update(name for name in wanted if values[name].nbytes > max_bytes)
        if not drop:
            break
        # the nodes that make them stay; what they read is still folded (and stored)
        kept.update(id(n) for n in removed if drop.intersection(n.output))
    folded = {id(n) for n in removed}
    nodes = [n for n in graph.node if id(n) not in folded]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(numpy_helper.from_array(np.asarray(values[name]), name) for name in wanted)
    _drop_unread_constants(graph)
    return len(removed)


def _drop_unread_constants(graph: onnx.GraphProto) -> None:
    """Removes the initializers and Constant nodes that nothing reads any more, and stale value_info."""
    read = _read_outside(graph, set())
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.domain in STANDARD_DOMAINS
                                           and not any(o in read for o in n.output))]
    if len(nodes) != len(graph.node):
        del graph.node[:]
        graph.node.extend(nodes)
    kept = [init for init in graph.initializer if init.name in read]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
    # and the value_info of the values that are gone (the folded nodes' outputs, the dropped initializers)
    defined = ({init.name for init in graph.initializer} | {v.name for v in graph.input}
               | {out for node in graph.node for out in node.output})
    infos = [info for info in graph.value_info if info.name in defined]
    if len(infos) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(infos)
