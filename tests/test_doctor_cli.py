import json

import pytest

from elfatt_deploy.cli import main
from elfatt_deploy.engine.archs import arch_verdict, parse_cuobjdump_list


def _have(module):
    try:
        __import__(module)
        return True
    except Exception:
        return False


def test_doctor_reports_this_machine(tmp_path, capsys):
    import onnxruntime
    import torch

    report_path = tmp_path / "doctor.json"
    rc = main(["doctor", "--backend", "onnxruntime", "--json", str(report_path)])
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert rc == 0 and report["ready"] and "backend onnxruntime: ready" in out
    checks = {c["component"]: c for c in report["checks"]}
    assert torch.__version__ in checks["PyTorch"]["detail"]
    assert onnxruntime.__version__ in checks["ONNX Runtime"]["detail"]
    assert "CPUExecutionProvider" in checks["ONNX Runtime"]["detail"]
    if not _have("tensorrt"):
        assert checks["TensorRT"]["status"] == "missing" and "not installed" in checks["TensorRT"]["detail"]


def test_doctor_tensorrt_exit_code_follows_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ELFATT_PLUGIN_PATH", str(tmp_path / "nowhere.so"))
    rc = main(["doctor", "--backend", "tensorrt", "--json", str(tmp_path / "d.json")])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "d.json").read_text())
    assert "plugin" in report["missing"] and rc == 3  # the plugin cannot be found at that path: environment
    assert str(tmp_path / "nowhere.so") in out  # every path tried is printed
    if not _have("tensorrt"):
        assert "TensorRT" in report["missing"] and "NOT ready" in out


def test_doctor_plugin_found_but_not_loadable(tmp_path, capsys):
    if _have("tensorrt"):
        pytest.skip("TensorRT installed: a real load is tested in test_engine_tensorrt.py")
    fake = tmp_path / "libelfatt_trt_plugin.so"
    fake.write_bytes(b"\x7fELF")
    rc = main(["doctor", "--plugin", str(fake)])  # --plugin asks about the tensorrt backend
    out = capsys.readouterr().out
    assert rc == 3 and f"found {fake} (not a readable ELF shared library" in out and "TensorRT is not installed" in out
    assert "no libelfatt_trt_plugin_vc.so beside" in out  # doctor knows both builds
    (tmp_path / "libelfatt_trt_plugin_vc.so").write_bytes(b"\x7fELF")
    main(["doctor", "--plugin", str(fake), "--json", str(tmp_path / "d.json")])
    checks = {c["component"]: c for c in json.loads((tmp_path / "d.json").read_text())["checks"]}
    other = checks["plugin (other build)"]
    assert str(tmp_path / "libelfatt_trt_plugin_vc.so") in other.get("more", other["detail"])


def test_doctor_checks_an_engine(tmp_path, capsys, rng):
    from elfatt_deploy.engine.engine_file import write_engine_file

    plain = tmp_path / "trtexec.plan"
    plain.write_bytes(rng.integers(0, 256, 100, dtype="uint8").tobytes())
    main(["doctor", "--backend", "onnxruntime", "--engine", str(plain), "--json", str(tmp_path / "a.json")])
    checks = {c["component"]: c for c in json.loads((tmp_path / "a.json").read_text())["checks"]}
    full = lambda row: row.get("more", row["detail"])  # noqa: E731  (long details are printed below the table)
    assert checks["engine"]["status"] == "warn" and "without a sidecar" in full(checks["engine"])
    built = write_engine_file(tmp_path / "m.engine", {"tensorrt_version": "10.3.0", "precision": "fp16",
                                                      "gpu": {"name": "Orin", "compute_capability": "8.7"},
                                                      "plugin": {"used": True, "version": "1"}}, b"plan")
    rc = main(["doctor", "--backend", "tensorrt", "--engine", str(built), "--json", str(tmp_path / "b.json")])
    report = json.loads((tmp_path / "b.json").read_text())
    checks = {c["component"]: c for c in report["checks"]}
    assert "with sidecar m.engine.json (plan hash matches)" in full(checks["engine"])
    assert "built with TensorRT 10.3.0 for Orin (sm_87), precision fp16" in full(checks["engine compat"])
    if not _have("tensorrt"):  # cannot run here: the engine's requirements are reported, and the exit code says so
        assert checks["engine compat"]["status"] == "missing" and rc == 3 and "engine compat" in report["missing"]


def test_doctor_with_a_missing_engine_is_bad_input(tmp_path, capsys):
    """A file argument that is not there: exit 2 with the path, and no report written."""
    rc = main(["doctor", "--engine", str(tmp_path / "missing.engine"), "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.engine" in err and "does not exist" in err, err
    assert not (tmp_path / "r.json").exists()


def test_doctor_refuses_an_engine_that_is_another_kind_of_file(tmp_path, capsys):
    """An ONNX file passed as --engine is bad input (exit 2) that says what the file is, not a plan 'without a
    sidecar' (the row it got before)."""
    from elfatt_deploy.export.op_model import single_op_model
    from elfatt_deploy.op.spec import ElfattAttrs

    path = tmp_path / "model.onnx"
    path.write_bytes(single_op_model(ElfattAttrs(global_heads=1, local_heads=1, window_h=3, window_w=3), 8).SerializeToString())
    rc = main(["doctor", "--engine", str(path), "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "is an ONNX model, not a TensorRT plan" in err and f"elfatt-deploy build {path}" in err, err
    assert not (tmp_path / "r.json").exists()


def test_cuobjdump_parsing_and_verdict():
    text = "ELF file    1: libelfatt_trt_plugin.1.sm_80.cubin\nELF file    2: libelfatt_trt_plugin.2.sm_87.cubin\n"
    assert parse_cuobjdump_list(text) == {80, 87}
    assert parse_cuobjdump_list("PTX file    1: x.1.sm_90a.ptx") == {90}
    assert arch_verdict({87}, set(), "8.7")[0]
    ok, msg = arch_verdict({80}, set(), "8.6")
    assert ok and "sm_80 SASS on sm_86" in msg
    assert not arch_verdict({87}, set(), "8.6")[0]  # SASS is not backward compatible
    ok, msg = arch_verdict({80, 86}, {90}, "12.0")
    assert ok and "JIT" in msg
    ok, msg = arch_verdict({80, 86}, set(), "9.0")
    assert not ok and "-DCMAKE_CUDA_ARCHITECTURES=90" in msg


@pytest.mark.parametrize("without_vnni", [True, False])
def test_doctor_says_whether_cpu_int8_saturates(tmp_path, capsys, monkeypatch, without_vnni):
    """On an x86 CPU without VNNI the CPU row warns about int8 on the CPU backends and names --reduce-range;
    the warning does not make a backend unready."""
    from elfatt_deploy.validation import tolerances

    monkeypatch.setattr(tolerances, "x86_without_vnni", lambda *a, **k: without_vnni)
    rc = main(["doctor", "--backend", "onnxruntime", "--json", str(tmp_path / "d.json")])
    capsys.readouterr()
    report = json.loads((tmp_path / "d.json").read_text())
    cpu = next(c for c in report["checks"] if c["component"] == "CPU")
    assert rc == 0 and report["ready"]
    if without_vnni:
        assert cpu["status"] == "warn" and "--reduce-range" in cpu.get("more", cpu["detail"])
        assert "VNNI" in cpu["detail"]
    else:
        assert cpu["status"] == "ok" and "VNNI" not in cpu["detail"]


def test_cpu_model_reads_proc_cpuinfo(tmp_path):
    from elfatt_deploy.validation import tolerances

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Example CPU @ 2.80GHz\nflags\t\t: fpu sse2 avx2\n")
    assert tolerances.cpu_model(str(info)) == "Example CPU @ 2.80GHz"
    assert tolerances.x86_without_vnni(str(info), machine="x86_64") is True
    info.write_text("model name\t: Other\nflags\t\t: avx2 avx512_vnni\n")
    assert tolerances.x86_without_vnni(str(info), machine="x86_64") is False
    assert tolerances.cpu_model(str(tmp_path / "missing")) is None


def test_json_dash_writes_the_report_alone_on_stdout(tmp_path, capsys, monkeypatch):
    """`doctor --json - | jq`: stdout is the JSON alone (the table goes to stderr), and no file named '-'."""
    monkeypatch.chdir(tmp_path)
    rc = main(["doctor", "--backend", "onnxruntime", "--json", "-"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert rc == 0 and report["backend"] == "onnxruntime" and report["ready"]
    assert "backend onnxruntime: ready" in captured.err and not (tmp_path / "-").exists()
