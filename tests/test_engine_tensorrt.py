"""Real engines: build a tiny model with and without the plugin, run it, compare with ONNX Runtime.

Needs TensorRT, a CUDA GPU, the plugin library (docker/Dockerfile builds all three) and
`elfatt-deploy export`; skipped elsewhere with the reason.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (run in docker/Dockerfile or on a Jetson)")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU visible", allow_module_level=True)

from elfatt_deploy.cli import main  # noqa: E402
from elfatt_deploy.engine.engine_file import read_engine_file, write_engine_file  # noqa: E402
from elfatt_deploy.engine.plugin import find_plugin_library  # noqa: E402
from elfatt_deploy.runtime.tensorrt_runner import TrtRunner  # noqa: E402

SHAPE = (1, 3, 64, 96)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    rc = main(["export", "--model", "elfatt_vit_tiny", "--input-shape", "x".join(map(str, SHAPE)), "--dynamic", "-o", str(path)])
    if rc != 0 or not path.is_file():
        pytest.skip("`elfatt-deploy export` is not available or failed")
    return path


@pytest.fixture(scope="module")
def plugin_path():
    try:
        return find_plugin_library()
    except FileNotFoundError as exc:
        pytest.skip(f"plugin library not built: {exc}")


def _ort(onnx_path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("use_plugin", [True, False], ids=["plugin", "no-plugin"])
def test_build_and_run(tmp_path, onnx_file, plugin_path, use_plugin, rng):
    engine = tmp_path / "tiny.engine"
    argv = ["build", str(onnx_file), "-o", str(engine), "--shapes", "min:1x3x32x32,opt:1x3x64x96,max:2x3x128x128",
            "--no-progress"]
    argv += ["--plugin", str(plugin_path)] if use_plugin else ["--no-plugin"]
    assert main(argv) == 0
    meta, plan = read_engine_file(engine)
    assert meta["tensorrt_version"] == trt.__version__ and meta["plugin"]["used"] == use_plugin and plan
    assert meta["gpu"]["compute_capability"] == "{}.{}".format(*torch.cuda.get_device_capability())
    x = rng.standard_normal(SHAPE).astype(np.float32)
    with TrtRunner(engine, plugin=plugin_path) as runner:
        got = runner.infer({runner.input_names[0]: x})
        y = next(iter(got.values()))
        ref = _ort(onnx_file, x)
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-3)
        out = runner.run({runner.input_names[0]: torch.from_numpy(x).cuda()})
        assert next(iter(out.values())).is_cuda
        with pytest.raises(ValueError, match="outside the engine's optimization profile"):
            runner.run({runner.input_names[0]: torch.zeros(3, 3, 64, 64, device="cuda")})


def test_cuda_graph_replay_matches(tmp_path, onnx_file, plugin_path, rng):
    engine = tmp_path / "static.engine"
    assert main(["build", str(onnx_file), "-o", str(engine), "--shapes", "x".join(map(str, SHAPE)),
                 "--plugin", str(plugin_path), "--no-progress"]) == 0
    with TrtRunner(engine, plugin=plugin_path) as plain, TrtRunner(engine, plugin=plugin_path, cuda_graph=True) as graph:
        name = plain.input_names[0]
        for _ in range(3):
            x = torch.from_numpy(rng.standard_normal(SHAPE).astype(np.float32)).cuda()
            a = next(iter(plain.run({name: x}).values()))
            b = next(iter(graph.run({name: x}).values()))
            torch.testing.assert_close(a, b)


def test_mismatched_engine_refused(tmp_path, onnx_file, plugin_path):
    engine = tmp_path / "m.engine"
    assert main(["build", str(onnx_file), "-o", str(engine), "--shapes", "x".join(map(str, SHAPE)), "--no-plugin", "--no-progress"]) == 0
    meta, plan = read_engine_file(engine)
    meta["tensorrt_version"] = "9.0.0"
    write_engine_file(engine, meta, plan)
    with pytest.raises(ValueError, match="TensorRT 9.0.0.*elfatt-deploy build"):
        TrtRunner(engine).activate()


def test_plugin_loads_in_a_fresh_process(plugin_path):
    code = ("import tensorrt as trt; from elfatt_deploy.engine.plugin import load_plugin, find_creator; "
            f"import json; print(json.dumps(load_plugin({str(plugin_path)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["how"] == "registry.load_library"
