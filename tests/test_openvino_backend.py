"""OpenVINO as a backend: the inlined files in OpenVINO Runtime (CPU) against PyTorch, and the error paths."""

import json
import sys

import numpy as np
import onnx
import pytest

from test_export_helpers import random_image, torch_reference
from _naive_elfatt import rel_l2
from elfatt_deploy import export_onnx
from elfatt_deploy.cli import main
from elfatt_deploy.errors import InputError, MissingDependencyError
from elfatt_deploy.export.model_loading import build_model
from elfatt_deploy.runtime.backends import make_runner

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install -e '.[openvino]'; the test extra "
                                            "has it)")
from elfatt_deploy.runtime.openvino_runner import OpenVinoRunner, resolve_device  # noqa: E402

#: 224x224 is on the window grid (14x14 tokens, 7x7 windows); 200x264 is not (13x17 tokens)
SHAPES = [(1, 3, 224, 224), (2, 3, 200, 264)]
LIMITS = {"fp32": 1e-5, "fp16": 2e-3}


def _run(runner, image):
    (out,) = runner.infer({"image": image}).values()
    return out


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A one-block ViT (validate's default weights, seed 0) in the default and the plugin-only form."""
    model = build_model("elfatt_vit_tiny", config={"depth": 1})
    tmp = tmp_path_factory.mktemp("ov")
    default = export_onnx(model, tmp / "default.onnx", "1x3x64x96")
    plugin_only = export_onnx(model, tmp / "plugin.onnx", "1x3x64x96", plugin_only=True)
    return model, default, plugin_only


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", ["elfatt_vit_tiny", "elfatt_cswin_tiny"])
def test_inlined_full_models_match_pytorch(tmp_path, name, precision, rng):
    """The full ViT-T and CSWin-T, exported with --inline (dynamic), on OpenVINO CPU at two sizes."""
    model = build_model(name)
    path = export_onnx(model, tmp_path / f"{name}.onnx", "1x3x224x224", precision=precision, inline=True)
    with OpenVinoRunner(path, log=pytest.fail) as runner:  # an inlined file needs no inlining in memory
        for shape in SHAPES:
            image = random_image(rng, shape)
            out = _run(runner, image)
            assert out.shape == (shape[0], model.num_classes) and out.dtype == np.float32
            err = rel_l2(out, torch_reference(model, image))
            assert err <= LIMITS[precision], f"{name} {precision} at {shape}: rel L2 {err:.3e}"
        assert set(runner.compile_seconds) == {(s,) for s in SHAPES}  # one compiled model per input shape


def test_default_file_is_inlined_in_memory_and_says_so(tiny_vit, rng):
    model, default, _ = tiny_vit
    notes = []
    with OpenVinoRunner(default, log=notes.append) as runner:
        image = random_image(rng, (2, 3, 72, 104))
        assert rel_l2(_run(runner, image), torch_reference(model, image)) <= 1e-5
        assert runner.info["inlined_in_memory"] is True
    assert len(notes) == 1 and "inlined in memory" in notes[0] and "export --inline" in notes[0]


def test_compile_per_shape_cache_and_dynamic_compile(tiny_vit, rng):
    model, default, _ = tiny_vit
    images = [random_image(rng, s) for s in [(1, 3, 64, 96), (1, 3, 80, 112), (1, 3, 64, 96)]]
    with OpenVinoRunner(default, log=lambda m: None, max_cached_shapes=1) as per_shape, \
            OpenVinoRunner(default, log=lambda m: None, compile_per_shape=False) as dynamic:
        for image in images:
            a, b = _run(per_shape, image), _run(dynamic, image)
            reference = torch_reference(model, image)
            assert rel_l2(a, reference) <= 1e-5 and rel_l2(b, reference) <= 1e-5
        assert len(per_shape._compiled) == 1 and len(per_shape.compile_seconds) == 2  # evicted, then recompiled
        assert list(dynamic.compile_seconds) == [None]
        assert per_shape.info["config"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_inference_precision_hint_is_applied(tiny_vit, rng):
    """On CPUs with bf16 units OpenVINO computes f32 models in bf16 unless told otherwise: f32 must be explicit."""
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        pytest.skip(f"this CPU has no bf16 units (OpenVINO CPU capabilities {capabilities})")
    model, default, _ = tiny_vit
    image = random_image(rng, (1, 3, 64, 96))
    reference = torch_reference(model, image)
    with OpenVinoRunner(default, inference_precision="bf16", log=lambda m: None) as runner:
        assert rel_l2(_run(runner, image), reference) > 1e-4
    with OpenVinoRunner(default, inference_precision="f32", log=lambda m: None) as runner:
        assert rel_l2(_run(runner, image), reference) <= 1e-5


def test_plugin_only_file_is_refused_with_what_to_export(tiny_vit):
    _, _, plugin_only = tiny_vit
    with pytest.raises(InputError, match="plugin-only export.*export --inline"):
        with OpenVinoRunner(plugin_only):
            pass


def test_device_errors_list_the_available_devices():
    core = ov.Core()
    available = core.available_devices
    assert resolve_device(core, None) == "CPU" and resolve_device(core, "cpu") == "CPU"
    with pytest.raises(InputError, match="'XPU' is not an OpenVINO device.*reports these devices here: .*CPU"):
        resolve_device(core, "XPU")
    absent = [d for d in ("GPU", "NPU") if not any(a.startswith(d) for a in available)]
    if not absent:
        pytest.skip(f"this machine has every OpenVINO device ({available})")
    with pytest.raises(MissingDependencyError, match=f"device {absent[0]} is not present here.*CPU") as info:
        make_runner("openvino", onnx_path="m.onnx", device=absent[0])
    # OpenVINO is installed: the CLI must not tell the user to install it (only the device is missing)
    assert info.value.extra is None and "pip install" not in str(info.value)


def test_missing_openvino_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install "elfatt-deploy\[openvino\]"') as info:
        make_runner("openvino", onnx_path="m.onnx")
    assert info.value.extra == "openvino"


def test_cli_reports_missing_openvino_as_an_environment_error(tiny_vit, monkeypatch, capsys):
    from elfatt_deploy.errors import EXIT_ENVIRONMENT

    _, default, _ = tiny_vit
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert main(["validate", str(default), "--backend", "openvino", "--samples", "1"]) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert "needs OpenVINO Runtime, which is not installed here" in err and "elfatt-deploy[openvino]" in err


def test_runner_argument_errors(tmp_path):
    with pytest.raises(InputError, match="inference precision 'fp8' is not one of f32, bf16, f16"):
        OpenVinoRunner("m.onnx", inference_precision="fp8")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with OpenVinoRunner(tmp_path / "missing.onnx"):
            pass
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(InputError, match="not a readable ONNX model"):
        with OpenVinoRunner(bad):
            pass


def test_validate_and_bench_cli(tiny_vit, tmp_path, capsys):
    _, default, _ = tiny_vit
    report = tmp_path / "r.json"
    code = main(["validate", str(default), "--backend", "openvino", "--shapes", "1x3x64x96,2x3x72x104",
                 "--samples", "1", "--report", str(report)])
    captured = capsys.readouterr()
    assert code == 0, captured
    assert "on openvino vs PyTorch" in captured.out and "PASS" in captured.out and "tolerance 1.0e-05" in captured.out
    assert "inlined in memory" in captured.err
    data = json.loads(report.read_text())
    assert data["settings"]["backend"] == "openvino" and data["settings"]["openvino"]["device"] == "CPU"
    assert all(r["rel_l2_error"] <= 1e-5 for r in data["rows"]) and len(data["rows"]) == 2
    # other weights must fail: the comparison can fail
    assert main(["validate", str(default), "--backend", "openvino", "--shapes", "1x3x64x96", "--samples", "1",
                 "--weight-seed", "3"]) == 1
    out = tmp_path / "bench.json"
    assert main(["bench", "--backend", "openvino", "--onnx", str(default), "--input-shape", "1x3x64x96",
                 "--iterations", "3", "--warmup", "1", "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "openvino" and result["latency"]["iterations"] == 3
    info = result["backend_info"]
    assert info["device"] == "CPU" and info["config"]["INFERENCE_PRECISION_HINT"] == "f32" and info["compile_s"] > 0


@pytest.mark.parametrize("argv, message", [
    (["validate", "{default}", "--backend", "openvino", "--device", "XPU"], "'XPU' is not an OpenVINO device"),
    (["validate", "{default}", "--device", "CPU"], "--device CPU is for --backend openvino"),
    (["validate", "--backend", "openvino"], "give the .onnx file"),
    (["validate", "{plugin}", "--backend", "openvino", "--shapes", "1x3x64x64", "--samples", "1"],
     "plugin-only export"),
    (["bench", "--backend", "openvino", "--input-shape", "1x3x64x64"], "needs --onnx"),
    (["bench", "--backend", "openvino", "--onnx", "missing.onnx", "--input-shape", "1x3x64x64"], "does not exist"),
    (["bench", "--backend", "openvino", "--onnx", "{default}", "--input-shape", "1x3x64x64", "--device", "XPU"],
     "'XPU' is not an OpenVINO device"),
])
def test_cli_errors(tiny_vit, tmp_path, monkeypatch, capsys, argv, message):
    _, default, plugin_only = tiny_vit
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{default}", str(default)).replace("{plugin}", str(plugin_only)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_doctor_reports_openvino_and_its_devices(tmp_path, capsys, monkeypatch):
    report = tmp_path / "d.json"
    assert main(["doctor", "--backend", "openvino", "--json", str(report)]) == 0
    checks = {c["component"]: c for c in json.loads(report.read_text())["checks"]}
    assert checks["OpenVINO"]["status"] == "ok" and "devices: " in checks["OpenVINO"]["detail"]
    assert "CPU" in checks["OpenVINO"]["detail"] and "backend openvino: ready" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "openvino", None)
    from elfatt_deploy.errors import EXIT_ENVIRONMENT

    assert main(["doctor", "--backend", "openvino"]) == EXIT_ENVIRONMENT
    out = capsys.readouterr().out
    assert "backend openvino: NOT ready; missing: OpenVINO" in out and "elfatt-deploy[openvino]" in out
