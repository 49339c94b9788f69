from pathlib import Path

import onnx
import onnx.compose
import pytest

from test_engine_onnx_fixture import elfatt_model, save
from elfatt_deploy.engine.builder import BuildOptions, format_parser_error, prepare_build
from elfatt_deploy.engine.onnx_prep import elfatt_functions, graph_inputs, remove_elfatt_functions
from elfatt_deploy.engine.plugin import PLUGIN_LIBRARY_NAME


def test_remove_only_elfatt_functions():
    model = elfatt_model(extra_function=True)
    assert [f.domain for f in model.functions] == ["elfatt", "custom"]
    assert remove_elfatt_functions(model) == 1
    assert [f.domain for f in model.functions] == ["custom"]
    assert [n.op_type for n in model.graph.node] == ["Transpose", "ElfattAttention"]  # nodes stay
    assert any(o.domain == "elfatt" for o in model.opset_import)
    assert remove_elfatt_functions(model) == 0


def test_graph_inputs_skip_initializers():
    model = elfatt_model(dims=(1, 3, 224, "w"))
    model.graph.initializer.append(onnx.numpy_helper.from_array(__import__("numpy").zeros(2, "float32"), "w0"))
    model.graph.input.append(onnx.helper.make_tensor_value_info("w0", onnx.TensorProto.FLOAT, [2]))
    [spec] = graph_inputs(model)
    assert spec.name == "images" and spec.dims == (1, 3, 224, "w") and spec.dtype == "float32"


def _options(tmp_path, model, **kw):
    path = save(model, tmp_path / "m.onnx")
    return BuildOptions(onnx_path=path, output=tmp_path / "m.engine", **kw)


def test_prepare_with_plugin_strips_function(tmp_path):
    lib = tmp_path / PLUGIN_LIBRARY_NAME
    lib.write_bytes(b"fake")
    plan = prepare_build(_options(tmp_path, elfatt_model(), plugin=str(lib), shapes="min:1x3x32x32,opt:1x3x64x64,max:2x3x64x64"))
    parsed = onnx.load_from_string(plan.model_bytes)
    assert not elfatt_functions(parsed) and plan.functions_removed == 1 and plan.elfatt_node_count == 1
    assert plan.plugin_candidates == [lib] and plan.expected_plugin_layers == 1 and plan.profile.max == (2, 3, 64, 64)
    assert plan.onnx_props["precision"] == "fp32"
    assert elfatt_functions(onnx.load(str(tmp_path / "m.onnx")))  # the file itself is untouched


def test_prepare_without_plugin_keeps_function(tmp_path):
    plan = prepare_build(_options(tmp_path, elfatt_model(dims=(1, 3, 32, 32)), use_plugin=False))
    parsed = onnx.load_from_string(plan.model_bytes)
    # kept, under a name no plugin creator has, and the nodes lose plugin_namespace / plugin_version
    assert [f.name for f in elfatt_functions(parsed)] == ["ElfattAttentionFunctionBody"]
    node = [n for n in parsed.graph.node if n.domain == "elfatt"][0]
    assert node.op_type == "ElfattAttentionFunctionBody" and not {"plugin_namespace", "plugin_version"} & {
        a.name for a in node.attribute}
    assert plan.plugin_candidates == [] and plan.expected_plugin_layers == 0 and plan.profile.is_static


def test_no_plugin_on_plugin_only_file(tmp_path):
    with pytest.raises(ValueError, match="plugin-only export.*--plugin-only"):
        prepare_build(_options(tmp_path, elfatt_model(with_function=False, dims=(1, 3, 32, 32)), use_plugin=False))


def test_prefixed_op_type_is_refused_for_the_plugin_and_builds_without_it(tmp_path):
    """onnx.compose.add_prefix renames local functions and their nodes by default (rename_functions=True)."""
    lib = tmp_path / PLUGIN_LIBRARY_NAME
    lib.write_bytes(b"fake")
    prefixed = onnx.compose.add_prefix(elfatt_model(dims=(1, 3, 32, 32)), "a_")
    assert [n.op_type for n in prefixed.graph.node if n.domain == "elfatt"] == ["a_ElfattAttention"]
    with pytest.raises(ValueError, match="'a_ElfattAttention'.*rename_functions=False.*--no-plugin"):
        prepare_build(_options(tmp_path, prefixed, plugin=str(lib)))
    plan = prepare_build(_options(tmp_path, prefixed, use_plugin=False))  # the renamed function body is imported
    assert [f.name for f in elfatt_functions(onnx.load_from_string(plan.model_bytes))] == ["a_ElfattAttention"]
    kept = onnx.compose.add_prefix(elfatt_model(dims=(1, 3, 32, 32)), "a_", rename_functions=False)
    assert prepare_build(_options(tmp_path, kept, plugin=str(lib))).elfatt_node_count == 1


def test_missing_plugin_lists_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ELFATT_PLUGIN_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="Tried, in order") as info:
        prepare_build(_options(tmp_path, elfatt_model(dims=(1, 3, 32, 32))))
    assert str(tmp_path / "nowhere") in str(info.value)


@pytest.mark.parametrize("kw, match", [
    (dict(shapes=None), "dynamic dimensions"),
    (dict(shapes="1x3x32x32", workspace_mb=-5), "--workspace -5"),
    (dict(shapes="1x3x32x32", plugin="x.so", use_plugin=False), "contradict"),
])
def test_prepare_errors(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        prepare_build(_options(tmp_path, elfatt_model(), **kw))


def test_not_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        prepare_build(BuildOptions(onnx_path=bad, output=tmp_path / "o.engine", use_plugin=False))


class _FakeParserError:
    def __str__(self):
        return "In node 1 with name: blocks.0.attn and operator: ElfattAttention: UNSUPPORTED_NODE: no plugin"

    def node_name(self):
        return "blocks.0.attn"

    def node_operator(self):
        return "ElfattAttention"

    def node(self):
        return 1

    def local_function_stack(self):
        return ["ElfattAttention"]


def test_parser_error_verbatim():
    text = format_parser_error(_FakeParserError())
    assert text.startswith(str(_FakeParserError())) and "in local function ElfattAttention" in text


def test_profile_from_a_shipped_recipe(tmp_path):
    recipes = sorted((Path(__file__).resolve().parents[1] / "export").glob("*dynamic*.toml"))
    if not recipes:
        pytest.skip("no dynamic recipe in export/")
    from elfatt_deploy.export.recipes import load_recipe

    recipe = load_recipe(recipes[0])
    plan = prepare_build(_options(tmp_path, elfatt_model(), use_plugin=False, recipe=str(recipes[0])))
    assert (plan.profile.min, plan.profile.opt, plan.profile.max) == (
        tuple(recipe.min_shape), tuple(recipe.opt_shape), tuple(recipe.max_shape))
