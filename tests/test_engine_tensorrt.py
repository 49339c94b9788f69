"""Real engines: build a tiny model with and without the plugin, run it, compare with ONNX Runtime; the
raw plan loads in Polygraphy and trtexec, and without its sidecar.

Needs TensorRT, a CUDA GPU, the plugin library (docker/Dockerfile builds all three) and
`elfatt-deploy export`; skipped elsewhere with the reason.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (run in docker/Dockerfile or on a Jetson)")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU visible", allow_module_level=True)

from elfatt_deploy.cli import main  # noqa: E402
from elfatt_deploy.engine.engine_file import load_engine, read_engine_file, sidecar_path, write_engine_file  # noqa: E402
from elfatt_deploy.engine.plugin import find_plugin_library, load_plugin  # noqa: E402
from elfatt_deploy.engine.tools import find_trtexec  # noqa: E402
from elfatt_deploy.runtime.tensorrt_runner import TrtRunner  # noqa: E402
from elfatt_deploy.validation.tolerances import TENSORRT_TF32_RTOL_L2, default_rtol_l2  # noqa: E402

SHAPE = (1, 3, 64, 96)
#: An fp32 engine built without TF32 (the default) against ONNX Runtime's fp32: validate's limit.
STRICT_RTOL_L2 = default_rtol_l2("tensorrt", "fp32")


def assert_close_l2(got, ref, limit=STRICT_RTOL_L2):
    """Relative L2 error of an engine's output (element-wise limits are the wrong measure for logits)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape
    err = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    assert err <= limit, f"relative L2 error {err:.3e} > {limit:.1e}"


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


def _build_in_fresh_process(argv):
    proc = subprocess.run([sys.executable, "-m", "elfatt_deploy", *argv], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("use_plugin", [True, False], ids=["plugin", "no-plugin"])
def test_build_and_run(tmp_path, onnx_file, plugin_path, use_plugin, rng):
    engine = tmp_path / "tiny.engine"
    argv = ["build", str(onnx_file), "-o", str(engine), "--shapes", "min:1x3x32x32,opt:1x3x64x96,max:2x3x128x128",
            "--no-progress"]
    if use_plugin:
        assert main(argv + ["--plugin", str(plugin_path)]) == 0
    else:  # a fresh process: no plugin registered by an earlier test can leak into the engine
        _build_in_fresh_process(argv + ["--no-plugin"])
    meta, plan = read_engine_file(engine)
    assert engine.read_bytes() == plan and sidecar_path(engine).is_file()
    assert meta["tensorrt_version"] == trt.__version__ and meta["plugin"]["used"] == use_plugin and plan
    assert meta["gpu"]["compute_capability"] == "{}.{}".format(*torch.cuda.get_device_capability())
    x = rng.standard_normal(SHAPE).astype(np.float32)
    with TrtRunner(engine, plugin=plugin_path) as runner:
        got = runner.infer({runner.input_names[0]: x})
        y = next(iter(got.values()))
        ref = _ort(onnx_file, x)
        assert y.shape == ref.shape and meta["tf32"] is False
        assert_close_l2(y, ref)
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
    code = ("import tensorrt as trt; from elfatt_deploy.engine.plugin import load_plugin; "
            "import json, sys; print(json.dumps(load_plugin(sys.argv[1])))")
    vc = plugin_path.with_name("libelfatt_trt_plugin_vc.so")
    for lib, how in ((plugin_path, "ctypes.CDLL (static registration)"), (vc, "registry.load_library (getCreators)")):
        if not lib.is_file():
            continue
        proc = subprocess.run([sys.executable, "-c", code, str(lib)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.strip().splitlines()[-1])["how"] == how


RUN_ENGINE = """
import sys, numpy as np
from elfatt_deploy.runtime.tensorrt_runner import TrtRunner
with TrtRunner(sys.argv[1]) as r:
    x = np.load(sys.argv[2])
    np.save(sys.argv[3], next(iter(r.infer({r.input_names[0]: x}).values())))
"""


def test_no_plugin_engine_runs_where_no_plugin_is_loaded(tmp_path, onnx_file, plugin_path, rng):
    """The review's bug: a --no-plugin build in a process that has loaded the plugin must not contain it."""
    load_plugin(plugin_path)
    engine = tmp_path / "np.engine"
    assert main(["build", str(onnx_file), "-o", str(engine), "--shapes", "x".join(map(str, SHAPE)), "--no-plugin",
                 "--no-progress"]) == 0
    assert load_engine(engine).metadata["plugin"] == {"used": False}
    x = rng.standard_normal(SHAPE).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, ELFATT_PLUGIN_PATH=str(tmp_path / "no-plugin-here.so"))
    proc = subprocess.run([sys.executable, "-c", RUN_ENGINE, str(engine), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_close_l2(np.load(tmp_path / "y.npy"), _ort(onnx_file, x))


def test_raw_plan_loads_in_polygraphy_trtexec_and_without_sidecar(tmp_path, onnx_file, plugin_path, rng):
    engine = tmp_path / "p.engine"
    assert main(["build", str(onnx_file), "-o", str(engine), "--shapes", "x".join(map(str, SHAPE)), "--plugin",
                 str(plugin_path), "--no-progress"]) == 0
    x = rng.standard_normal(SHAPE).astype(np.float32)
    bare = tmp_path / "bare.plan"
    shutil.copy(engine, bare)  # as trtexec --saveEngine / Polygraphy would leave it: no sidecar
    with TrtRunner(engine, plugin=plugin_path) as a, TrtRunner(bare, plugin=plugin_path) as b:
        assert any("no sidecar" in w for w in b.warnings)
        name = a.input_names[0]
        np.testing.assert_array_equal(next(iter(a.infer({name: x}).values())), next(iter(b.infer({name: x}).values())))
    polygraphy = shutil.which("polygraphy")
    if polygraphy:
        proc = subprocess.run([polygraphy, "run", str(engine), "--model-type", "engine", "--trt", "--plugins",
                               str(plugin_path), "--input-shapes", f"{name}:{list(SHAPE)}"], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trtexec = find_trtexec()
    if trtexec:
        proc = subprocess.run([trtexec, f"--loadEngine={engine}", f"--staticPlugins={plugin_path}", "--iterations=2",
                               "--warmUp=0", "--duration=0"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and "PASSED" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_polygraphy_built_plan_runs_in_our_runner(tmp_path, onnx_file, plugin_path, rng):
    """A plan elfatt-deploy did not build (no sidecar) runs in TrtRunner, with the warning."""
    polygraphy = shutil.which("polygraphy")
    if polygraphy is None:
        pytest.skip("polygraphy's CLI is not on PATH")
    plugin_only = tmp_path / "plugin_only.onnx"
    if main(["export", "--model", "elfatt_vit_tiny", "--input-shape", "x".join(map(str, SHAPE)), "--plugin-only",
             "-o", str(plugin_only)]) != 0:
        pytest.skip("`elfatt-deploy export --plugin-only` failed")
    plan = tmp_path / "poly.plan"
    proc = subprocess.run([polygraphy, "convert", str(plugin_only), "--convert-to", "trt", "-o", str(plan),
                           "--plugins", str(plugin_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    x = rng.standard_normal(SHAPE).astype(np.float32)
    with TrtRunner(plan, plugin=plugin_path) as runner:
        assert any("no sidecar" in w for w in runner.warnings)
        got = next(iter(runner.infer({runner.input_names[0]: x}).values()))
    # Polygraphy's convert clears TF32 unless --tf32, like elfatt-deploy build
    assert_close_l2(got, _ort(onnx_file, x))


def test_tf32_engine_is_within_the_tf32_limit(tmp_path, onnx_file, plugin_path, rng):
    """build --tf32 records it in the sidecar; its output stays within TENSORRT_TF32_RTOL_L2, which validate
    applies to it (bench/tf32_emulation_cpu.py measured up to 2.8e-3 by emulation)."""
    engine = tmp_path / "tf32.engine"
    assert main(["build", str(onnx_file), "-o", str(engine), "--shapes", "x".join(map(str, SHAPE)), "--plugin",
                 str(plugin_path), "--tf32", "--no-progress"]) == 0
    meta, _ = read_engine_file(engine)
    assert meta["tf32"] is True and meta["build_command"][-1] == "--tf32"
    x = rng.standard_normal(SHAPE).astype(np.float32)
    with TrtRunner(engine, plugin=plugin_path) as runner:
        got = next(iter(runner.infer({runner.input_names[0]: x}).values()))
    assert_close_l2(got, _ort(onnx_file, x), TENSORRT_TF32_RTOL_L2)
