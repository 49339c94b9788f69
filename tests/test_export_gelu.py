"""The exported GELU in the operand order ONNX Runtime fuses (elfatt_deploy/export/gelu.py)."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from elfatt_deploy.export.gelu import reorder_erf_gelu


def _gelu_graph(half=0.5, x_first=True, half_first=True, extra_reader=False) -> onnx.ModelProto:
    """torch.onnx's form: y = x * (0.5 * (1 + erf(x / sqrt 2))), operand orders as asked."""
    const = lambda name, value: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))
    nodes = [const("sqrt2", math.sqrt(2.0)), const("one", 1.0), const("half", half),
             helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]),
             helper.make_node("Mul", ["half", "a"] if half_first else ["a", "half"], ["m"]),
             helper.make_node("Mul", ["x", "m"] if x_first else ["m", "x"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, ["n", 64]))
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def _run(model: onnx.ModelProto, x: np.ndarray, optimize: bool) -> np.ndarray:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def _optimized_op_types(model: onnx.ModelProto, tmp_path) -> list[str]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


@pytest.mark.parametrize("x_first", [True, False])
@pytest.mark.parametrize("half_first", [True, False])
def test_the_rewrite_is_bitwise_the_same_and_onnxruntime_fuses_it(x_first, half_first, rng, tmp_path):
    model = _gelu_graph(x_first=x_first, half_first=half_first)
    x = (rng.standard_normal((257, 64)) * rng.choice([1e-3, 1.0, 30.0], size=(257, 1))).astype(np.float32)
    before = _run(model, x, optimize=False)
    assert "Gelu" not in _optimized_op_types(model, tmp_path)  # torch's order: five element-wise passes

    assert reorder_erf_gelu(model) == 1
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(_run(model, x, optimize=False), before)  # 0.5 moved outside: exact
    assert _optimized_op_types(model, tmp_path) == ["Gelu"]
    fused = _run(model, x, optimize=True)
    assert np.linalg.norm(fused - before) / np.linalg.norm(before) <= 1e-6


@pytest.mark.parametrize("change", ["constant", "shared"])
def test_what_is_not_the_exact_gelu_stays_as_it_is(change):
    model = _gelu_graph(half=0.4) if change == "constant" else _gelu_graph(extra_reader=True)
    before = model.SerializeToString()
    assert reorder_erf_gelu(model) == 0
    assert model.SerializeToString() == before


def test_an_exported_model_has_every_mlp_gelu_fused_by_onnxruntime(tmp_path, rng):
    from elfatt_deploy.export import export_onnx
    from elfatt_deploy.export.model_loading import build_model

    model = build_model("elfatt_vit_micro", seed=int(rng.integers(1 << 30)))
    path = export_onnx(model, tmp_path / "vit.onnx", (1, 3, 64, 64))
    exported = onnx.load(str(path))
    assert reorder_erf_gelu(exported) == 0  # the exporter already put every GELU in the fused order
    op_types = _optimized_op_types(exported, tmp_path)
    depth = len(model.blocks)
    assert op_types.count("Gelu") + op_types.count("BiasGelu") == depth, op_types
    assert "Erf" not in op_types
