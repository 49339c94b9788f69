"""The ElfattAttention ONNX function body alone, in ONNX Runtime, against the contract (tests/_naive_elfatt.py)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto

ort = pytest.importorskip("onnxruntime")

from _naive_elfatt import naive_elfatt, rel_l2  # noqa: E402
from elfatt_deploy.export.onnx_function import build_function  # noqa: E402
from elfatt_deploy.export.op_model import single_op_model  # noqa: E402
from elfatt_deploy.op.spec import ElfattAttrs  # noqa: E402

TOLERANCE = {np.float32: 1e-5, np.float16: 2e-3}
ELEM_TYPE = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _draw(case, rng, dtype):
    """Inputs in ``dtype`` (what the model sees) and the same values in float64 for the reference."""
    qkv = rng.standard_normal((case.batch, case.height, case.width, 3 * case.channels)).astype(dtype)
    if case.lepe:
        weight = (rng.standard_normal((case.channels, 1, 3, 3)) * 0.3).astype(dtype)
        bias = (rng.standard_normal(case.channels) * 0.1).astype(dtype)
    else:  # the exporter passes zeros for a layer without LePE (contract's 3-input form)
        weight = np.zeros((case.channels, 1, 3, 3), dtype)
        bias = np.zeros(case.channels, dtype)
    return {"qkv": qkv, "lepe_weight": weight, "lepe_bias": bias}


def _reference(case, feeds):
    f64 = {k: v.astype(np.float64) for k, v in feeds.items()}
    if not case.lepe:
        return naive_elfatt(f64["qkv"], **case.attrs())
    return naive_elfatt(f64["qkv"], f64["lepe_weight"], f64["lepe_bias"], **case.attrs())


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_function_body_matches_contract(op_case, dtype, rng):
    model = single_op_model(ElfattAttrs(**op_case.attrs()), op_case.channels, elem_type=ELEM_TYPE[dtype])
    feeds = _draw(op_case, rng, dtype)
    (out,) = _session(model).run(None, feeds)
    assert out.dtype == dtype
    assert out.shape == (op_case.batch, op_case.height, op_case.width, op_case.channels)
    err = rel_l2(out, _reference(op_case, feeds))
    assert err <= TOLERANCE[dtype], f"{op_case.id} {dtype.__name__}: rel L2 {err:.3e}"


def test_one_function_serves_nodes_with_different_attributes_and_sizes(rng):
    """One session, one function: the attributes come in by reference and H, W from Shape."""
    attrs = ElfattAttrs(1, 2, 3, 2)
    session = _session(single_op_model(attrs, 48))
    for h, w in ((5, 7), (6, 4), (1, 9)):
        feeds = {"qkv": rng.standard_normal((2, h, w, 144)).astype(np.float32),
                 "lepe_weight": rng.standard_normal((48, 1, 3, 3)).astype(np.float32),
                 "lepe_bias": rng.standard_normal(48).astype(np.float32)}
        (out,) = session.run(None, feeds)
        ref = naive_elfatt(*(feeds[k].astype(np.float64) for k in ("qkv", "lepe_weight", "lepe_bias")),
                           **attrs.as_dict())
        assert rel_l2(out, ref) <= 1e-5


@pytest.mark.parametrize("opset", [18, 21])
def test_function_opset_imports_equal_the_models(opset, rng):
    model = single_op_model(ElfattAttrs(1, 1, 4, 4), 32, opset=opset)
    (function,) = model.functions
    assert {(o.domain, o.version) for o in function.opset_import} == {("", opset)}
    onnx.checker.check_model(model, full_check=True)
    feeds = {"qkv": rng.standard_normal((1, 9, 6, 96)).astype(np.float32),
             "lepe_weight": rng.standard_normal((32, 1, 3, 3)).astype(np.float32),
             "lepe_bias": rng.standard_normal(32).astype(np.float32)}
    (out,) = _session(model).run(None, feeds)
    ref = naive_elfatt(*(feeds[k].astype(np.float64) for k in ("qkv", "lepe_weight", "lepe_bias")),
                       global_heads=1, local_heads=1, window_h=4, window_w=4)
    assert rel_l2(out, ref) <= 1e-5


def test_function_uses_attribute_references_not_constants():
    function = build_function(18)
    referenced = {a.ref_attr_name for n in function.node for a in n.attribute if a.ref_attr_name}
    assert referenced == {"global_heads", "local_heads", "window_h", "window_w", "scale"}
    assert list(function.input) == ["qkv", "lepe_weight", "lepe_bias"]
    assert {"plugin_version", "plugin_namespace"} <= set(function.attribute)


def test_function_rejects_opset_below_18():
    with pytest.raises(ValueError, match="opset=17.*>= 18"):
        build_function(17)
