"""Names in the exported graph after the PyTorch modules they come from.

torch.onnx (dynamo) names nodes after FX nodes (``node_MatMul_72``), and its optimizer
gives the weights it folds new names: a ``Linear`` weight, stored transposed for
``MatMul``, becomes ``val_73``; initializers of equal content are merged, so in a
random-weight model every LayerNorm reads ``blocks.0.norm1.weight``. Per-layer
profiles (``trtexec --dumpProfile``, Polygraphy), layer-precision and quantization
exclusion lists (``quantize --exclude``), TensorRT refit by weight name and
Netron all show or take these names, so ``name_after_modules`` renames, from the
exporter's per-node module scopes (``pkg.torch.onnx.name_scopes``, read before
they are stripped):

* each node as ``/<module path>/<OpType>``, one path component per module level and a
  ``_<k>`` suffix for the k-th repeat in one module (the convention of torch.onnx's
  TorchScript exporter): ``/blocks.0/attn/qkv/MatMul``, ``/blocks.0/attn/ElfattAttention``,
  ``/Add_3`` at the top level;
* each weight a node reads after the parameter or buffer of that node's module (else of
  one of its submodules) that holds the same values: ``blocks.0.attn.qkv.bias``, and ``blocks.0.attn.qkv.weight.T``
  for the transposed copy (a distinct name, so that a weight from the state dict is never
  put where its transpose belongs). A merged initializer is split again into one per
  parameter (a copy only where the values were equal), so every parameter has its own
  name. Nothing changes where no parameter matches exactly, or several do.

The values and the computation are untouched: only names change.
"""

from __future__ import annotations

import ast
import collections
from typing import Optional

import numpy as np
import onnx
from onnx import numpy_helper
from torch import nn

#: the exporter's per-node record of the module scopes the node was traced in
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
#: the first scope of nodes traced outside any module (the input's size reads)
_NO_MODULE_SCOPE = "_empty_nn_module_stack_from_metadata_hook"
#: suffix of the name of a weight stored transposed (``W.T``)
TRANSPOSED_SUFFIX = ".T"


def module_scopes(node: onnx.NodeProto) -> Optional[list[str]]:
    """The dotted paths of the modules ``node`` was traced in, outermost first ([] at the top level), or None
    where the exporter left no record."""
    record = next((p.value for p in node.metadata_props if p.key == SCOPES_KEY), None)
    if record is None:
        return None
    try:
        scopes = ast.literal_eval(record)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes) or len(scopes) < 2:
        return None
    return [s for s in scopes[:-1] if s and s != _NO_MODULE_SCOPE]  # the last scope is the FX node itself


def _levels(scopes: list[str]) -> str:
    """One path component per module level, each relative to the one above:
    ``["blocks.0", "blocks.0.attn", "blocks.0.attn.qkv"]`` -> ``blocks.0/attn/qkv``."""
    levels, outer = [], ""
    for scope in scopes:
        levels.append(scope[len(outer) + 1:] if outer and scope.startswith(outer + ".") else scope)
        outer = scope
    return "/".join(levels)


def _relative(path: str, root: str) -> Optional[str]:
    """``path`` relative to the module at ``root`` ("" for root itself), or None for a module outside it."""
    if not root or path == root:
        return "" if path == root else path
    return path[len(root) + 1:] if path.startswith(root + ".") else None


def _tensors(module: nn.Module, prefix: str, recurse: bool) -> list[tuple[str, np.ndarray]]:
    """The module's parameters and buffers (its own, or with ``recurse`` also its submodules') by full name."""
    named = list(module.named_parameters(recurse=recurse)) + list(module.named_buffers(recurse=recurse))
    return [((f"{prefix}.{name}" if prefix else name), tensor.detach().cpu().numpy())
            for name, tensor in named if tensor is not None]


def _matching_names(value: np.ndarray, candidates: list[tuple[str, np.ndarray]]) -> list[str]:
    """The names under which ``value`` is a candidate as it is, or (``.T``) transposed."""
    found = []
    for name, tensor in candidates:
        if tensor.dtype.kind not in "fiub" or tensor.size != value.size:
            continue
        as_stored = tensor.astype(value.dtype, copy=False)
        if as_stored.shape == value.shape and np.array_equal(as_stored, value):
            found.append(name)
        elif as_stored.ndim == 2 and as_stored.T.shape == value.shape and np.array_equal(as_stored.T, value):
            found.append(name + TRANSPOSED_SUFFIX)
    return found


def _rename_nodes(graph: onnx.GraphProto, scopes: dict[int, list[str]]) -> None:
    taken = {n.name for i, n in enumerate(graph.node) if i not in scopes}
    repeats: collections.Counter = collections.Counter()
    for index, node in enumerate(graph.node):
        if index not in scopes:
            continue
        scope = _levels(scopes[index])
        base = f"/{scope}/{node.op_type}" if scope else f"/{node.op_type}"
        while True:
            k = repeats[base]
            repeats[base] += 1
            name = base if k == 0 else f"{base}_{k}"
            if name not in taken:
                break
        taken.add(name)
        node.name = name


def _reads(graph: onnx.GraphProto) -> collections.Counter:
    """How many times each name is read: node inputs (subgraphs' too) and graph outputs."""
    reads: collections.Counter = collections.Counter(v.name for v in graph.output)
    for node in graph.node:
        reads.update(node.input)
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                reads.update(_reads(sub))
    return reads


def _rename_weights(graph: onnx.GraphProto, paths: dict[int, str], model: nn.Module, root: str) -> None:
    initializers = {init.name: init for init in graph.initializer}
    values: dict[str, np.ndarray] = {}
    protected = {v.name for v in list(graph.input) + list(graph.output)}
    reads = _reads(graph)
    emptied: set[str] = set()
    candidates_of: dict[str, tuple[list, list]] = {}
    for index, node in enumerate(graph.node):
        path = paths.get(index)
        if path is None:
            continue
        if path not in candidates_of:
            try:
                module = model.get_submodule(path) if path else model
            except AttributeError:
                module = None
            relative = _relative(path, root)
            known = module is not None and relative is not None
            own = _tensors(module, relative, False) if known else []
            # submodules' tensors too (the ElfattAttention node reads lepe.weight), but not from the top
            # module, where any tensor of the model would be a candidate
            nested = _tensors(module, relative, True) if known and relative else []
            candidates_of[path] = (own, nested)
        own, nested = candidates_of[path]
        if not own and not nested:
            continue
        for position, name in enumerate(node.input):
            if name not in initializers or name in protected:
                continue
            if name not in values:
                values[name] = numpy_helper.to_array(initializers[name])
            matches = _matching_names(values[name], own) or _matching_names(values[name], nested)
            if name in matches or len(matches) != 1:
                continue
            target = matches[0]
            if target in initializers:
                if target not in values:
                    values[target] = numpy_helper.to_array(initializers[target])
                if values[target].dtype != values[name].dtype or not np.array_equal(values[target], values[name]):
                    continue  # the name is taken by other values: leave this input as it is
            elif reads[name] == 1:  # its only reader: rename it
                init = initializers.pop(name)
                init.name = target
                initializers[target] = init
                values[target] = values.pop(name)
            else:  # merged by the optimizer: this reader gets its own copy
                copy = graph.initializer.add()
                copy.CopyFrom(initializers[name])
                copy.name = target
                initializers[target] = copy
                values[target] = values[name]
            node.input[position] = target
            reads[name] -= 1
            reads[target] += 1
            if reads[name] == 0 and name in initializers:
                emptied.add(name)  # a merged one whose last reader went to an existing name
    if emptied:
        kept = [init for init in graph.initializer if init.name not in emptied]
        del graph.initializer[:]
        graph.initializer.extend(kept)


def name_after_modules(model_proto: onnx.ModelProto, model: nn.Module, root: str = "") -> None:
    """Renames the main graph's nodes and weights after ``model``'s modules (see the module docstring), in place.

    ``model`` is the module that was traced; call this before the exporter's per-node metadata is stripped.
    ``root`` is the dotted path of the user's model inside it where the exporter wrapped it (the fp16 and
    softmax wrappers hold it as ``model``): names are relative to it, so that an fp16 file's weights have the
    names of the fp32 file's and of the state dict, and the wrappers' own nodes are top-level ones.
    """
    graph = model_proto.graph
    scopes = {i: s for i, s in ((i, module_scopes(n)) for i, n in enumerate(graph.node)) if s is not None}
    if not scopes:
        return
    _rename_weights(graph, {i: (s[-1] if s else "") for i, s in scopes.items()}, model, root)
    inner = {i: [r for r in (_relative(p, root) for p in s) if r] for i, s in scopes.items()}
    _rename_nodes(graph, inner)
