"""Exported models vs PyTorch in ONNX Runtime (no custom library): every family, three sizes, fp32 and fp16."""

import json

import numpy as np
import onnx
import pytest
import torch

from test_export_helpers import (SIZES, attention_layer_count, elfatt_nodes, ort_session, random_image, reduced_model,
                             torch_reference)
from _naive_elfatt import rel_l2
from elfatt_deploy import OP_VERSION, __version__, export_onnx
from elfatt_deploy.models import create_model

FAMILIES = ["vit", "cswin"]


@pytest.fixture(scope="module")
def fp32_exports(tmp_path_factory):
    """One fp32 dynamic export per family (reduced depth), traced at 1x3x224x224."""
    out = {}
    for family in FAMILIES:
        model = reduced_model(family)
        path = tmp_path_factory.mktemp(family) / f"{family}.onnx"
        export_onnx(model, path, "1x3x224x224")
        out[family] = (model, path)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_parity_at_three_sizes(fp32_exports, family, rng):
    model, path = fp32_exports[family]
    session = ort_session(path)
    for shape in SIZES:
        image = random_image(rng, shape)
        (out,) = session.run(None, {"image": image})
        assert out.shape == (shape[0], model.num_classes)
        err = rel_l2(out, torch_reference(model, image))
        assert err <= 1e-5, f"{family} at {shape}: rel L2 {err:.3e}"


@pytest.mark.parametrize("family", FAMILIES)
def test_one_node_per_attention_layer_with_contract_attributes(fp32_exports, family):
    model, path = fp32_exports[family]
    proto = onnx.load(str(path))
    nodes = elfatt_nodes(proto)
    layers = [m for m in model.modules() if hasattr(m, "attrs")]
    assert len(nodes) == attention_layer_count(model) == len(layers) > 0
    for node, layer in zip(nodes, layers):  # graph order follows the forward pass
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        expected = layer.attrs.as_dict()
        assert {k: attrs[k] for k in expected} == pytest.approx(expected)
        assert attrs["plugin_version"] == OP_VERSION.encode() and attrs["plugin_namespace"] == b""
        assert len(node.input) == 3 and all(node.input)
    # one function overload per channel layout (C, global heads, local heads), each node naming its own
    layouts = {(layer.dim, layer.attrs.global_heads, layer.attrs.local_heads) for layer in layers}
    assert sorted((f.domain, f.name, f.overload) for f in proto.functions) == sorted(
        ("elfatt", "ElfattAttention", f"c{c}_g{g}_l{lh}") for c, g, lh in layouts)
    for node, layer in zip(nodes, layers):
        assert node.overload == f"c{layer.dim}_g{layer.attrs.global_heads}_l{layer.attrs.local_heads}"
    for function in proto.functions:
        assert {(o.domain, o.version) for o in function.opset_import} == {
            (o.domain, o.version) for o in proto.opset_import if o.domain == ""}


@pytest.mark.parametrize("family", FAMILIES)
def test_checker_and_shape_inference(fp32_exports, family):
    model, path = fp32_exports[family]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    value_info = {v.name: v for v in inferred.graph.value_info}
    dims = [d for m in model.modules() if hasattr(m, "attrs") for d in [m.dim]]
    for node, dim in zip(elfatt_nodes(proto), dims):
        shape = value_info[node.output[0]].type.tensor_type.shape.dim
        assert len(shape) == 4 and shape[3].dim_value == dim
    inp = inferred.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in inp] == ["batch", 3, "height", "width"]


def test_metadata(fp32_exports):
    model, path = fp32_exports["vit"]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["elfatt.model_name"] == "elfatt_vit_tiny"
    assert json.loads(meta["elfatt.model_config"]) == json.loads(json.dumps(model.model_config))
    assert meta["elfatt.toolkit_version"] == __version__ and meta["elfatt.op_version"] == OP_VERSION
    assert meta["elfatt.input_name"] == "image" and meta["elfatt.input_layout"] == "NCHW"
    assert json.loads(meta["elfatt.input_normalization"])["std"] == [0.229, 0.224, 0.225]
    assert meta["elfatt.precision"] == "fp32" and meta["elfatt.dynamic"] == "true"


def test_producer_is_the_toolkit_and_the_tracing_torch_is_recorded(fp32_exports):
    """Netron, onnx.checker and model registries show producer_name/producer_version: ours, not torch.onnx's."""
    _, path = fp32_exports["vit"]
    proto = onnx.load(str(path))
    assert (proto.producer_name, proto.producer_version) == ("elfatt-deploy", __version__)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["elfatt.torch_version"] == torch.__version__


def test_plugin_only_file_has_no_function(tmp_path):
    model = reduced_model("vit", depth=1)
    path = export_onnx(model, tmp_path / "plugin.onnx", (1, 3, 64, 64), plugin_only=True, dynamic=False)
    proto = onnx.load(str(path))
    assert len(proto.functions) == 0
    assert len(elfatt_nodes(proto)) == 1
    onnx.checker.check_model(proto, full_check=True)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    assert {p.key: p.value for p in proto.metadata_props}["elfatt.plugin_only"] == "true"


@pytest.mark.parametrize("family", FAMILIES)
def test_fp16_export_parity_and_types(tmp_path, family, rng):
    model = reduced_model(family)
    path = export_onnx(model, tmp_path / "fp16.onnx", "1x3x224x224", precision="fp16")
    proto = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert types["image"] == fp32 and types[proto.graph.output[0].name] == fp32
    for node in elfatt_nodes(proto):  # the op runs on fp16 tensors
        assert types[node.input[0]] == fp16 and types[node.output[0]] == fp16
    for node in (n for n in proto.graph.node if n.op_type == "LayerNormalization"):
        assert types[node.input[0]] == fp32, "LayerNorm must compute in float32"
    weights = [i for i in proto.graph.initializer if len(i.dims) == 2]
    assert sum(i.data_type == fp16 for i in weights) >= len(weights) - 1  # all but the fp32 classifier head
    assert {p.key: p.value for p in proto.metadata_props}["elfatt.precision"] == "fp16"
    session = ort_session(path)
    for shape in SIZES[:2]:
        image = random_image(rng, shape)
        (out,) = session.run(None, {"image": image})
        assert out.dtype == np.float32
        err = rel_l2(out, torch_reference(model, image))
        assert err <= 5e-3, f"{family} fp16 at {shape}: rel L2 {err:.3e}"


def test_layer_without_lepe_exports_zero_lepe_inputs(tmp_path, rng):
    model = reduced_model("vit", depth=1, lepe=False)
    path = export_onnx(model, tmp_path / "nolepe.onnx", "1x3x96x96")
    proto = onnx.load(str(path))
    (node,) = elfatt_nodes(proto)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    constants = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in proto.graph.node
                 if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    for name in node.input[1:]:
        value = inits.get(name, constants.get(name))
        assert value is not None and not value.any()
    image = random_image(rng, (1, 3, 112, 80))
    (out,) = ort_session(path).run(None, {"image": image})
    assert rel_l2(out, torch_reference(model, image)) <= 1e-5


def test_vanilla_twin_exports_without_elfatt_nodes(tmp_path, rng):
    model = reduced_model("vit", depth=1, attention="vanilla")
    path = export_onnx(model, tmp_path / "vanilla.onnx", "1x3x96x96")
    assert elfatt_nodes(onnx.load(str(path))) == []
    image = random_image(rng, (1, 3, 112, 80))
    (out,) = ort_session(path).run(None, {"image": image})
    assert rel_l2(out, torch_reference(model, image)) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["elfatt_vit_tiny", "elfatt_cswin_tiny"])
def test_full_size_model_export(tmp_path, name, rng):
    """One full-depth export per family: every layer becomes a node, and the file matches PyTorch."""
    model = create_model(name).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", "1x3x224x224")
    assert len(elfatt_nodes(onnx.load(str(path)))) == attention_layer_count(model)
    image = random_image(rng, (1, 3, 200, 264))
    (out,) = ort_session(path).run(None, {"image": image})
    assert rel_l2(out, torch_reference(model, image)) <= 1e-5
