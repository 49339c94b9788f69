"""Exported nodes and weights carry the names of the PyTorch modules and parameters they come from
(export/naming.py), and the file describes itself (doc_string, graph name)."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from elfatt_deploy.export.exporter import build_onnx_model, elfatt_layers
from elfatt_deploy.export.naming import SCOPES_KEY, TRANSPOSED_SUFFIX, _levels, module_scopes, name_after_modules

from test_export_helpers import ort_session, reduced_model, torch_reference

#: module types whose nodes the names are checked for, with the op types they export as
NAMED_OPS = {torch.nn.Linear: ("MatMul", "Gemm"), torch.nn.LayerNorm: ("LayerNormalization",),
             torch.nn.Conv2d: ("Conv",)}


def _export(family, precision="fp32", seed=0):
    torch.manual_seed(seed)
    model = reduced_model(family)
    return model, build_onnx_model(model, "1x3x112x112", precision=precision)


@pytest.fixture(scope="module", params=["vit", "cswin"])
def exported(request):
    return request.param, *_export(request.param)


def _initializers(proto):
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def _node_scope(path: str, model) -> str:
    """The expected node path of module ``path``: one component per module on the path that ran (the models
    iterate their ModuleLists, so a list and its index form one component: ``blocks.0``)."""
    modules = dict(model.named_modules())
    parts = path.split(".")
    levels, start = [], 0
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if prefix in modules and not isinstance(modules[prefix], (torch.nn.ModuleList, torch.nn.Sequential)):
            levels.append(".".join(parts[start:end]))
            start = end
    return "/".join(levels)


def test_every_parameter_has_its_own_initializer_under_its_name(exported):
    family, model, proto = exported
    inits = _initializers(proto)
    readers = collections.Counter(name for node in proto.graph.node for name in node.input)
    for name, param in model.named_parameters():
        if name == "pos_embed":
            continue  # resampled per input size: not stored as it is
        value = param.detach().numpy()
        if name in inits:
            np.testing.assert_array_equal(inits[name], value, err_msg=name)
        else:
            transposed = name + TRANSPOSED_SUFFIX
            assert transposed in inits, f"{family}: no initializer {name!r} or {transposed!r}"
            np.testing.assert_array_equal(inits[transposed], value.T, err_msg=transposed)
            name = transposed
        assert readers[name] >= 1, f"{family}: {name} is read by no node"
    # no initializer holds a parameter's values (or its transpose) under another name (torch.onnx's
    # val_<n> for the transposed Linear weights)
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    for init_name, v in inits.items():
        for name, p in params.items():
            if v.dtype == p.dtype and v.size == p.size and v.size >= 8:
                if v.shape == p.shape and np.array_equal(v, p):
                    assert init_name == name or np.all(v == v.flat[0]), (init_name, name)
                elif p.ndim == 2 and v.shape == p.T.shape and np.array_equal(v, p.T):
                    assert init_name == name + TRANSPOSED_SUFFIX, (init_name, name)
    # value_info describes values that exist (torch.onnx writes one per initializer)
    defined = set(inits) | {o for n in proto.graph.node for o in n.output} | {i.name for i in proto.graph.input}
    assert all(info.name in defined for info in proto.graph.value_info)


def test_random_layer_norms_are_not_merged_into_one_initializer(exported):
    # nn.LayerNorm starts at weight 1, bias 0: torch.onnx's optimizer merges equal initializers, so every
    # LayerNorm read blocks.0.norm1.weight; refit or per-layer edits by name need one per layer
    _, model, proto = exported  # random weights
    norms = [name for name, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)]
    by_node = {n.name: n for n in proto.graph.node if n.op_type == "LayerNormalization"}
    assert len(by_node) == len(norms) >= 5
    for path in norms:
        node = by_node[f"/{_node_scope(path, model)}/LayerNormalization"]
        assert list(node.input[1:]) == [f"{path}.weight", f"{path}.bias"]


def test_nodes_are_named_after_their_modules_and_unique(exported):
    family, model, proto = exported
    names = [n.name for n in proto.graph.node]
    assert len(set(names)) == len(names) and all(names)
    present = set(names)
    for path, module in model.named_modules():
        ops = next((ops for kind, ops in NAMED_OPS.items() if isinstance(module, kind)), None)
        if ops is None or path.endswith(".lepe"):
            continue  # the LePE convolution is part of the ElfattAttention node
        scope = _node_scope(path, model)
        assert any(f"/{scope}/{op}" in present for op in ops), f"{family}: no node /{scope}/{'|'.join(ops)}"
    calls = [n.name for n in proto.graph.node if n.op_type == "ElfattAttention"]
    assert calls == [f"/{_node_scope(path, model)}/ElfattAttention" for path, _ in elfatt_layers(model)]


def test_the_renamed_file_computes_what_pytorch_does(exported, tmp_path, rng):
    family, model, proto = exported
    path = tmp_path / f"{family}.onnx"
    onnx.save(proto, str(path))
    image = rng.standard_normal((2, 3, 97, 131)).astype(np.float32)  # off the window grid
    out = ort_session(path).run(None, {"image": image})[0]
    ref = torch_reference(model, image)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) <= 1e-5


def test_fp16_weights_and_nodes_have_the_fp32_files_names(exported):
    # the fp16 export traces a wrapper that holds the model as `model`: names stay those of the state dict
    family, model, fp32 = exported
    _, proto = _export(family, precision="fp16")
    inits, reference = _initializers(proto), _initializers(fp32)
    params = {n for n in reference if n.split(".")[0] in dict(model.named_children())}
    assert params and params <= set(inits)
    assert not [n for n in inits if n.startswith("model.")]
    for name in params:  # the same tensors in float16 (the final norm and the head stay float32)
        assert inits[name].shape == reference[name].shape, name
        np.testing.assert_allclose(inits[name].astype(np.float32), reference[name], rtol=1e-3, atol=1e-4,
                                   err_msg=name)
    lepe = next(n for n in sorted(params) if n.endswith(".attn.lepe.weight"))
    assert inits[lepe].dtype == np.float16 and inits["head.weight"].dtype == np.float32
    calls = [n.name for n in fp32.graph.node if n.op_type == "ElfattAttention"]
    assert calls == [n.name for n in proto.graph.node if n.op_type == "ElfattAttention"]


def test_the_file_describes_itself(exported):
    family, model, proto = exported
    assert proto.graph.name == model.model_name
    doc = proto.doc_string
    assert doc.startswith(f"{model.model_name} (fp32), exported by elfatt-deploy")
    assert "'image'" in doc and "'logits'" in doc and "dynamic batch, height and width" in doc


# ---- the renaming on hand-made graphs: what it must leave alone ---------------------------------------------

def _scoped(node, *scopes):
    node.metadata_props.add(key=SCOPES_KEY, value=repr(["", *scopes]))
    return node


def _tiny_graph(weight: np.ndarray, bias: np.ndarray, weight_name="val_7"):
    nodes = [
        _scoped(helper.make_node("MatMul", ["x", weight_name], ["y"], name="node_MatMul_1"), "fc", "linear"),
        _scoped(helper.make_node("Add", ["y", "b"], ["z"], name="node_add"), "fc", "linear"),
        helper.make_node("Relu", ["z"], ["out"], name="node_relu"),  # no scope record: keeps its name
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(weight, weight_name), numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph)


def test_hand_made_graph_renaming_and_what_stays(rng):
    fc = torch.nn.Linear(4, 3)
    model = torch.nn.Sequential()
    model.add_module("fc", fc)
    weight_t = fc.weight.detach().numpy().T.copy()
    proto = _tiny_graph(weight_t, fc.bias.detach().numpy().copy())
    name_after_modules(proto, model)
    assert [n.name for n in proto.graph.node] == ["/fc/MatMul", "/fc/Add", "node_relu"]
    assert sorted(i.name for i in proto.graph.initializer) == ["fc.bias", "fc.weight.T"]
    onnx.checker.check_model(proto, full_check=True)

    # values that match no parameter exactly keep their names (one ulp off is not the parameter)
    off = np.nextafter(weight_t, np.float32(np.inf))
    proto = _tiny_graph(off, fc.bias.detach().numpy().copy())
    name_after_modules(proto, model)
    assert sorted(i.name for i in proto.graph.initializer) == ["fc.bias", "val_7"]


def test_scope_records_that_are_missing_or_unreadable_name_nothing():
    node = helper.make_node("Relu", ["a"], ["b"], name="keep")
    assert module_scopes(node) is None
    node.metadata_props.add(key=SCOPES_KEY, value="not a list [")
    assert module_scopes(node) is None
    scoped = _scoped(helper.make_node("Relu", ["a"], ["b"]), "blocks.0", "blocks.0.attn", "relu")
    assert module_scopes(scoped) == ["blocks.0", "blocks.0.attn"]


def test_a_merged_initializer_is_split_into_one_per_parameter():
    # two LayerNorm-like modules with equal weights, merged by the optimizer into one initializer "w"
    model = torch.nn.Module()
    model.a, model.b = torch.nn.LayerNorm(4), torch.nn.LayerNorm(4)
    ones = np.ones(4, np.float32)
    nodes = [_scoped(helper.make_node("Mul", ["x", "w"], ["y"], name="n0"), "a", "mul"),
             _scoped(helper.make_node("Mul", ["y", "w"], ["z"], name="n1"), "b", "mul")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [4])], [numpy_helper.from_array(ones, "w")])
    proto = helper.make_model(graph)
    name_after_modules(proto, model)
    assert [list(n.input) for n in proto.graph.node] == [["x", "a.weight"], ["y", "b.weight"]]
    assert sorted(i.name for i in proto.graph.initializer) == ["a.weight", "b.weight"]
    assert [n.name for n in proto.graph.node] == ["/a/Mul", "/b/Mul"]
    onnx.checker.check_model(proto, full_check=True)


def test_zero_biases_keep_their_own_names_also_in_fp16():
    # zero-initialised biases are all equal: the LePE bias of each layer is found by the node's input
    # position, and no name of the fp16 wrapper (model.) is left where values were ambiguous
    torch.manual_seed(0)
    model = reduced_model("vit")
    with torch.no_grad():
        for block in model.blocks:
            block.attn.lepe.bias.zero_()
            block.attn.proj.bias.zero_()
            block.mlp.fc2.bias.zero_()
    for precision in ("fp32", "fp16"):
        proto = build_onnx_model(model, "1x3x112x112", precision=precision)
        calls = [n for n in proto.graph.node if n.op_type == "ElfattAttention"]
        assert [list(n.input[1:]) for n in calls] == [[f"blocks.{i}.attn.lepe.weight", f"blocks.{i}.attn.lepe.bias"]
                                                      for i in range(len(model.blocks))], precision
        assert not [i.name for i in proto.graph.initializer if i.name.startswith("model.")], precision


def test_what_is_never_a_candidate_or_a_target():
    fc = torch.nn.Linear(4, 2)
    model = torch.nn.Module()
    model.fc = fc
    model.register_buffer("scale", torch.ones(2, dtype=torch.bfloat16))  # numpy has no bfloat16
    with torch.no_grad():
        fc.bias.copy_(torch.tensor([1.0, 3.0]))
    shape = np.array([1, 3], np.int64)  # the same numbers as fc.bias, as an int64 shape constant
    merged = fc.bias.detach().numpy().copy()
    nodes = [
        _scoped(helper.make_node("Reshape", ["x", "val_1"], ["r"], name="n0"), "fc", "view"),
        _scoped(helper.make_node("Add", ["r", "val_2"], ["a"], name="n1"), "fc", "add"),
        _scoped(helper.make_node("Add", ["a", "fc.bias"], ["out"], name="n2"), "fc", "add_1"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("fc.bias", onnx.TensorProto.FLOAT, [1, 2])],  # a graph input
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(shape, "val_1"), numpy_helper.from_array(merged, "val_2")])
    proto = helper.make_model(graph)
    name_after_modules(proto, model)
    # the int64 constant is not fc.bias, and the graph input fc.bias is not where val_2 may go
    assert [list(n.input) for n in proto.graph.node] == [["x", "val_1"], ["r", "val_2"], ["a", "fc.bias"]]
    assert [n.name for n in proto.graph.node] == ["/fc/Reshape", "/fc/Add", "/fc/Add_1"]


def test_path_components():
    assert _levels([]) == ""
    assert _levels(["blocks.0", "blocks.0.attn", "blocks.0.attn.qkv"]) == "blocks.0/attn/qkv"  # iterated list
    assert _levels(["layer1", "layer1.0", "layer1.0.conv1"]) == "layer1/layer1.0/conv1"  # a called Sequential
    assert _levels(["stages", "stages.0", "stages.0.blocks", "stages.0.blocks.1"]) == "stages/stages.0/blocks/blocks.1"
