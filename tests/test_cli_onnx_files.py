"""Files validate and bench cannot run are refused up front with a message (exit 2), never a traceback:
static files at other sizes, plugin-only exports on ONNX Runtime, text / truncated / foreign / empty files."""

import onnx
import onnx.numpy_helper
import pytest

from elfatt_deploy.cli import main
from elfatt_deploy.export import export_onnx
from elfatt_deploy.export.model_loading import build_model

BENCH = ["--iterations", "2", "--warmup", "0", "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("files")
    model = build_model("elfatt_vit_tiny", config={"depth": 1})
    out = {
        "static": export_onnx(model, tmp / "static.onnx", (1, 3, 48, 80), dynamic=False),
        "plugin": export_onnx(model, tmp / "plugin.onnx", (1, 3, 48, 80), plugin_only=True),
    }
    (tmp / "text.onnx").write_text("not a model\n")
    out["text"] = tmp / "text.onnx"
    data = out["static"].read_bytes()
    (tmp / "truncated.onnx").write_bytes(data[: len(data) // 2])
    out["truncated"] = tmp / "truncated.onnx"
    out["foreign"] = tmp / "linear.onnx"  # what an nn.Linear export looks like: x [2, 10] -> Gemm -> y [2, 4]
    h = onnx.helper
    weight = h.make_tensor("w", onnx.TensorProto.FLOAT, [4, 10], [0.0] * 40)
    graph = h.make_graph([h.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "linear",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 10])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])], [weight])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 18)]), str(out["foreign"]))
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], [])), str(tmp / "empty.onnx"))
    out["empty"] = tmp / "empty.onnx"
    out["collapsed"] = tmp / "collapsed.onnx"
    onnx.save(_with_another_layouts_body(onnx.load(str(out["static"]))), str(out["collapsed"]))
    return out


def _with_another_layouts_body(model: onnx.ModelProto) -> onnx.ModelProto:
    """What onnxslim 0.1.98 (and onnx-graphsurgeon 0.6.1) make of a file with several channel layouts: the
    functions' overloads dropped, so a node runs the body of another layout. Here the body's qkv split
    sizes are doubled (as in a layout of twice the channels), which ONNX Runtime's shape inference refuses."""
    body = model.functions[0]
    constants = {n.output[0]: n for n in body.node if n.op_type == "Constant"}
    split = next(n for n in body.node if n.op_type == "Split" and len(n.output) > 2)
    tensor = constants[split.input[1]].attribute[0].t
    values = onnx.numpy_helper.to_array(tensor) * 2
    tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    return model


def test_a_static_file_validates_at_its_own_shape(files, capsys):
    # before: the default second shape 2x3x200x264 ended in a PolygraphyException traceback
    assert main(["validate", str(files["static"]), "--samples", "1"]) == 0
    captured = capsys.readouterr()
    assert "1x3x48x80" in captured.out and "200x264" not in captured.out and "PASS" in captured.out
    assert "has a static input; validating at 1x3x48x80" in captured.err


@pytest.mark.parametrize("argv", [
    ["validate", "{static}", "--shapes", "1x3x48x80,2x3x200x264"],
    ["bench", "--backend", "onnxruntime", "--onnx", "{static}", "--input-shape", "1x3x64x64", *BENCH],
])
def test_a_shape_a_static_file_cannot_take_is_refused_before_any_run(files, monkeypatch, capsys, argv):
    import elfatt_deploy.validation.comparator as comparator

    monkeypatch.setattr(comparator, "run_parity", lambda *a, **k: pytest.fail("ran before checking the shapes"))
    argv = [a.replace("{static}", str(files["static"])) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{files['static']} takes only 1x3x48x80 (a static export)" in err and "re-export with --dynamic" in err


@pytest.mark.parametrize("kind, message", [
    ("plugin", "is a plugin-only export: its 1 ElfattAttention nodes have no ONNX function body"),
    ("text", "is not a readable ONNX model"),
    ("truncated", "is not a readable ONNX model"),
    ("foreign", "has the input 'x' of shape 2x10; elfatt-deploy runs image models with one N x 3 x H x W"),
    ("empty", "has 0 inputs (none)"),
    # before: "internal error ... this is a bug" (exit 4) from ONNX Runtime's session creation
    ("collapsed", "ONNX Runtime cannot load"),
])
@pytest.mark.parametrize("command", ["validate", "validate --model", "bench"])
def test_files_that_cannot_run_are_refused_with_a_message(files, capsys, kind, message, command):
    path = str(files[kind])
    argv = {"validate": ["validate", path],
            "validate --model": ["validate", path, "--model", "elfatt_vit_tiny"],
            "bench": ["bench", "--backend", "onnxruntime", "--onnx", path, "--input-shape", "1x3x48x80", *BENCH]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and "internal error" not in err
    if kind == "collapsed":
        assert "Mismatch between the sum of 'split'" in err and "attach_functions" in err and "--inline" in err, err


def test_a_directory_is_not_called_missing(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory; give the .onnx file" in err and "does not exist" not in err
