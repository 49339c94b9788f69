"""Reading what the builder needs from an ONNX file, and preparing it for the parser.

TensorRT's ONNX parser imports a model-local function in preference to a plugin
of the same name on several versions (docs/op-spec.md, "ONNX form"), so the
builder removes the elfatt function before parsing when the plugin is used, and
keeps it for a plugin-free engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import onnx

from ..errors import InputError

ELFATT_DOMAIN = "elfatt"
ELFATT_OP = "ElfattAttention"

Dim = Union[int, str]


@dataclass(frozen=True)
class InputSpec:
    name: str
    dims: tuple  # ints for static dims, strings (dim_param, or "?" when unnamed) for dynamic ones
    dtype: str  # numpy name, e.g. "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "dims": list(self.dims), "dtype": self.dtype}


def load_model(path) -> onnx.ModelProto:
    """Loads the graph without external weights (the parser reads those from the file's directory)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"ONNX file {path} is a directory; give the .onnx file in it")
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist; export one with `elfatt-deploy export --model NAME -o {path}`")
    if path.stat().st_size == 0:  # protobuf parses 0 bytes as an empty model: say what it is
        raise ValueError(f"ONNX file {path} is empty (0 bytes: an interrupted copy or download?); export it again "
                         f"with `elfatt-deploy export --model NAME -o {path}`")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends
        raise ValueError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None


def graph_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (initializers listed as inputs in old files are skipped)."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim
        )
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        except Exception:
            dtype = f"onnx type {tensor_type.elem_type}"
        specs.append(InputSpec(value.name, dims, dtype))
    return specs


def single_image_input(model: onnx.ModelProto, *, source: str = "the model") -> InputSpec:
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise ValueError(f"{source} has {len(inputs)} inputs ({names}); elfatt-deploy builds models with one image input")
    return inputs[0]


def metadata_props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def elfatt_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The ElfattAttention nodes of the main graph."""
    return [n for n in model.graph.node if n.domain == ELFATT_DOMAIN and n.op_type == ELFATT_OP]


def check_no_renamed_elfatt_nodes(model: onnx.ModelProto, *, source: str = "the model") -> None:
    """Refuses elfatt-domain nodes whose op type is no longer ``ElfattAttention``.

    ``onnx.compose.add_prefix`` (and ``merge_models`` with a prefix, which calls it) renames model-local
    functions and the nodes that call them by default (``rename_functions=True``): ``a_ElfattAttention``. ONNX
    Runtime still runs such a file through the renamed function, but no plugin creator has that name, so the
    plugin path would remove the function and leave the parser a node it cannot import."""
    renamed = [n for n in model.graph.node if n.domain == ELFATT_DOMAIN and n.op_type != ELFATT_OP
               and not n.op_type.startswith(FUNCTION_BODY_OP)]
    if renamed:
        node = renamed[0]
        raise InputError(
            f"{source} has {len(renamed)} node(s) of the {ELFATT_DOMAIN!r} domain with an op type other than "
            f"{ELFATT_OP!r} (first: {node.name or '(unnamed)'!r} of type {node.op_type!r}); the TensorRT plugin is "
            f"registered as {ELFATT_OP!r} only. onnx.compose.add_prefix and merge_models rename local functions and "
            "their nodes by default: prefix with onnx.compose.add_prefix(model, prefix, rename_functions=False) and "
            "merge the prefixed models without a prefix, or build this file with --no-plugin")


def elfatt_functions(model: onnx.ModelProto) -> list[onnx.FunctionProto]:
    return [f for f in model.functions if f.domain == ELFATT_DOMAIN]


def remove_elfatt_functions(model: onnx.ModelProto) -> int:
    """Removes (in place) every model-local function of the elfatt domain; returns how many.

    The ElfattAttention nodes and the elfatt opset import stay, so the parser
    resolves each node through the plugin registry. Functions of other domains
    are kept.
    """
    keep = [f for f in model.functions if f.domain != ELFATT_DOMAIN]
    removed = len(model.functions) - len(keep)
    if removed:
        del model.functions[:]
        model.functions.extend(keep)
    return removed


#: The op type the no-plugin path gives the elfatt nodes and their function: a name no plugin creator has.
FUNCTION_BODY_OP = ELFATT_OP + "FunctionBody"
PLUGIN_ATTRIBUTES = ("plugin_version", "plugin_namespace")


def prepare_function_body_build(model: onnx.ModelProto) -> int:
    """Makes (in place) every elfatt node resolve to its local function on every TensorRT parser; returns the
    number of nodes changed.

    The parser of TensorRT >= 10.15 imports a node that carries ``plugin_namespace`` as a plugin when a creator
    of its name is registered, and 10.7 .. 10.14 prefer a registered plugin over a local function outright
    (docs/op-spec.md). In a process where the plugin is loaded, a "plugin-free" engine would then contain the
    plugin. So the no-plugin path strips ``plugin_namespace`` / ``plugin_version`` from the nodes and renames the
    nodes and their function to :data:`FUNCTION_BODY_OP`, which no creator is registered under. The parser keys
    local functions by name alone, so each function overload (one per channel layout, onnx_function.py) gets
    a name of its own (``ElfattAttentionFunctionBody_c384_g3_l3``) and the overloads are cleared.
    """

    def body_name(overload: str) -> str:
        return f"{FUNCTION_BODY_OP}_{overload}" if overload else FUNCTION_BODY_OP

    changed = 0
    for node in elfatt_nodes(model):
        keep = [a for a in node.attribute if a.name not in PLUGIN_ATTRIBUTES]
        del node.attribute[:]
        node.attribute.extend(keep)
        node.op_type = body_name(node.overload)
        node.overload = ""
        changed += 1
    for function in elfatt_functions(model):
        if function.name == ELFATT_OP:
            function.name = body_name(function.overload)
            function.overload = ""
            keep = [a for a in function.attribute if a not in PLUGIN_ATTRIBUTES]
            del function.attribute[:]
            function.attribute.extend(keep)
    return changed
