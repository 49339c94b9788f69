"""A one-node ONNX model of the op: for op-level tests of the function body and the plugin."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .._version import OP_VERSION, __version__
from ..op.spec import ElfattAttrs
from .onnx_function import DOMAIN, OP_TYPE, ChannelLayout, build_function
from .onnx_schema import OP_SET_VERSION, register_schema

DEFAULT_OPSET = 18


def elfatt_node(inputs, output: str, attrs: ElfattAttrs, name: str = "elfatt_attention") -> onnx.NodeProto:
    """The node as the contract writes it: the attributes plus plugin_version / plugin_namespace."""
    return helper.make_node(
        OP_TYPE, list(inputs), [output], name=name, domain=DOMAIN,
        global_heads=attrs.global_heads, local_heads=attrs.local_heads,
        window_h=attrs.window_h, window_w=attrs.window_w, scale=float(attrs.scale),
        plugin_version=OP_VERSION, plugin_namespace="",
    )


def single_op_model(
    attrs: ElfattAttrs,
    channels: int,
    *,
    elem_type: int = TensorProto.FLOAT,
    opset: int = DEFAULT_OPSET,
    with_function: bool = True,
) -> onnx.ModelProto:
    """qkv [B, H, W, 3C] (B, H, W dynamic) -> out [B, H, W, C].

    LePE weight and bias are graph inputs (feed zeros for an op without LePE,
    see onnx_function.py).
    """
    register_schema()
    dims = ["batch", "height", "width"]
    inputs = [helper.make_tensor_value_info("qkv", elem_type, dims + [3 * channels]),
              helper.make_tensor_value_info("lepe_weight", elem_type, [channels, 1, 3, 3]),
              helper.make_tensor_value_info("lepe_bias", elem_type, [channels])]
    node = elfatt_node([i.name for i in inputs], "out", attrs)
    functions = []
    if with_function:  # a node of a bad channel count can still be built without one (schema tests)
        functions.append(build_function(opset, ChannelLayout(channels, attrs.global_heads, attrs.local_heads)))
        node.overload = functions[0].overload
    graph = helper.make_graph(
        [node], "elfatt_attention_op", inputs,
        [helper.make_tensor_value_info("out", elem_type, dims + [channels])],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, OP_SET_VERSION)],
        functions=functions,
        producer_name="elfatt-deploy",
        producer_version=__version__,
    )
