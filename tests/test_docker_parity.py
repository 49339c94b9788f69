"""docker/parity.sh: its control flow with a stand-in CLI, and its ONNX Runtime mode for real."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docker" / "parity.sh"

FAKE = r'''#!/usr/bin/env python3
# stand-in for `elfatt-deploy`: export/build write their -o file, bench its --json; validate fails
# for the models listed in $FAIL_VALIDATE; every call is logged to $CALLS.
import json, os, sys
cmd, args = sys.argv[1], sys.argv[2:]
open(os.environ["CALLS"], "a").write(" ".join(sys.argv[1:]) + "\n")
def opt(name):
    return args[args.index(name) + 1] if name in args else None
if cmd in ("export", "build", "quantize"):
    open(opt("-o"), "w").write("x")
elif cmd == "validate":
    if opt("--model") in os.environ.get("FAIL_VALIDATE", "").split(","):
        print("parity FAILED: max abs error 0.5 > 1e-3"); sys.exit(1)
elif cmd == "bench":
    p50 = 4.0 if "no-plugin" in (opt("--engine") or "") else 2.0
    json.dump({"latency": {"p50_ms": p50, "throughput_per_s": 1000 / p50}}, open(opt("--json"), "w"))
'''


def _run(tmp_path, *args, timeout=120, **env):
    fake = tmp_path / "fake-deploy"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    full_env = dict(os.environ, ELFATT_DEPLOY_CMD=f"{sys.executable} {fake}", CALLS=str(tmp_path / "calls.txt"),
                    PYTHON=sys.executable, **env)
    return subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "out"), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def test_tensorrt_flow_with_control_and_speedup(tmp_path):
    proc = _run(tmp_path, "--backend", "tensorrt", "--models", "m1,m2", "--precisions", "fp32,fp16", "--plugin", "/p.so")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert sum(c.startswith("export") for c in calls) == 4
    builds = [c for c in calls if c.startswith("build")]
    assert len(builds) == 8 and sum("--no-plugin" in c for c in builds) == 4
    assert all("--plugin /p.so" in c for c in builds if "--no-plugin" not in c)
    report = json.loads((tmp_path / "out" / "parity-report.json").read_text())
    assert report["ok"] and report["backend"] == "tensorrt"
    plugin_rows = [r for r in report["rows"] if r["variant"] == "plugin"]
    assert len(plugin_rows) == 4 and all(r["speedup_vs_no_plugin"] == pytest.approx(2.0) for r in plugin_rows)
    assert "2.00x" in proc.stdout


def test_parity_failure_exits_nonzero(tmp_path):
    proc = _run(tmp_path, "--backend", "onnxruntime", "--models", "good,bad", FAIL_VALIDATE="bad")
    assert proc.returncode == 1
    report = json.loads((tmp_path / "out" / "parity-report.json").read_text())
    parity = {(r["model"], r["variant"]): r["parity"] for r in report["rows"] if r["variant"] == "onnxruntime"}
    assert parity == {("good", "onnxruntime"): "pass", ("bad", "onnxruntime"): "FAIL"} and not report["ok"]
    assert "FAIL" in proc.stdout and "failed" in proc.stderr


def test_bad_arguments(tmp_path):
    assert _run(tmp_path, "--backend", "tpu").returncode == 2
    assert _run(tmp_path, "--iterations", "ten").returncode == 2
    assert "unknown argument" in _run(tmp_path, "--frobnicate").stderr
    # a value missing at the end, or an option where the value should be: usage errors (2), as documented
    for args in (("--backend",), ("--models", "--quick")):
        proc = _run(tmp_path, *args)
        assert proc.returncode == 2 and "needs a value" in proc.stderr, (args, proc.stderr)
    proc = _run(tmp_path, "--iterations", "0")  # bench needs at least one timed run
    assert proc.returncode == 2 and "positive integer" in proc.stderr
    assert not (tmp_path / "calls.txt").exists()


def test_quick_keeps_explicit_flags(tmp_path):
    """--quick sets a small shape and few iterations only where the flags were not given."""
    proc = _run(tmp_path, "--backend", "onnxruntime", "--models", "m1", "--quick", "--input-shape", "1x3x112x112",
                "--iterations", "7")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    benches = [c for c in (tmp_path / "calls.txt").read_text().splitlines() if c.startswith("bench")]
    assert benches and all("--input-shape 1x3x112x112" in c and "--iterations 7" in c and "--warmup 1" in c
                           for c in benches), benches


@pytest.mark.parametrize("given, exported", [((), {"fp32"}), (("--precisions", "fp32,fp16"), {"fp32", "fp16"})])
def test_quick_runs_fp32_only_unless_precisions_are_given(tmp_path, given, exported):
    """docker/README.md: --quick uses fp32 only where --precisions is not given (also when it names the default)."""
    proc = _run(tmp_path, "--backend", "onnxruntime", "--models", "m1", "--quick", *given)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exports = [c for c in (tmp_path / "calls.txt").read_text().splitlines() if c.startswith("export")]
    assert {p for p in ("fp32", "fp16") if any(f"--precision {p}" in c for c in exports)} == exported, exports


def _old_torch(tmp_path):
    """A PYTHONPATH whose `torch` is JetPack 6's NVIDIA wheel version (too old for the exporter)."""
    fake = tmp_path / "oldtorch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "2.5.0a0+872d972e41.nv24.08"\n')
    return str(fake.parent)


def test_export_only_then_onnx_dir(tmp_path):
    onnx_dir = tmp_path / "onnx"
    proc = _run(tmp_path, "--export-only", "--models", "m1,m2", "--precisions", "fp32,fp16", "--out", f"{onnx_dir}//")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "//" not in proc.stdout, proc.stdout  # the directory as given (docs/deploy.md writes onnx/), no doubled /
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 4 and all(c.startswith("export") for c in calls)
    assert sorted(p.name for p in onnx_dir.glob("*.onnx")) == ["m1-fp16.onnx", "m1-fp32.onnx", "m2-fp16.onnx", "m2-fp32.onnx"]
    assert json.loads((onnx_dir / "parity-report.json").read_text())["backend"] == "export-only"
    assert "--onnx-dir" in proc.stdout

    # on the device: an old torch, no export step; engines are built from the copied files
    (tmp_path / "calls.txt").unlink()
    proc = _run(tmp_path, "--backend", "tensorrt", "--onnx-dir", f"{onnx_dir}/", "--models", "m1,m2",
                "--precisions", "fp16", PYTHONPATH=_old_torch(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert not any(c.startswith("export") for c in calls)
    builds = [c for c in calls if c.startswith("build")]
    assert len(builds) == 4 and all(f"build {onnx_dir}/m" in c and "-fp16.onnx" in c for c in builds)
    assert all(str(onnx_dir) in c for c in calls if c.startswith("validate"))
    assert json.loads((tmp_path / "out" / "parity-report.json").read_text())["ok"]


def test_onnx_dir_missing_file_fails_that_model_only(tmp_path):
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / "m1-fp32.onnx").write_text("x")
    proc = _run(tmp_path, "--backend", "onnxruntime", "--onnx-dir", str(onnx_dir), "--models", "m1,m2", "--precisions", "fp32")
    assert proc.returncode == 1 and "missing" in proc.stdout and "m2-fp32.onnx" in proc.stdout
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["validate", "bench"] and "m1-fp32.onnx" in calls[0]
    report = json.loads((tmp_path / "out" / "parity-report.json").read_text())
    steps = {(r["model"], r["variant"]): r["steps"] for r in report["rows"]}
    assert steps[("m1", "onnx")] == {"onnx-file": 0} and steps[("m2", "onnx")] == {"onnx-file": 1}
    assert not report["ok"]


def test_old_torch_without_onnx_dir_is_refused_with_the_way_out(tmp_path):
    proc = _run(tmp_path, "--backend", "onnxruntime", "--models", "m1", PYTHONPATH=_old_torch(tmp_path))
    assert proc.returncode == 2 and not (tmp_path / "calls.txt").exists()
    assert "torch >= 2.6" in proc.stderr and "2.5.0a0" in proc.stderr and "--export-only" in proc.stderr
    assert "--onnx-dir" in proc.stderr
    proc = _run(tmp_path, "--export-only", "--onnx-dir", str(tmp_path))
    assert proc.returncode == 2 and "give one of them" in proc.stderr
    proc = _run(tmp_path, "--onnx-dir", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "not a directory" in proc.stderr


def test_min_torch_matches_the_exporter():
    from elfatt_deploy.export.exporter import MIN_TORCH_FOR_EXPORT

    assert f'min_torch="{".".join(map(str, MIN_TORCH_FOR_EXPORT))}"' in SCRIPT.read_text()


def test_onnxruntime_mode_for_real_across_machines(tmp_path):
    """The Jetson flow in ONNX Runtime mode: --export-only writes the files, --onnx-dir validates and benches them."""
    from elfatt_deploy.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    missing = [c for c in ("export", "validate") if c not in commands]
    if missing:
        pytest.skip(f"engineer C's commands have not landed: {', '.join(missing)}")
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("ELFATT_DEPLOY_CMD", None)
    common = ["--models", "elfatt_vit_tiny", "--quick"]
    proc = subprocess.run(["bash", str(SCRIPT), "--export-only", *common, "--out", str(tmp_path / "onnx")],
                          capture_output=True, text=True, env=env, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "onnx").glob("*.onnx")] == ["elfatt_vit_tiny-fp32.onnx"]
    proc = subprocess.run(["bash", str(SCRIPT), "--backend", "onnxruntime", "--onnx-dir", str(tmp_path / "onnx"), *common,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "parity-report.json").read_text())
    [row] = [r for r in report["rows"] if r["variant"] == "onnxruntime"]
    assert row["parity"] == "pass" and row["p50_ms"] > 0 and row["steps"] == {"validate": 0, "bench": 0}
    assert not list((tmp_path / "out").glob("*.onnx"))  # nothing exported on the "device"


def test_trtexec_loads_each_engine(tmp_path):
    """With trtexec found ($TRTEXEC here), every built engine is loaded with --loadEngine; the plugin engine with
    --staticPlugins; a plan trtexec cannot load fails the suite."""
    trtexec = tmp_path / "trtexec"
    trtexec.write_text('#!/bin/sh\necho "trtexec $*" >> "$CALLS"\ncase "$*" in *m2.fp32.plugin*) exit 1;; esac\n'
                       'echo "&&&& PASSED"\n')
    trtexec.chmod(0o755)
    proc = _run(tmp_path, "--backend", "tensorrt", "--models", "m1", "--precisions", "fp32", "--plugin", "/p.so",
                TRTEXEC=str(trtexec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [c for c in (tmp_path / "calls.txt").read_text().splitlines() if c.startswith("trtexec")]
    assert len(runs) == 2 and all("--loadEngine=" in r for r in runs)
    assert [("--staticPlugins=/p.so" in r) for r in runs] == [True, False]  # the no-plugin engine needs none
    report = json.loads((tmp_path / "out" / "parity-report.json").read_text())
    assert all(r["steps"]["trtexec"] == 0 for r in report["rows"] if r["variant"] in ("plugin", "no-plugin"))
    proc = _run(tmp_path, "--backend", "tensorrt", "--models", "m2", "--precisions", "fp32", "--plugin", "/p.so",
                TRTEXEC=str(trtexec))
    assert proc.returncode == 1 and "trtexec" in proc.stdout


@pytest.mark.parametrize("given", ["dir", "vc"])
def test_trtexec_gets_the_static_registration_library(tmp_path, given):
    """--plugin may be the build directory or the getCreators file (docs/deploy.md); trtexec --staticPlugins
    needs the static-registration file, which registers its creator when opened."""
    trtexec = tmp_path / "trtexec"
    trtexec.write_text('#!/bin/sh\necho "trtexec $*" >> "$CALLS"\necho "&&&& PASSED"\n')
    trtexec.chmod(0o755)
    build = tmp_path / "build"
    build.mkdir()
    for name in ("libelfatt_trt_plugin.so", "libelfatt_trt_plugin_vc.so"):
        (build / name).write_bytes(b"\x7fELF")
    plugin = build if given == "dir" else build / "libelfatt_trt_plugin_vc.so"
    proc = _run(tmp_path, "--backend", "tensorrt", "--models", "m1", "--precisions", "fp32", "--plugin", str(plugin),
                TRTEXEC=str(trtexec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [c for c in (tmp_path / "calls.txt").read_text().splitlines() if c.startswith("trtexec")]
    assert any(f"--staticPlugins={build / 'libelfatt_trt_plugin.so'}" in r.split() for r in runs), runs


def test_no_trtexec_skips_the_check(tmp_path):
    proc = _run(tmp_path, "--backend", "tensorrt", "--models", "m1", "--precisions", "fp32",
                TRTEXEC=str(tmp_path / "missing-trtexec"))
    assert proc.returncode == 0 and "trtexec not found" in proc.stdout


def test_int8_flow_quantizes_the_reference_models_and_validates_on_images(tmp_path):
    proc = _run(tmp_path, "--backend", "tensorrt", "--models", "m1", "--precisions", "fp32", "--int8", "--plugin", "/p.so",
                INT8_CALIB_IMAGES="12", INT8_HELD_OUT_IMAGES="20", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    for model in ("elfatt_vit_micro", "elfatt_cswin_micro"):
        export = next(c for c in calls if c.startswith("export") and model in c)
        assert "--precision fp16" in export and f"{model}-shapes10.safetensors" in export
        quantize = next(c for c in calls if c.startswith("quantize") and model in c)
        assert "--calib " in quantize and "--calib-samples 12" in quantize
        assert any(c.startswith(f"build {tmp_path / 'out' / model}-int8.onnx") and "--plugin /p.so" in c for c in calls)
        validate = next(c for c in calls if c.startswith("validate") and f"{model}-int8.onnx" in c)
        assert "--backend tensorrt" in validate and "--images " in validate and "--checkpoint " in validate
    held_out = tmp_path / "out" / "int8-images" / "held_out"
    assert len(list(held_out.rglob("*.png"))) == 20 and len(list(held_out.iterdir())) == 10
    report = json.loads((tmp_path / "out" / "parity-report.json").read_text())
    int8 = [r for r in report["rows"] if r["precision"] == "int8-qdq" and r["variant"] == "plugin"]
    assert len(int8) == 2 and all(r["parity"] == "pass" for r in int8)


@pytest.mark.parametrize("package", ["libnvinfer-bin", "tensorrt"])
def test_trtexec_is_found_in_either_debian_package_as_tools_py_finds_it(tmp_path, monkeypatch, package):
    """Outside PATH, trtexec is found through the file list of the package that ships it (JetPack's
    libnvinfer-bin, or tensorrt): parity.sh and elfatt_deploy/engine/tools.py look in the same packages."""
    import shutil

    from elfatt_deploy.engine.tools import TRTEXEC_PACKAGES, find_trtexec

    if shutil.which("trtexec") or os.environ.get("TRTEXEC") or os.environ.get("TENSORRT_ROOT"):
        pytest.skip("a trtexec is found here before any package's file list")
    assert package in TRTEXEC_PACKAGES
    bindir, trtexec = tmp_path / "bin", tmp_path / "opt" / "tensorrt" / "bin" / "trtexec"
    bindir.mkdir()
    trtexec.parent.mkdir(parents=True)
    trtexec.write_text('#!/bin/sh\necho "trtexec $*" >> "$CALLS"\necho "&&&& PASSED"\n')
    trtexec.chmod(0o755)
    dpkg = bindir / "dpkg-query"
    dpkg.write_text(f'#!/bin/sh\nif [ "$1" = -L ] && [ "$2" = {package} ]; then echo /usr; echo {trtexec}; exit 0; fi\n'
                    f'echo "dpkg-query: package \'$2\' is not installed" >&2; exit 1\n')
    dpkg.chmod(0o755)
    path = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    monkeypatch.setenv("PATH", path)
    assert find_trtexec() == str(trtexec)
    proc = _run(tmp_path, "--backend", "tensorrt", "--models", "m1", "--precisions", "fp32", "--plugin", "/p.so",
                PATH=path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [c for c in (tmp_path / "calls.txt").read_text().splitlines() if c.startswith("trtexec")]
    assert runs and all("--loadEngine" in c for c in runs), runs
