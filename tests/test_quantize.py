"""`elfatt-deploy quantize`: explicit Q/DQ where the contract says, calibrated on images, bad input refused."""

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from elfatt_deploy import __version__
from elfatt_deploy.cli import main
from elfatt_deploy.data.image_folder import dataset_hash, decode_items, scan_image_folder, spread_order
from elfatt_deploy.data.transforms import to_model_input
from elfatt_deploy.export.metadata import read_metadata
from elfatt_deploy.export.model_loading import build_model
from elfatt_deploy.quantize.qdq import SIZE_ONLY_REASON, quantize_onnx, size_only_layers
from elfatt_deploy.reference_models import checkpoint_path

from _binomial import INT8_FLIPS, REFERENCE_ERRORS, max_misses, min_fraction

FLOAT_OPS = {"ElfattAttention", "LayerNormalization", "Softmax", "Add", "Erf", "Mul", "Div", "ReduceMean"}


@pytest.fixture(scope="module")
def quantized(reference_vit_int8):
    return reference_vit_int8, onnx.load(str(reference_vit_int8.output))


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_qdq_sits_on_every_matmul_gemm_conv_and_nowhere_else(quantized):
    result, model = quantized
    producers = _producers(model)
    inits = {i.name: i for i in model.graph.initializer}
    resample = size_only_layers(model)  # the dynamic file's position-table resample: two MatMuls, in float
    assert len(resample) == 2 and result.unquantized == {name: SIZE_ONLY_REASON for name in resample}
    layers = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and n.name not in resample]
    assert len(layers) == 18  # 4 blocks x 4 linears, patch embed, head
    for node in layers:
        act, weight = (producers[i] for i in node.input[:2])
        assert act.op_type == weight.op_type == "DequantizeLinear", node.name
        # weights: a float initializer -> Q -> DQ, per output channel, symmetric (zero point 0)
        q_weight = producers[weight.input[0]]
        w = inits[q_weight.input[0]]
        axis = next(a.i for a in weight.attribute if a.name == "axis")
        out_channels = w.dims[1] if node.op_type == "MatMul" else w.dims[0]
        assert w.data_type == onnx.TensorProto.FLOAT
        assert list(inits[weight.input[1]].dims) == [out_channels] and w.dims[axis] == out_channels
        assert not onnx.numpy_helper.to_array(inits[weight.input[2]]).any()
        assert onnx.numpy_helper.to_array(inits[weight.input[2]]).dtype == np.int8
        # activations: per tensor, zero point 0
        assert list(inits[act.input[1]].dims) == [] and onnx.numpy_helper.to_array(inits[act.input[2]]) == 0
    quantized_ins = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for node in model.graph.node:
        if node.op_type in FLOAT_OPS:
            assert not quantized_ins & set(node.input), f"{node.op_type} {node.name} reads a dequantized tensor"
    # outputs of the quantized layers stay float
    for node in layers:
        for consumer in (n for n in model.graph.node if node.output[0] in n.input):
            assert consumer.op_type != "QuantizeLinear"


def test_the_file_keeps_its_function_body_metadata_and_checks(quantized, calibration_images):
    result, model = quantized
    onnx.checker.check_model(model, full_check=True)
    assert [f.name for f in model.functions] == ["ElfattAttention"]
    assert sum(n.op_type == "ElfattAttention" for n in model.graph.node) == 4
    meta = read_metadata(model)
    assert meta["precision"] == "int8-qdq" and meta["base_precision"] == "fp32"
    assert meta["model_name"] == "elfatt_vit_micro"
    folder = scan_image_folder(calibration_images.root)
    used = list(decode_items([folder.items[i] for i in spread_order(len(folder.items), 30)], limit=30))
    assert meta["calibration_images"] == "30"
    assert meta["calibration_sha256"] == dataset_hash(used, folder.root) == result.calibration["sha256"]
    assert json.loads(meta["calibration"])["method"] == "max"
    # ONNX Runtime's quantizer writes producer "onnx.quantize"; the file names the toolkit and the quantizer
    assert (model.producer_name, model.producer_version) == ("elfatt-deploy", __version__)
    assert meta["quantizer"].startswith(f"onnxruntime {ort.__version__} quantize_static")
    assert model.doc_string.startswith("elfatt_vit_micro (int8-qdq), exported by elfatt-deploy")
    assert "INT8 Q/DQ on the fp32 export, calibrated on 30 images" in model.doc_string


def test_the_quantized_model_agrees_with_pytorch_on_held_out_images(quantized, held_out_images):
    result, _ = quantized
    model = build_model("elfatt_vit_micro", checkpoint=str(checkpoint_path("elfatt_vit_micro")))
    images = [d.image for d in decode_items(held_out_images.items)]
    labels = np.array([i.label for i in held_out_images.items])
    x = to_model_input(images, (112, 112))
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).double().numpy()
    out = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    rel_l2 = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    agreement = np.mean(out.argmax(1) == ref.argmax(1))
    assert 1e-4 < rel_l2 < 5e-2, rel_l2  # really quantized, and close
    # fresh images each run: thresholds a model at the measured rates misses with probability <= 1e-4
    assert agreement >= min_fraction(len(labels), INT8_FLIPS), agreement
    accuracy = np.mean(ref.argmax(1) == labels)  # the reference model has learned the task (10 classes)
    assert accuracy >= min_fraction(len(labels), REFERENCE_ERRORS), accuracy


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_calibrate_too(reference_vit_onnx, calibration_images, tmp_path, method, capsys):
    """... and ONNX Runtime's histogram calibrators print nothing (docs/cli.md: library logs only with -v)."""
    out = tmp_path / "q.onnx"
    capsys.readouterr()
    assert main(["quantize", str(reference_vit_onnx), "-o", str(out), "--calib", str(calibration_images.root),
                 "--calib-samples", "10", "--method", method, "--no-progress"]) == 0
    captured = capsys.readouterr()
    chatter = "Number of histogram bins"  # ORT's calibrators print() it
    assert chatter not in captured.out + captured.err and captured.err == "", captured.err
    meta = read_metadata(str(out))
    assert json.loads(meta["calibration"])["method"] == method and meta["calibration_images"] == "10"
    if method == "entropy":  # -v shows them, on stderr (stdout stays the command's result)
        assert main(["quantize", str(reference_vit_onnx), "-o", str(out), "--calib", str(calibration_images.root),
                     "--calib-samples", "10", "--method", method, "--no-progress", "-v"]) == 0
        captured = capsys.readouterr()
        assert chatter in captured.err and chatter not in captured.out


def test_exclude_keeps_named_layers_in_float(reference_vit_onnx, calibration_images, tmp_path):
    names = [n.name for n in onnx.load(str(reference_vit_onnx)).graph.node if n.op_type == "Gemm"]
    result = quantize_onnx(reference_vit_onnx, tmp_path / "q.onnx", calibration_images.root, samples=8,
                           exclude=names, progress=False)
    assert result.unquantized.pop(names[0]) == "excluded (--exclude)" and len(result.quantized) == 17
    assert set(result.unquantized.values()) == {SIZE_ONLY_REASON}  # the position-table resample


# ---- bad input: exit 2, a message that names the problem, no output file -------------------------------------

def _quantize(tmp_path, onnx_path, calib, *extra, run="out"):
    out = tmp_path / run / "q.onnx"
    out.parent.mkdir(exist_ok=True)
    code = main(["quantize", str(onnx_path), "-o", str(out), "--calib", str(calib), "--no-progress", *extra])
    return code, out


def _assert_nothing_written(out):
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_a_folder_without_readable_images(reference_vit_onnx, tmp_path, capsys):
    calib = tmp_path / "calib" / "cls"
    calib.mkdir(parents=True)
    (calib / "a.png").write_bytes(b"garbage")
    (calib / "b.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.warns(UserWarning, match="skipped 2 image"):
        code, out = _quantize(tmp_path, reference_vit_onnx, calib.parent)
    assert code == 2 and "no image in" in capsys.readouterr().err
    _assert_nothing_written(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = _quantize(tmp_path, reference_vit_onnx, empty)
    assert code == 2 and "holds no image files" in capsys.readouterr().err
    _assert_nothing_written(out)


def test_fewer_images_than_calib_samples(reference_vit_onnx, calibration_images, tmp_path, capsys):
    code, out = _quantize(tmp_path, reference_vit_onnx, calibration_images.root, "--calib-samples", "41")
    err = capsys.readouterr().err
    assert code == 2 and "--calib-samples 41" in err and "has only 40" in err
    _assert_nothing_written(out)


def test_an_image_that_fails_to_decode_is_skipped_with_a_warning(reference_vit_onnx, calibration_images, tmp_path,
                                                                 capsys):
    import shutil

    calib = tmp_path / "calib"
    shutil.copytree(calibration_images.root, calib)
    broken = sorted(calib.rglob("*.png"))[0]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.warns(UserWarning, match=f"skipped 1 image.*{broken.name}"):
        code, out = _quantize(tmp_path, reference_vit_onnx, calib, "--calib-samples", "12")
    assert code == 0
    assert read_metadata(str(out))["calibration_images"] == "12"  # a replacement took the broken one's place
    assert json.loads(read_metadata(str(out))["calibration"])["skipped"] == 1
    # with every image needed, the broken one leaves too few: an error, no file
    with pytest.warns(UserWarning, match="skipped 1 image"):
        code, out = _quantize(tmp_path, reference_vit_onnx, calib, "--calib-samples", "40", run="second")
    assert code == 2 and "fewer than --calib-samples 40" in capsys.readouterr().err
    _assert_nothing_written(out)


def test_an_already_quantized_file(quantized, calibration_images, tmp_path, capsys):
    code, out = _quantize(tmp_path, quantized[0].output, calibration_images.root)
    assert code == 2 and "already quantized" in capsys.readouterr().err
    _assert_nothing_written(out)


def test_inlining_keeps_the_weights_quantized(quantized):
    """OpenVINO gets a quantized default file inlined (validate/bench --backend openvino): the inlining folds
    only the attention bodies' weight-only arithmetic, never the weights' Q/DQ pairs (folded, they would be
    stored dequantized and OpenVINO would run the layers in float), and computes what the file computes."""
    import copy

    from elfatt_deploy.export.inline import inline_elfatt_functions

    _, model = quantized

    def qdq(m):
        return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)

    inlined = inline_elfatt_functions(copy.deepcopy(model))
    assert qdq(model) > 0 and qdq(inlined) == qdq(model)
    image = np.random.default_rng().standard_normal((2, 3, 112, 112)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(  # noqa: E731
        None, {m.graph.input[0].name: image})[0]
    expected, got = run(model), run(inlined)
    assert float(np.linalg.norm(got - expected) / np.linalg.norm(expected)) < 1e-5


def test_a_plugin_only_file(reference_vit_onnx, calibration_images, tmp_path, capsys):
    model = onnx.load(str(reference_vit_onnx))
    del model.functions[:]
    plugin_only = tmp_path / "plugin_only.onnx"
    onnx.save(model, str(plugin_only))
    code, out = _quantize(tmp_path, plugin_only, calibration_images.root)
    assert code == 2 and "plugin-only" in capsys.readouterr().err
    _assert_nothing_written(out)


def test_an_inlined_file(reference_vit_onnx, calibration_images, tmp_path, capsys):
    from elfatt_deploy.export.inline import inline_elfatt_functions

    inlined = tmp_path / "inlined.onnx"
    onnx.save(inline_elfatt_functions(onnx.load(str(reference_vit_onnx))), str(inlined))
    code, out = _quantize(tmp_path, inlined, calibration_images.root)
    assert code == 2 and "inlined export" in capsys.readouterr().err
    _assert_nothing_written(out)


@pytest.mark.parametrize("args,message", [
    (["--calib-samples", "0"], "--calib-samples 0 must be >= 1"),
    (["--input-shape", "1x3x100"], "--input-shape"),
    (["--input-shape", "1x4x112x112"], "has 4 channels"),
    (["--exclude", "no_such_node"], "no_such_node"),
])
def test_bad_flags(reference_vit_onnx, calibration_images, tmp_path, capsys, args, message):
    code, out = _quantize(tmp_path, reference_vit_onnx, calibration_images.root, *args)
    assert code == 2 and message in capsys.readouterr().err
    _assert_nothing_written(out)


def test_an_unknown_method_is_a_usage_error(reference_vit_onnx, calibration_images, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _quantize(tmp_path, reference_vit_onnx, calibration_images.root, "--method", "mean")
    assert exit_info.value.code == 2 and "invalid choice: 'mean'" in capsys.readouterr().err


def test_output_paths_are_checked_before_calibrating(reference_vit_onnx, calibration_images, tmp_path, capsys):
    code = main(["quantize", str(reference_vit_onnx), "-o", str(tmp_path / "nodir" / "q.onnx"), "--calib",
                 str(calibration_images.root)])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["quantize", str(reference_vit_onnx), "-o", str(tmp_path / "q.txt"), "--calib",
                 str(calibration_images.root)])
    assert code == 2 and "must end in .onnx" in capsys.readouterr().err
    code = main(["quantize", str(reference_vit_onnx), "-o", str(reference_vit_onnx), "--calib",
                 str(calibration_images.root)])
    assert code == 2 and "is the input file" in capsys.readouterr().err


@pytest.mark.parametrize("exclude", [",", " , ,"])
def test_an_exclude_list_that_names_no_node_is_refused(reference_vit_onnx, calibration_images, tmp_path, capsys,
                                                       exclude):
    code = main(["quantize", str(reference_vit_onnx), "-o", str(tmp_path / "q.onnx"), "--calib",
                 str(calibration_images.root), "--exclude", exclude])
    assert code == 2 and f"--exclude {exclude!r} names no node" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists()


@pytest.fixture(scope="module")
def static_batch4_vit(tmp_path_factory):
    """The reference ViT exported with a static batch of 4 (TensorRT-style fixed shape)."""
    from elfatt_deploy.export.exporter import export_onnx
    from elfatt_deploy.export.model_loading import build_model
    from elfatt_deploy.reference_models import checkpoint_path

    model = build_model("elfatt_vit_micro", checkpoint=str(checkpoint_path("elfatt_vit_micro")))
    return export_onnx(model, tmp_path_factory.mktemp("static4") / "vit4.onnx", "4x3x112x112", dynamic=False)


def test_static_batch_with_a_partial_last_batch(static_batch4_vit, tmp_path, capsys):
    """6 images for a file whose batch is fixed at 4: the last batch is filled up (quantize calibrates, validate
    --images compares all 6, not 8); an --input-shape the static input does not take is bad input."""
    from elfatt_deploy.data.image_folder import write_image_folder

    images = write_image_folder(tmp_path / "six", 6, seed=3, size=112)
    code, out = _quantize(tmp_path, static_batch4_vit, images.root, "--calib-samples", "6")
    assert code == 0 and out.is_file(), capsys.readouterr().err[-2000:]
    capsys.readouterr()
    assert main(["validate", str(static_batch4_vit), "--images", str(images.root), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^images\s+6\b", text, re.M), text
    assert main(["validate", str(static_batch4_vit), "--images", str(images.root), "--input-shape",
                 "4x3x64x64"]) == 2
    assert "does not fit the file's static input 4x3x112x112" in capsys.readouterr().err


def test_activations_that_overflow_are_bad_input(reference_vit_onnx, calibration_images, tmp_path, capsys):
    """A weight of 1e38 overflows the activations to inf: ONNX Runtime cannot make a scale of that range; the
    command says so (exit 2) instead of an AssertionError (exit 4), and writes nothing."""
    from onnx import numpy_helper

    model = onnx.load(str(reference_vit_onnx))
    matmul_weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMul"}
    for i, init in enumerate(model.graph.initializer):
        a = numpy_helper.to_array(init)
        if init.name in matmul_weights and a.shape == (96, 384):  # the first MLP layer of the reference ViT
            a = a.copy()
            a[0, 0], a[1, 0] = 1e38, -1e38
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(a, init.name))
            break
    else:
        pytest.fail("no MLP weight found to poison")
    bad = tmp_path / "overflow.onnx"
    onnx.save(model, str(bad))
    code, out = _quantize(tmp_path, bad, calibration_images.root, "--calib-samples", "8")
    err = capsys.readouterr().err
    assert code == 2 and "without a finite INT8 scale" in err, err[-2000:]
    _assert_nothing_written(out)


def test_a_file_onnx_runtime_cannot_load_is_not_written(calibration_images, tmp_path, capsys):
    """A static opset-21 export: ONNX Runtime 1.32's optimizer cannot load its Q/DQ form (output_dtype INT8 vs a
    UINT8 zero point). quantize writes only what ONNX Runtime opens, else says so (exit 2) and writes nothing."""
    from elfatt_deploy.export.exporter import export_onnx
    from elfatt_deploy.export.model_loading import build_model

    model = build_model("elfatt_vit_micro", checkpoint=str(checkpoint_path("elfatt_vit_micro")))
    static21 = export_onnx(model, tmp_path / "s21.onnx", "1x3x112x112", dynamic=False, opset=21)
    code, out = _quantize(tmp_path, static21, calibration_images.root, "--calib-samples", "8")
    err = capsys.readouterr().err
    if code == 0:  # an ONNX Runtime without the optimizer bug: the file must then open
        ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    else:
        assert code == 2 and not out.exists(), err
        assert "cannot load the quantized" in err and "opset 21" in err and "--opset 18" in err, err


def test_a_percentile_without_the_percentile_method_is_refused(reference_vit_onnx, calibration_images, tmp_path, capsys):
    code, out = _quantize(tmp_path, reference_vit_onnx, calibration_images.root, "--percentile", "99")
    assert code == 2 and "--percentile 99.0 applies with --method percentile only" in capsys.readouterr().err
    _assert_nothing_written(out)
