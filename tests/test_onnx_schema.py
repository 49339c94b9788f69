"""The registered OpSchema of elfatt::ElfattAttention: checker and shape inference, with and without function."""

import onnx
import pytest
from onnx import TensorProto

from elfatt_deploy.export.onnx_schema import register_schema
from elfatt_deploy.export.op_model import single_op_model
from elfatt_deploy.op.spec import ElfattAttrs


def _dims(value_info):
    return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("with_function", [True, False], ids=["function", "plugin-only"])
@pytest.mark.parametrize("elem_type", [TensorProto.FLOAT, TensorProto.FLOAT16])
def test_shape_inference_gives_output_type_and_shape(with_function, elem_type):
    model = single_op_model(ElfattAttrs(2, 1, 7, 7), 96, elem_type=elem_type, with_function=with_function)
    model.graph.output[0].type.tensor_type.ClearField("shape")  # make inference do the work
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    (out,) = inferred.graph.output
    assert out.type.tensor_type.elem_type == elem_type
    assert _dims(out) == ["batch", "height", "width", 96]
    onnx.checker.check_model(inferred, full_check=True)


def test_schema_registration_is_idempotent():
    register_schema()
    register_schema()
    schema = onnx.defs.get_schema("ElfattAttention", 1, "elfatt")
    assert [i.name for i in schema.inputs] == ["qkv", "lepe_weight", "lepe_bias"]
    assert {"global_heads", "local_heads", "window_h", "window_w", "scale", "plugin_version",
            "plugin_namespace"} == set(schema.attributes)


@pytest.mark.parametrize("channels, heads, message", [
    (100, (2, 1), "C=100 is not divisible"),
])
def test_shape_inference_rejects_bad_channel_count(channels, heads, message):
    model = single_op_model(ElfattAttrs(*heads, 7, 7), channels, with_function=False)
    with pytest.raises((onnx.shape_inference.InferenceError, ValueError), match=message):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)


def test_shape_inference_rejects_qkv_not_divisible_by_3():
    model = single_op_model(ElfattAttrs(1, 1, 7, 7), 32, with_function=False)
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 95
    with pytest.raises((onnx.shape_inference.InferenceError, ValueError), match="95 channels, which is not divisible by 3"):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)


def test_checker_rejects_missing_attribute():
    model = single_op_model(ElfattAttrs(1, 1, 7, 7), 32, with_function=False)
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name != "window_h"]
    del node.attribute[:]
    node.attribute.extend(kept)
    with pytest.raises(onnx.checker.ValidationError, match="window_h"):
        onnx.checker.check_model(model, full_check=True)
