"""Small ONNX models with an elfatt::ElfattAttention node, built with onnx.helper (no exporter needed)."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper


def elfatt_model(*, with_function: bool = True, dims=("batch", 3, "height", "width"), extra_function: bool = False,
                 precision: str | None = "fp32") -> onnx.ModelProto:
    """x [N,3,H,W] -> Transpose -> ElfattAttention (treats the 3 channels as qkv of C=1) -> y."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", "h", "w", 1])
    nodes = [
        helper.make_node("Transpose", ["images"], ["qkv"], perm=[0, 2, 3, 1], name="to_nhwc"),
        helper.make_node("ElfattAttention", ["qkv"], ["out"], domain="elfatt", name="blocks.0.attn",
                         global_heads=1, local_heads=0, window_h=7, window_w=7, scale=0.0,
                         plugin_version="1", plugin_namespace=""),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y])
    functions = []
    if with_function:
        functions.append(helper.make_function(
            "elfatt", "ElfattAttention", ["qkv"], ["out"],
            [helper.make_node("Identity", ["qkv"], ["out"])],
            [helper.make_opsetid("", 18)],
            attributes=["global_heads", "local_heads", "window_h", "window_w", "scale", "plugin_version", "plugin_namespace"],
        ))
    if extra_function:
        functions.append(helper.make_function("custom", "Other", ["a"], ["b"], [helper.make_node("Identity", ["a"], ["b"])],
                                              [helper.make_opsetid("", 18)]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("elfatt", 1)],
                              functions=functions)
    if precision:
        helper.set_model_props(model, {"precision": precision, "model_name": "tiny_test"})
    return model


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def test_fixture_model_is_valid_onnx():
    model = elfatt_model()
    onnx.checker.check_model(model)
    assert [f.name for f in model.functions] == ["ElfattAttention"]
    assert not elfatt_model(with_function=False).functions
