import json

import pytest

from elfatt_deploy.cli import main


@pytest.mark.parametrize("argv, match", [
    (["--backend", "torch", "--input-shape", "1x3x32x32"], "needs --model"),
    (["--backend", "onnxruntime", "--input-shape", "1x3x32x32"], "needs --onnx"),
    (["--backend", "tensorrt", "--input-shape", "1x3x32x32"], "needs --engine"),
    (["--backend", "tensorrt", "--engine", "missing.engine", "--input-shape", "1x3x32x32"], "missing.engine does not exist"),
    (["--backend", "torch", "--model", "elfatt_vit_tiny", "--input-shape", "1x4x32x32"], "4 channels"),
    (["--backend", "torch", "--model", "elfatt_vit_tiny", "--input-shape", "1x3x32x32", "--iterations", "0"], "--iterations 0"),
    (["--backend", "torch", "--model", "elfatt_vit_tiny", "--input-shape", "1x3x32x32", "--warmup", "-2"], "--warmup -2"),
    (["--backend", "torch", "--model", "elfatt_vit_tiny", "--input-shape", "1x3x32x32", "--json", "/no/such/dir/x.json"], "/no/such/dir"),
    (["--backend", "torch", "--model", "no_such_model", "--input-shape", "1x3x32x32"], "no_such_model"),
    (["--backend", "torch", "--model", "elfatt_vit_tiny", "--input-shape", "1x3x32x32", "--iterations",
      "999999999999999999999"], "--iterations 999999999999999999999 is more than 10,000,000 runs"),
    (["--backend", "torch", "--model", "elfatt_vit_tiny", "--input-shape", "1x3x32x32", "--warmup", "10000001"],
     "--warmup 10000001 is more than"),
])
def test_bench_argument_errors(capsys, argv, match):
    assert main(["bench", *argv]) == 2
    assert match in capsys.readouterr().err


def test_bench_tensorrt_without_tensorrt_is_a_clean_error(tmp_path, capsys, without_tensorrt):
    from elfatt_deploy.engine.engine_file import write_engine_file

    engine = write_engine_file(tmp_path / "m.engine", {"tensorrt_version": "10.3.0", "plugin": {"used": False}}, b"plan")
    assert main(["bench", "--backend", "tensorrt", "--engine", str(engine), "--input-shape", "1x3x32x32"]) == 3
    assert "TensorRT, which is not installed" in capsys.readouterr().err


def test_bench_torch_backend(tmp_path, capsys, rng):
    iterations = int(rng.integers(3, 6))
    out = tmp_path / "bench.json"
    assert main(["bench", "--backend", "torch", "--model", "elfatt_vit_tiny", "--input-shape", "2x3x32x48",
                 "--iterations", str(iterations), "--warmup", "1", "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    lat = result["latency"]
    assert result["backend"] == "torch" and result["input_shape"] == [2, 3, 32, 48]
    assert lat["iterations"] == iterations and lat["batch"] == 2
    assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["throughput_per_s"] == pytest.approx(2e3 / lat["mean_ms"])
    assert f"{lat['p50_ms']:.3f}" in printed and "elfatt_vit_tiny" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def test_bench_onnxruntime_backend(tmp_path, capsys):
    pytest.importorskip("elfatt_deploy.runtime.backends", reason="engineer C's make_runner has not landed")
    pytest.importorskip("elfatt_deploy.export.exporter", reason="engineer C's exporter has not landed")
    import elfatt_deploy as ed

    onnx_path = tmp_path / "tiny.onnx"
    ed.export_onnx(ed.create_model("elfatt_vit_tiny", depth=1).eval(), str(onnx_path), input_shape=(1, 3, 32, 32))
    out = tmp_path / "ort.json"
    assert main(["bench", "--backend", "onnxruntime", "--onnx", str(onnx_path), "--input-shape", "1x3x32x32",
                 "--iterations", "3", "--warmup", "1", "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "onnxruntime" and result["latency"]["iterations"] == 3 and result["latency"]["p50_ms"] > 0
    assert result["model"] == "elfatt_vit_tiny"  # the file's own name labels the results
    capsys.readouterr()
    assert main(["bench", "--backend", "onnxruntime", "--onnx", str(onnx_path), "--input-shape", "1x3x32x32",
                 "--model", "elfatt_cswin_tiny", "--iterations", "1", "--no-progress"]) == 2
    assert (f"--model elfatt_cswin_tiny labels the results, but {onnx_path} is an export of elfatt_vit_tiny"
            in capsys.readouterr().err)


def test_bench_refuses_a_model_label_other_than_the_engines(tmp_path, capsys, without_tensorrt):
    """The engine's sidecar names its model (read without the plan): another --model is refused before TensorRT
    is looked for."""
    import numpy as np
    from _serving_fixtures import fake_engine

    engine, _ = fake_engine(tmp_path / "m.engine", np.random.default_rng())  # an export of elfatt_vit_tiny
    assert main(["bench", "--backend", "tensorrt", "--engine", str(engine), "--input-shape", "1x3x224x224",
                 "--model", "elfatt_cswin_tiny"]) == 2
    assert f"but {engine} is an export of elfatt_vit_tiny" in capsys.readouterr().err
    assert main(["bench", "--backend", "tensorrt", "--engine", str(engine), "--input-shape", "1x3x224x224",
                 "--model", "elfatt_vit_tiny"]) == 3  # the right name: on to the TensorRT check
