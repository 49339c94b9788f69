"""`export --inline`: the same model with the ElfattAttention function inlined into standard ONNX ops."""

import json
import shutil
import subprocess
import sys

import onnx
import pytest

from test_engine_onnx_fixture import elfatt_model, save
from test_export_helpers import elfatt_nodes, ort_session, random_image, reduced_model, torch_reference
from _naive_elfatt import rel_l2
from elfatt_deploy import export_onnx
from elfatt_deploy.cli import main
from elfatt_deploy.engine.builder import BuildOptions, prepare_build
from elfatt_deploy.export.model_loading import build_model
from elfatt_deploy.export.inline import inline_elfatt_functions, is_inlined
from elfatt_deploy.export.recipes import load_recipe


@pytest.fixture(scope="module")
def vit_pair(tmp_path_factory):
    """The default and the inlined export of one reduced ViT (both dynamic, traced at 64x96); the
    weights are validate's default ones (seed 0)."""
    model = build_model("elfatt_vit_tiny", config={"depth": 1})
    tmp = tmp_path_factory.mktemp("inline")
    default = export_onnx(model, tmp / "default.onnx", "1x3x64x96")
    inlined = export_onnx(model, tmp / "inlined.onnx", "1x3x64x96", inline=True)
    return model, default, inlined


def test_inlined_file_has_standard_ops_only(vit_pair, monkeypatch):
    import copy

    from elfatt_deploy.export import inline as inline_module
    from elfatt_deploy.export.fold import fold_constant_nodes

    _, default_path, inlined_path = vit_pair
    default, inlined = onnx.load(str(default_path)), onnx.load(str(inlined_path))
    onnx.checker.check_model(inlined, full_check=True)  # in a fresh process too: no schema to register
    assert {n.domain for n in inlined.graph.node} == {""}
    assert [(o.domain, o.version) for o in inlined.opset_import] == [
        (o.domain, o.version) for o in default.opset_import if o.domain == ""]
    assert not inlined.functions and inlined.ir_version == default.ir_version
    def sliced_shapes(nodes):  # Shape(start=, end=) nodes: each becomes Shape + 2 Constants + Slice
        return sum(n.op_type == "Shape" and len(n.attribute) > 0 for n in nodes)

    with monkeypatch.context() as patch:  # the inlined graph before its weight-only arithmetic is folded
        patch.setattr(inline_module, "fold_constant_nodes", lambda model, **_: 0)
        unfolded = inline_elfatt_functions(default)
    body = default.functions[0].node
    body_nodes = len(body) + 3 * sliced_shapes(body)
    assert len(unfolded.graph.node) == len(default.graph.node) - 1 + body_nodes + 3 * sliced_shapes(default.graph.node)
    # body nodes are named after their call site, names are unique
    (call,) = elfatt_nodes(default)
    names = [n.name for n in unfolded.graph.node]
    assert len(set(names)) == len(names)
    assert sum(name.startswith(call.name + "/") for name in names) == body_nodes
    # what depends on weights alone is folded: fewer nodes, nothing left to fold, and the LePE Conv (like the
    # patch embedding) reads its weight from an initializer (ONNX Runtime's quantize_dynamic wants that)
    refolded = copy.deepcopy(unfolded)
    assert fold_constant_nodes(refolded) > 0
    assert len(inlined.graph.node) == len(refolded.graph.node) < len(unfolded.graph.node)
    assert fold_constant_nodes(copy.deepcopy(inlined)) == 0
    initializers = {i.name for i in inlined.graph.initializer}
    convs = [n for n in inlined.graph.node if n.op_type == "Conv"]
    # the patch embedding, and the LePE of the global and of the local head part
    assert len(convs) == 3 and all(n.input[1] in initializers for n in convs), [n.input for n in convs]
    names = [n.name for n in inlined.graph.node]
    assert len(set(names)) == len(names)
    # the forms onnx-graphsurgeon folds wrongly are rewritten (see test_surgeon_sanitize_folds_the_inlined_file)
    assert sliced_shapes(inlined.graph.node) == 0
    assert not [n for n in inlined.graph.node if n.op_type == "Constant" and n.attribute[0].name != "value"]
    # metadata kept, plus the inlined flag
    meta, meta_default = ({p.key: p.value for p in m.metadata_props} for m in (inlined, default))
    assert meta.pop("elfatt.inlined") == "true" and meta_default.pop("elfatt.inlined") == "false"
    assert meta == meta_default and is_inlined(inlined) and not is_inlined(default)
    assert [i.name for i in inlined.graph.input] == ["image"] and [o.name for o in inlined.graph.output] == ["logits"]


def test_inlined_file_computes_what_the_default_file_computes(vit_pair, rng):
    model, default_path, inlined_path = vit_pair
    default, inlined = ort_session(default_path), ort_session(inlined_path)
    for shape in [(1, 3, 64, 96), (2, 3, 72, 104)]:  # 4x6 and 5x7 patches: partial 7x7 windows
        image = random_image(rng, shape)
        reference = torch_reference(model, image)
        (a,) = default.run(None, {"image": image})
        (b,) = inlined.run(None, {"image": image})
        assert rel_l2(b, reference) <= 1e-5 and rel_l2(b, a.astype("float64")) <= 1e-6, shape


def test_validate_runs_an_inlined_file(vit_pair, capsys):
    model, _, inlined_path = vit_pair
    code = main(["validate", str(inlined_path), "--shapes", "1x3x64x96", "--samples", "1"])
    assert code == 0, capsys.readouterr()
    assert main(["validate", str(inlined_path), "--shapes", "1x3x64x96", "--samples", "1", "--weight-seed", "5"]) == 1


def test_inline_keeps_a_file_without_elfatt_nodes():
    proto = elfatt_model()
    proto.graph.node.pop()  # drop the ElfattAttention node: a vanilla-twin-like graph
    proto.graph.output[0].name = "qkv"
    del proto.functions[:]
    inlined = inline_elfatt_functions(proto, check=False)
    assert [n.op_type for n in inlined.graph.node] == ["Transpose"] and is_inlined(inlined)


def test_plugin_only_file_cannot_be_inlined():
    with pytest.raises(ValueError, match="plugin-only export.*re-export without --plugin-only"):
        inline_elfatt_functions(elfatt_model(with_function=False))


def test_plugin_only_and_inline_contradict(tmp_path):
    with pytest.raises(ValueError, match="plugin_only and inline contradict"):
        export_onnx(reduced_model("vit", depth=1), tmp_path / "x.onnx", "1x3x64x64", plugin_only=True, inline=True)
    assert not (tmp_path / "x.onnx").exists()


def test_recipe_inline_key(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "elfatt_vit_tiny"\nopt_shape = "1x3x64x64"\ndynamic = false\ninline = true\n')
    assert load_recipe(recipe).inline is True
    recipe.write_text('model = "elfatt_vit_tiny"\nopt_shape = "1x3x64x64"\ndynamic = false\ninline = "yes"\n')
    with pytest.raises(ValueError, match="inline = 'yes' must be true or false"):
        load_recipe(recipe)
    recipe.write_text('model = "elfatt_vit_tiny"\nopt_shape = "1x3x64x64"\ndynamic = false\ninline = true\n'
                      'plugin_only = true\n')
    with pytest.raises(ValueError, match="plugin_only and inline are both set"):
        load_recipe(recipe)


def test_cli_export_inline(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "elfatt_vit_tiny"\nopt_shape = "1x3x64x64"\ndynamic = false\ninline = true\n'
                      "[model_config]\ndepth = 1\n")
    out = tmp_path / "m.onnx"
    assert main(["export", "--recipe", str(recipe), "-o", str(out)]) == 0
    assert "1 attention layers inlined into standard ops" in capsys.readouterr().out
    proto = onnx.load(str(out))
    assert is_inlined(proto) and not elfatt_nodes(proto)
    assert json.loads({p.key: p.value for p in proto.metadata_props}["elfatt.model_config"])["depth"] == 1
    # the flag overrides the recipe
    assert main(["export", "--recipe", str(recipe), "--no-inline", "-o", str(tmp_path / "n.onnx")]) == 0
    assert len(elfatt_nodes(onnx.load(str(tmp_path / "n.onnx")))) == 1
    assert main(["export", "--recipe", str(recipe), "--plugin-only", "-o", str(tmp_path / "p.onnx")]) == 2
    assert "plugin_only and inline are both set" in capsys.readouterr().err
    assert not (tmp_path / "p.onnx").exists()


def test_builder_takes_an_inlined_file_without_the_plugin_only(tmp_path):
    # (the fixture's body is an Identity, whose shape differs from the declared output: no checker)
    path = save(inline_elfatt_functions(elfatt_model(dims=(1, 3, 32, 32)), check=False), tmp_path / "m.onnx")
    plan = prepare_build(BuildOptions(onnx_path=path, output=tmp_path / "m.engine", use_plugin=False))
    assert plan.plugin_candidates == [] and plan.elfatt_node_count == 0 and plan.profile.is_static
    with pytest.raises(ValueError, match=r"inlined export .*add --no-plugin, or export without --inline"):
        prepare_build(BuildOptions(onnx_path=path, output=tmp_path / "m.engine", plugin="lib.so"))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_surgeon_sanitize_folds_the_inlined_file(tmp_path, dynamic, rng):
    """`polygraphy surgeon sanitize --fold-constants` (onnx-graphsurgeon) on the inlined file gives a correct file.

    Before the rewrites in export/inline.py it did not: a folded value_float became a float64
    initializer (ONNX Runtime refuses the file), and Shape(start=, end=) of a static tensor was
    folded to the whole shape (static files fail with 'Incompatible dimensions').
    """
    pytest.importorskip("onnx_graphsurgeon", reason="onnx-graphsurgeon is not installed (it is in the test extra)")
    model = build_model("elfatt_vit_tiny", config={"depth": 1})
    path = export_onnx(model, tmp_path / "inlined.onnx", "1x3x64x96", dynamic=dynamic, inline=True)
    out = tmp_path / "sanitized.onnx"
    exe = shutil.which("polygraphy")
    cmd = [exe] if exe else [sys.executable, "-m", "polygraphy"]
    done = subprocess.run(cmd + ["surgeon", "sanitize", str(path), "--fold-constants", "-o", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    log = done.stdout + done.stderr
    assert "Inference failed" not in log and "Error merging shape info" not in log, log
    before, after = len(onnx.load(str(path)).graph.node), len(onnx.load(str(out)).graph.node)
    # the weight-only arithmetic is folded at export already; what is left to fold is shape arithmetic
    assert after < before * (0.9 if dynamic else 0.8), f"folding removed only {before - after} of {before} nodes"
    session = ort_session(out)
    for shape in [(1, 3, 64, 96)] if not dynamic else [(1, 3, 64, 96), (2, 3, 72, 104)]:
        image = random_image(rng, shape)
        (result,) = session.run(None, {"image": image})
        assert rel_l2(result, torch_reference(model, image)) <= 1e-5, shape


def test_onnxruntime_quantize_dynamic_takes_the_inlined_file(vit_pair, tmp_path, rng):
    """ONNX Runtime's quantize_dynamic wants constant Conv weights: the inlined file has them (its weight-only
    arithmetic is folded at export), so it quantizes, LePE Conv included, and stays near the float file."""
    from onnxruntime.quantization import quantize_dynamic

    _, _, inlined_path = vit_pair
    out = tmp_path / "dynamic_int8.onnx"
    quantize_dynamic(str(inlined_path), str(out))
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "ConvInteger" in ops and ({"MatMulInteger", "DynamicQuantizeMatMul"} & ops), sorted(ops)
    image = random_image(rng, (2, 3, 72, 104))  # no multiple of the 16-pixel patch grid's 7x7 windows
    (reference,) = ort_session(inlined_path).run(None, {"image": image})
    (quantized,) = ort_session(out).run(None, {"image": image})
    assert 0 < rel_l2(quantized, reference) < 5e-2


def test_inlining_falls_back_unfolded_with_a_warning(vit_pair, monkeypatch, rng, tmp_path):
    """Where ONNX Runtime cannot compute the bodies' constants, the inlined file is written unfolded (correct,
    only without constant LePE weights) and a warning says why, instead of the export failing."""
    from elfatt_deploy.export import inline as inline_module

    def broken(model, **_):
        raise RuntimeError("ONNX Runtime cannot run this")

    _, default_path, _ = vit_pair
    monkeypatch.setattr(inline_module, "fold_constant_nodes", broken)
    with pytest.warns(RuntimeWarning, match="left unfolded .*ONNX Runtime cannot run this"):
        inlined = inline_elfatt_functions(onnx.load(str(default_path)))
    assert {n.domain for n in inlined.graph.node} == {""}
    image = random_image(rng, (1, 3, 64, 96))
    (expected,) = ort_session(default_path).run(None, {"image": image})
    path = tmp_path / "unfolded.onnx"
    onnx.save(inlined, str(path))
    (got,) = ort_session(path).run(None, {"image": image})
    assert rel_l2(got, expected) < 1e-6
