"""`elfatt-deploy export` then `elfatt-deploy validate` (ONNX Runtime vs PyTorch), and `polygraphy run` on the file."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from elfatt_deploy.cli import main
from elfatt_deploy.runtime.backends import make_runner
from elfatt_deploy.validation.metrics import compare_outputs
from elfatt_deploy.validation.tolerances import default_rtol_l2

RECIPE = """model = "elfatt_vit_tiny"
precision = "{precision}"
dynamic = {dynamic}
opt_shape = "1x3x64x96"
min_shape = "1x3x64x96"
max_shape = "{max_shape}"
[model_config]
depth = 1
"""


def _export(tmp_path, name, precision="fp32", dynamic=True, extra=()):
    recipe = tmp_path / f"{name}.toml"
    recipe.write_text(RECIPE.format(precision=precision, dynamic=str(dynamic).lower(),
                                    max_shape="2x3x256x256" if dynamic else "1x3x64x96"))
    out = tmp_path / f"{name}.onnx"
    assert main(["export", "--recipe", str(recipe), "-o", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("cli"), "fp32")


def test_validate_passes_and_writes_report(fp32_file, tmp_path, capsys):
    report = tmp_path / "report.json"
    code = main(["validate", str(fp32_file), "--shapes", "1x3x64x96,2x3x72x104", "--samples", "2",
                 "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "output 'logits'" in out and "rel L2 err" in out and "top-1 agree" in out and "PASS" in out
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["rtol_l2"] == 1e-5
    assert len(data["rows"]) == 4 and all(r["rel_l2_error"] <= 1e-5 for r in data["rows"])
    assert data["settings"]["precision"] == "fp32" and data["environment"]["onnxruntime"]


def test_validate_fails_when_tolerance_is_exceeded(fp32_file, capsys):
    code = main(["validate", str(fp32_file), "--shapes", "1x3x64x96", "--samples", "1", "--rtol-l2", "1e-12"])
    assert code == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    # float32 rounding against a tightened tolerance is no weights mismatch: no such hint
    assert "different weights" not in captured.out + captured.err


def test_validate_detects_a_different_model(fp32_file, capsys):
    """Other weights (another seed) must not pass: the check can fail, and the hint names the likely cause."""
    code = main(["validate", str(fp32_file), "--shapes", "1x3x64x96", "--samples", "1", "--weight-seed", "7"])
    assert code == 1
    captured = capsys.readouterr()
    assert "different weights" in captured.out + captured.err


def test_fp16_file_gets_the_fp16_tolerance(tmp_path, capsys):
    path = _export(tmp_path, "fp16", precision="fp16")
    code = main(["validate", str(path), "--shapes", "1x3x64x96,1x3x80x112", "--samples", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tolerance 5.0e-03" in out


@pytest.mark.parametrize("argv, message", [
    (["validate", "missing.onnx"], "'missing.onnx' does not exist"),
    (["validate", "{file}", "--model", "elfatt_vit_small"], "differs from the model the file was exported from"),
    (["validate", "{file}", "--shapes", "1x3x64"], "has 3 dimensions; expected 4"),
    (["validate", "{file}", "--samples", "0"], "--samples 0 must be >= 1"),
    (["validate", "{file}", "--rtol-l2", "-1"], "must be a positive finite number"),
    (["validate", "{file}", "--rtol-l2", "inf"], "must be a positive finite number"),
    (["validate", "{file}", "--providers", "nosuch"], "--providers 'nosuch' is not an ONNX Runtime execution provider"),
    (["validate", "{file}", "--providers", "cpu,,"], "--providers 'cpu,,' has an empty entry"),
    (["bench", "--backend", "onnxruntime", "--onnx", "{file}", "--input-shape", "1x3x64x64", "--providers", ",cpu"],
     "--providers ',cpu' has an empty entry"),
    (["validate", "{file}", "--min-agreement", "2"], "--min-agreement applies with --images DIR only"),
    (["validate", "{file}", "--input-shape", "1x3x64x96"], "--input-shape applies with --images DIR only"),
    (["validate", "{file}", "--images", "{tmp}", "--shapes", "1x3x64x96"], "--shapes applies to random inputs only"),
    (["validate", "{file}", "--images", "{tmp}", "--shapes", "1x3x64x96", "--samples", "3"],
     "--shapes and --samples apply to random inputs only"),
    (["validate", "{file}", "--images", "{tmp}", "--min-agreement", "2"], "--min-agreement 2.0 must be in [0, 1]"),
    (["validate", "--backend", "tensorrt"], "--backend tensorrt needs --engine PATH"),
    (["validate", "{file}", "--backend", "openvino", "--providers", "cuda"],
     "--providers cuda is for --backend onnxruntime, not --backend openvino; --backend openvino takes --device, "
     "--inference-precision"),
    (["validate", "{file}", "--plugin", "lib.so"], "--plugin lib.so is for --backend tensorrt, not --backend onnxruntime"),
    (["validate", "{file}", "--inference-precision", "bf16"], "--inference-precision bf16 is for --backend openvino"),
    (["validate", "{file}", "--engine", "m.engine"], "--engine m.engine is for --backend tensorrt"),
    (["bench", "--backend", "onnxruntime", "--onnx", "{file}", "--input-shape", "1x3x64x64", "--dtype", "float16"],
     "--dtype float16 is for --backend torch, not --backend onnxruntime; --backend onnxruntime takes --providers"),
    (["bench", "--backend", "torch", "--model", "elfatt_vit_tiny", "--input-shape", "1x3x64x64", "--cuda-graph"],
     "--cuda-graph is for --backend tensorrt, not --backend torch"),
    (["bench", "--backend", "onnxruntime", "--onnx", "{file}", "--input-shape", "1x3x64x64", "--device", "cuda"],
     "--device cuda is for --backend torch or openvino, not --backend onnxruntime"),
    (["export", "--model", "nosuch", "-o", "x.onnx"], "unknown model 'nosuch'"),
    (["export", "--model", "elfatt_vit_tiny", "--checkpoint", "none.safetensors", "-o", "x.onnx"], "does not exist"),
])
def test_cli_errors_are_clear(fp32_file, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{file}", str(fp32_file)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_a_provider_this_onnxruntime_build_lacks_is_the_environment(fp32_file, capsys):
    """``--providers cuda`` with the CPU-only onnxruntime: exit 3 (docs/cli.md), naming the package to install;
    a typo is exit 2 (above)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA execution provider")
    assert main(["validate", str(fp32_file), "--providers", "cuda,cpu", "--samples", "1"]) == 3
    err = capsys.readouterr().err
    assert "'cuda' (CUDAExecutionProvider) is not available in this onnxruntime" in err
    assert "pip install onnxruntime-gpu" in err


def test_export_rejects_a_checkpoint_of_another_model(tmp_path, capsys):
    from safetensors.torch import save_file

    from elfatt_deploy.models import create_model

    save_file(create_model("elfatt_vit_tiny", depth=1).state_dict(), str(tmp_path / "w.safetensors"))
    code = main(["export", "--model", "elfatt_vit_small", "--checkpoint", str(tmp_path / "w.safetensors"),
                 "-o", str(tmp_path / "x.onnx")])
    assert code == 2
    assert "but the model expects" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_tensorrt_backend_says_tensorrt_is_missing(without_tensorrt):
    from elfatt_deploy.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="TensorRT, which is not installed"):
        make_runner("tensorrt", engine_path="model.engine")


def test_backend_factory_errors():
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        make_runner("tvm")
    with pytest.raises(ValueError, match="needs an ONNX file"):
        make_runner("onnxruntime")


def test_openvino_tolerance_follows_the_precision_it_computes_in():
    from elfatt_deploy.validation.tolerances import default_rtol_l2, tolerance_note

    assert default_rtol_l2("openvino", "fp32", inference_precision="f32") == 1e-5
    assert default_rtol_l2("openvino", "fp32", inference_precision="bf16") == 3e-2
    assert default_rtol_l2("openvino", "fp16", inference_precision="f16") == 5e-3
    assert default_rtol_l2("openvino", "int8-qdq") == 5e-2  # was no default: --rtol-l2 was needed
    assert default_rtol_l2("openvino", "int8-qdq", inference_precision="bf16") == 5e-2  # never tighter than the file's
    assert default_rtol_l2("openvino", "fp32", 3e-4, inference_precision="bf16") == 3e-4  # --rtol-l2 wins
    assert tolerance_note("openvino", "fp32", inference_precision="bf16") == ": OpenVINO computing in bf16 (--inference-precision)"
    assert tolerance_note("openvino", "int8-qdq", inference_precision="bf16") == ""
    assert tolerance_note("openvino", "fp32", 3e-4) == ": --rtol-l2"


def test_openvino_cpu_falls_back_from_f16_as_its_plugin_does():
    """OpenVINO's CPU plugin computes an f16 request in bf16 where the CPU has bf16 but no f16 units, and in f32
    where it has neither: the limit must follow what runs (an f16 limit on bf16 arithmetic fails every model)."""
    from elfatt_deploy.runtime.openvino_runner import cpu_inference_precision

    assert cpu_inference_precision("f16", ["FP32", "BF16", "INT8"]) == "bf16"
    assert cpu_inference_precision("f16", ["FP32", "FP16", "BF16"]) == "f16"
    assert cpu_inference_precision("f16", ["FP32", "INT8"]) == "f32"
    assert cpu_inference_precision("bf16", ["FP32", "INT8"]) == "f32"
    assert cpu_inference_precision("bf16", ["FP32", "BF16"]) == "bf16"
    assert cpu_inference_precision("f32", None) == "f32"


def test_the_fallback_matches_what_openvino_compiles_here(tmp_path):
    """On this machine's CPU: what cpu_inference_precision predicts is what the compiled model reports."""
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (it is in the openvino extra)")
    from onnx import TensorProto, helper

    from elfatt_deploy.runtime.openvino_runner import cpu_inference_precision

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    path = tmp_path / "relu.onnx"
    onnx_model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                   opset_imports=[helper.make_opsetid("", 18)])
    import onnx

    onnx.save(onnx_model, str(path))
    core = ov.Core()
    model = core.read_model(str(path))
    for requested in ("f16", "bf16"):
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": requested})
        reported = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "bf16", "f16", "f32"
        assert cpu_inference_precision(requested) == reported, requested


def test_metrics_and_tolerances():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    same = compare_outputs(ref.astype(np.float32), ref)
    assert same.rel_l2_error == 0 and same.top1_agreement == 1.0 and same.cosine_similarity == pytest.approx(1.0)
    flipped = compare_outputs(ref[::-1].copy(), ref)
    assert flipped.top1_agreement == 0.0 and flipped.rel_l2_error > 0.5
    assert not compare_outputs(np.full_like(ref, np.nan), ref).finite
    with pytest.raises(ValueError, match="differs from the reference shape"):
        compare_outputs(ref[:1], ref)
    assert default_rtol_l2("tensorrt", "fp32") == 1e-4 and default_rtol_l2("onnxruntime", "fp16") == 5e-3
    assert default_rtol_l2("onnxruntime", "fp32", 3e-4) == 3e-4


def test_metrics_of_torch_tensors_are_computed_in_float64():
    torch = pytest.importorskip("torch")
    ref = torch.ones(1000, dtype=torch.float64)
    out = ref + 1e-9  # below float32 resolution: a float32 detour would report 0
    assert compare_outputs(out, ref).rel_l2_error == pytest.approx(1e-9, rel=1e-6)
    assert compare_outputs(ref.to(torch.bfloat16), ref).rel_l2_error == 0


def _polygraphy(*args):
    exe = shutil.which("polygraphy")
    cmd = [exe] if exe else [sys.executable, "-m", "polygraphy"]
    return subprocess.run(cmd + ["run", *map(str, args), "--onnxrt"], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("extra", [(), ("--input-shapes", "image:[2,3,72,104]")], ids=["as-is", "input-shapes"])
def test_polygraphy_runs_the_dynamic_file(fp32_file, extra):
    # As is, Polygraphy feeds a 1x3x1x1 image (dynamic dims become 1): the models pad to whole patches.
    result = _polygraphy(fp32_file, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout + result.stderr


def test_polygraphy_runs_a_static_fp16_file_as_is(tmp_path):
    path = _export(tmp_path, "static", precision="fp16", dynamic=False)
    result = _polygraphy(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout + result.stderr


def test_a_report_with_non_finite_errors_is_strict_json(fp32_file, tmp_path, capsys):
    """A NaN in the weights makes the errors NaN / inf: the report is still JSON that strict parsers read
    (null, not NaN / Infinity), the run fails, and the hint says the output is not finite."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32_file))
    for i, init in enumerate(model.graph.initializer):
        a = numpy_helper.to_array(init)
        if a.ndim == 1 and a.size > 4 and a.dtype == np.float32:
            a = a.copy()
            a[1] = np.nan
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(a, init.name))
    poisoned, report = tmp_path / "nan.onnx", tmp_path / "r.json"
    onnx.save(model, str(poisoned))
    code = main(["validate", str(poisoned), "--shapes", "1x3x64x96", "--samples", "1", "--report", str(report)])
    captured = capsys.readouterr()
    assert code == 1 and "not finite" in captured.out + captured.err

    def refuse(value):
        raise ValueError(f"non-standard JSON constant {value}")

    data = json.loads(report.read_text(), parse_constant=refuse)
    assert data["passed"] is False and any(r["rel_l2_error"] is None for r in data["rows"])


@pytest.mark.parametrize("progress", ["--progress", "--no-progress"])
def test_a_file_that_does_not_run_at_a_size_fails_the_check_with_the_shape(fp32_file, tmp_path, capsys, progress):
    """A graph whose arithmetic only holds at one batch (as ONNX Runtime's quantize_static leaves a ViT whose
    position-embedding size arithmetic it quantized): validate fails the check (exit 1) and names the backend and
    the input, instead of an internal error (exit 4). The sizes it runs at still pass."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_file))
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [o + "_pre" if o == output else o for o in node.output]
    classes = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, classes), np.float32), "one_batch"))
    model.graph.node.append(helper.make_node("Add", [output + "_pre", "one_batch"], ["fixed_batch"]))
    model.graph.node.append(helper.make_node("Reshape", ["fixed_batch", "batch1_shape"], [output]))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, classes], np.int64), "batch1_shape"))
    broken = tmp_path / "batch1.onnx"
    onnx.save(model, str(broken))
    capsys.readouterr()
    assert main(["validate", str(broken), "--shapes", "1x3x64x96,2x3x64x96", "--samples", "1", progress]) == 1
    err = capsys.readouterr().err
    assert "onnxruntime could not run the file at image 2x3x64x96" in err and "internal error" not in err, err
    assert main(["validate", str(broken), "--shapes", "1x3x64x96", "--samples", "1", progress]) == 0


def test_a_qdq_graph_that_records_fp32_gets_a_note(fp32_file, tmp_path, capsys):
    """A file quantized by another tool (ONNX Runtime's quantize_static keeps `elfatt.precision` = fp32): validate
    keeps the recorded precision's limit but says that the graph holds QuantizeLinear nodes and how to choose."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_file))
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [o + "_pre" if o == output else o for o in node.output]
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0.05, np.float32), "q_scale"),
                                    numpy_helper.from_array(np.array(0, np.int8), "q_zero")])
    model.graph.node.extend([helper.make_node("QuantizeLinear", [output + "_pre", "q_scale", "q_zero"], ["q"]),
                             helper.make_node("DequantizeLinear", ["q", "q_scale", "q_zero"], [output])])
    qdq = tmp_path / "qdq.onnx"
    onnx.save(model, str(qdq))
    capsys.readouterr()
    main(["validate", str(qdq), "--shapes", "1x3x64x96", "--samples", "1"])
    err = capsys.readouterr().err
    assert "has 1 QuantizeLinear nodes but records precision fp32" in err and "--precision int8-qdq" in err, err
    main(["validate", str(qdq), "--shapes", "1x3x64x96", "--samples", "1", "--precision", "int8-qdq"])
    assert "QuantizeLinear" not in capsys.readouterr().err
