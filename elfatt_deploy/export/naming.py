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
  one of its submodules) that holds the same values in the same dtype: ``blocks.0.attn.qkv.bias``,
  and ``blocks.0.attn.qkv.weight.T`` for the transposed copy (a distinct name, so that a weight
  from the state dict is never put where its transpose belongs); an ElfattAttention node's
  inputs 1 and 2 by position, as its layer's ``lepe.weight`` and ``lepe.bias``. A merged
  initializer is split again into one per parameter (a copy only where the values were
  equal), so every parameter has its own name; value_info entries follow. Nothing changes
  where no parameter matches exactly, or several do, or the name is a graph input or a
  node's output.

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

from .onnx_function import DOMAIN, OP_TYPE

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
    ``["blocks.0", "blocks.0.attn", "blocks.0.attn.qkv"]`` -> ``blocks.0/attn/qkv``; the child of a container
    that was called (not iterated) as the TorchScript exporter writes it: ``["layer1", "layer1.0"]`` ->
    ``layer1/layer1.0``."""
    levels, outer = [], ""
    for scope in scopes:
        level = scope[len(outer) + 1:] if outer and scope.startswith(outer + ".") else scope
        if levels and level[:1].isdigit():
            level = f"{levels[-1].rsplit('/', 1)[-1]}.{level}"  # a called container's child: /layer1/layer1.0
        levels.append(level)
        outer = scope
    return "/".join(levels)


def _relative(path: str, root: str) -> Optional[str]:
    """``path`` relative to the module at ``root`` ("" for root itself), or None for a module outside it."""
    if path == root:
        return ""
    if not root:
        return path
    return path[len(root) + 1:] if path.startswith(root + ".") else None


def _as_array(tensor) -> Optional[np.ndarray]:
    try:
        return tensor.detach().cpu().numpy()
    except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16, float8): never a candidate
        return None


def _tensors(module: nn.Module, prefix: str, recurse: bool) -> list[tuple[str, np.ndarray]]:
    """The module's parameters and buffers (its own, or with ``recurse`` also its submodules') by full name."""
    named = list(module.named_parameters(recurse=recurse)) + list(module.named_buffers(recurse=recurse))
    arrays = [((f"{prefix}.{name}" if prefix else name), _as_array(tensor)) for name, tensor in named
              if tensor is not None]
    return [(name, array) for name, array in arrays if array is not None]


def _matching_names(value: np.ndarray, candidates: list[tuple[str, np.ndarray]]) -> list[str]:
    """The names under which ``value`` is a candidate as it is, or (``.T``) transposed."""
    found = []
    for name, tensor in candidates:
        if tensor.dtype != value.dtype or tensor.size != value.size:
            continue  # the same dtype only: a float parameter is never an integer shape constant
        if tensor.shape == value.shape and np.array_equal(tensor, value):
            found.append(name)
        elif tensor.ndim == 2 and tensor.T.shape == value.shape and np.array_equal(tensor.T, value):
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


#: the inputs of an ElfattAttention node that are its layer's LePE tensors, by position (op contract)
_LEPE_INPUTS = {1: "lepe.weight", 2: "lepe.bias"}


class _Initializers:
    """The graph's initializers by name, with their values and value_info entries kept in step with renames."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.by_name = {init.name: init for init in graph.initializer}
        self.values: dict[str, np.ndarray] = {}
        self.infos = {info.name: info for info in graph.value_info}
        self.reads = _reads(graph)
        #: names that are not free for an initializer: graph inputs and outputs, node outputs
        self.defined = ({v.name for v in list(graph.input) + list(graph.output)}
                        | {out for node in graph.node for out in node.output})
        self.emptied: set[str] = set()

    def value(self, name: str) -> np.ndarray:
        if name not in self.values:
            self.values[name] = numpy_helper.to_array(self.by_name[name])
        return self.values[name]

    def point(self, node: onnx.NodeProto, position: int, target: str) -> None:
        """Makes ``node.input[position]`` read ``target``: the initializer renamed when this is its only reader,
        else a copy (an existing ``target`` only when it holds the same values); nothing where it cannot."""
        name = node.input[position]
        if target in self.defined:
            return
        if target in self.by_name:
            theirs, ours = self.value(target), self.value(name)
            if theirs.dtype != ours.dtype or theirs.shape != ours.shape or not np.array_equal(theirs, ours):
                return  # the name is taken by other values
        elif self.reads[name] == 1:  # its only reader: rename it
            init = self.by_name.pop(name)
            init.name = target
            self.by_name[target] = init
            self.values[target] = self.value(name)
            self.values.pop(name)
            info = self.infos.pop(name, None)
            if info is not None:
                info.name = target
                self.infos[target] = info
        else:  # merged by the optimizer: this reader gets its own copy
            copy = self.graph.initializer.add()
            copy.CopyFrom(self.by_name[name])
            copy.name = target
            self.by_name[target] = copy
            self.values[target] = self.value(name)
            if name in self.infos:
                info = self.graph.value_info.add()
                info.CopyFrom(self.infos[name])
                info.name = target
                self.infos[target] = info
        node.input[position] = target
        self.reads[name] -= 1
        self.reads[target] += 1
        if self.reads[name] == 0 and name in self.by_name:
            self.emptied.add(name)  # a merged one whose last reader went to an existing name

    def drop_emptied(self) -> None:
        if not self.emptied:
            return
        for field in (self.graph.initializer, self.graph.value_info):
            kept = [entry for entry in field if entry.name not in self.emptied]
            del field[:]
            field.extend(kept)


def _rename_weights(graph: onnx.GraphProto, paths: dict[int, str], model: nn.Module, root: str) -> None:
    inits = _Initializers(graph)
    protected = {v.name for v in list(graph.input) + list(graph.output)}
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
        elfatt = node.domain == DOMAIN and node.op_type == OP_TYPE
        for position, name in enumerate(node.input):
            if name not in inits.by_name or name in protected:
                continue
            value = inits.value(name)
            if elfatt:  # by position: a zero LePE bias must not take the name of another zero bias
                if position not in _LEPE_INPUTS:
                    continue
                wanted = f"{_relative(path, root)}.{_LEPE_INPUTS[position]}"
                matches = _matching_names(value, [c for c in nested if c[0] == wanted])
            else:
                matches = _matching_names(value, own) or _matching_names(value, nested)
            if name in matches or len(matches) != 1:
                continue
            inits.point(node, position, matches[0])
    if root:
        _strip_root(graph, inits, root + ".", protected)
    inits.drop_emptied()


def _strip_root(graph: onnx.GraphProto, inits: _Initializers, prefix: str, protected: set[str]) -> None:
    """Initializers still named after the wrapper (``model.<name>``: equal values left the match ambiguous)
    take ``<name>`` where it is free and only main-graph nodes read them."""
    readers = collections.defaultdict(list)
    for node in graph.node:
        for position, name in enumerate(node.input):
            readers[name].append((node, position))
    for name in [n for n in inits.by_name if n.startswith(prefix) and n not in protected]:
        target = name[len(prefix):]
        sites = readers.get(name, [])
        if not sites or len(sites) != inits.reads[name] or target in inits.by_name or target in inits.defined:
            continue
        for node, position in sites:
            inits.point(node, position, target)


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
