"""One exit-code scheme for every command (elfatt_deploy.errors, docs/cli.md): 0 ok, 1 a check failed,
2 bad input or usage, 3 the environment lacks something, 4 internal error; never a raw traceback."""

import errno
import subprocess
import sys
from pathlib import Path

import pytest

import elfatt_deploy.cli.commands.models as models_cmd
from elfatt_deploy.cli import main
from elfatt_deploy.errors import (EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_ENVIRONMENT, EXIT_INTERNAL, EXIT_OK,
                                  InputError, MissingDependencyError)
from test_engine_onnx_fixture import elfatt_model, save


def _raising(exc):
    def run(args):
        raise exc
    return run


@pytest.mark.parametrize("exc, code, message", [
    (InputError("--foo 3 is wrong; use 4"), EXIT_BAD_INPUT, "error: --foo 3 is wrong; use 4"),
    (FileNotFoundError("x.onnx does not exist"), EXIT_BAD_INPUT, "error: x.onnx does not exist"),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/x.json"), EXIT_BAD_INPUT,
     "error: [Errno 13] Permission denied: '/ro/x.json'"),
    (MissingDependencyError("needs OpenVINO", extra="openvino"), EXIT_ENVIRONMENT, "error: needs OpenVINO"),
    (OSError(errno.ENOSPC, "No space left on device"), EXIT_ENVIRONMENT, "No space left on device"),
    (MemoryError(), EXIT_ENVIRONMENT, "error: out of memory; use a smaller input shape"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 1600000000000 bytes"), EXIT_ENVIRONMENT, "error: out of memory ([enforce fail"),
])
def test_errors_map_to_the_scheme(monkeypatch, capsys, exc, code, message):
    monkeypatch.setattr(models_cmd, "run", _raising(exc))
    assert main(["models"]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.startswith("elfatt-deploy models: error: ")
    if isinstance(exc, MissingDependencyError):
        assert 'pip install "elfatt-deploy[openvino]"' in err


def test_an_unexpected_exception_is_one_line_and_exit_4(monkeypatch, capsys):
    monkeypatch.delenv("ELFATT_DEBUG", raising=False)
    monkeypatch.setattr(models_cmd, "run", _raising(KeyError("image")))
    assert main(["models"]) == EXIT_INTERNAL == 4
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0] == "elfatt-deploy models: internal error: KeyError: 'image'"
    assert "--debug" in lines[1] and "ELFATT_DEBUG=1" in lines[1] and len(lines) == 2
    assert "Traceback" not in err


@pytest.mark.parametrize("how", ["flag", "flag-before-command", "env"])
def test_debug_shows_the_traceback(monkeypatch, capsys, how):
    monkeypatch.setattr(models_cmd, "run", _raising(KeyError("image")))
    argv = {"flag": ["models", "--debug"], "flag-before-command": ["--debug", "models"], "env": ["models"]}[how]
    if how == "env":
        monkeypatch.setenv("ELFATT_DEBUG", "1")
    assert main(argv) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'image'" in err
    assert "internal error: KeyError" in err


def test_every_command_has_debug_and_verbose():
    from elfatt_deploy.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    assert {"validate", "export", "bench", "doctor", "forward", "models", "build"} <= set(commands)
    for name, sub in commands.items():
        assert "--debug" in sub._option_string_actions, name  # noqa: SLF001
        assert "--verbose" in sub._option_string_actions, name  # noqa: SLF001


def test_usage_errors_exit_2():
    proc = subprocess.run([sys.executable, "-m", "elfatt_deploy", "validate", "--samples", "many"],
                          capture_output=True, text=True)
    assert proc.returncode == EXIT_BAD_INPUT and "invalid int value: 'many'" in proc.stderr


def test_plain_doctor_exits_0_on_any_machine():
    """Plain `doctor` reports; only a backend that was asked for decides the exit code."""
    proc = subprocess.run([sys.executable, "-m", "elfatt_deploy", "doctor"], capture_output=True, text=True)
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    for backend in ("onnxruntime", "tensorrt", "torch"):
        assert f"backend {backend}: " in proc.stdout
    assert "backend onnxruntime: ready" in proc.stdout and "Traceback" not in proc.stderr


def test_doctor_for_tensorrt_without_tensorrt_exits_3(capsys, without_tensorrt):
    assert main(["doctor", "--backend", "tensorrt"]) == EXIT_ENVIRONMENT
    out = capsys.readouterr().out
    assert "backend tensorrt: NOT ready; missing: TensorRT" in out
    assert "backend onnxruntime" not in out  # only what was asked for


def test_build_says_tensorrt_is_missing_before_the_plugin(tmp_path, capsys, monkeypatch, without_tensorrt):
    from elfatt_deploy.engine import plugin

    monkeypatch.setenv("ELFATT_PLUGIN_PATH", str(tmp_path / "nowhere.so"))
    monkeypatch.setattr(plugin, "repo_root", lambda: tmp_path)
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    monkeypatch.setattr(plugin.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(plugin.PluginNotFoundError):  # the search itself finds nothing ...
        plugin.find_plugin_library()
    onnx_path = save(elfatt_model(dims=(1, 3, 32, 32)), tmp_path / "m.onnx")
    assert main(["build", onnx_path, "-o", str(tmp_path / "m.engine")]) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert "TensorRT's Python package is not importable" in err  # ... but what to install first is TensorRT
    assert "could not find libelfatt_trt_plugin.so" not in err


def test_validate_and_bench_on_tensorrt_without_tensorrt_exit_3(tmp_path, capsys, without_tensorrt):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    assert main(["validate", "--backend", "tensorrt", "--engine", str(engine), "--model", "elfatt_vit_tiny"]) == 3
    assert "TensorRT, which is not installed" in capsys.readouterr().err
    assert main(["bench", "--backend", "tensorrt", "--engine", str(engine), "--input-shape", "1x3x32x32"]) == 3
    assert "TensorRT, which is not installed" in capsys.readouterr().err


def test_a_file_that_is_not_a_plan_is_named_before_tensorrt_is_asked_for(tmp_path, capsys, without_tensorrt):
    """validate / bench --backend tensorrt --engine model.onnx: exit 2 naming the file (docs/cli.md), on a machine
    without TensorRT too -- not exit 3 saying only that TensorRT is missing."""
    onnx_file = save(elfatt_model(), tmp_path / "m.onnx")
    text = tmp_path / "labels.txt"
    text.write_text("cat\ndog\nbird\nfish\nhorse\n")
    for engine, kind in ((onnx_file, "an ONNX model, not a TensorRT plan"), (text, "a text file, not a TensorRT plan")):
        assert main(["validate", "--backend", "tensorrt", "--engine", str(engine), "--model", "elfatt_vit_tiny"]) == 2
        err = capsys.readouterr().err
        assert kind in err and str(engine) in err and "not installed" not in err, err
        assert main(["bench", "--backend", "tensorrt", "--engine", str(engine), "--input-shape", "1x3x32x32"]) == 2
        err = capsys.readouterr().err
        assert kind in err and "not installed" not in err, err


def test_the_scheme_is_what_docs_cli_md_lists():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    for code, meaning in ((EXIT_OK, "ok"), (EXIT_CHECK_FAILED, "check failed"), (EXIT_BAD_INPUT, "bad input"),
                          (EXIT_ENVIRONMENT, "environment"), (EXIT_INTERNAL, "internal error")):
        row = next((line for line in text.splitlines() if line.startswith(f"| {code} |")), None)
        assert row is not None and meaning in row.lower(), (code, meaning)


def test_a_missing_package_is_an_environment_error(capsys):
    """A dependency that is not installed (Pillow on a device image built with --no-deps): exit 3 with the
    package to install, not an internal error (exit 4)."""
    from elfatt_deploy.cli import _report

    assert _report("validate", ModuleNotFoundError("No module named 'PIL'", name="PIL"), False) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert "python3 -m pip install Pillow" in err and "internal error" not in err, err


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    """SIGTERM (docker stop, timeout) mid-export: exit 143, no output file, no temporary file left in the output
    directory or of ours in TMPDIR (the same cleanup as Ctrl-C)."""
    import os
    import signal
    import time

    out_dir, tmp = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "elfatt_deploy", "export", "--model", "elfatt_vit_base",
                             "--input-shape", "1x3x224x224", "-o", str(out_dir / "m.onnx")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TMPDIR=str(tmp)))
    # wait until the CLI has installed its SIGTERM handler (the SigCgt mask in /proc: bit 15 - 1), then a little
    # more, so that the signal lands inside the export, not in the interpreter's start-up
    status = Path(f"/proc/{proc.pid}/status")
    deadline = time.monotonic() + 120
    installed = False
    while proc.poll() is None and time.monotonic() < deadline:
        caught = next((line.split()[1] for line in status.read_text().splitlines() if line.startswith("SigCgt:")),
                      "0") if status.exists() else None
        if caught is None:
            proc.kill()
            pytest.skip("no /proc/PID/status to see when the handler is installed")
        if int(caught, 16) & (1 << (signal.SIGTERM - 1)):
            installed = True
            break
        time.sleep(0.1)
    assert installed, "the CLI never installed a SIGTERM handler (the default action kills it without cleanup)"
    time.sleep(2)
    if proc.poll() is not None:
        pytest.skip("the export finished before the signal")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated" in err, (proc.returncode, err[-2000:])
    assert list(out_dir.iterdir()) == [], list(out_dir.iterdir())
    # torch keeps its own caches in TMPDIR (torchinductor_*); nothing of ours may stay
    ours = [p for p in tmp.rglob("*") if p.name.startswith("elfatt") or p.suffix in (".onnx", ".tmp", ".part")]
    assert ours == [], ours


def test_a_reader_that_closes_the_pipe_is_not_an_error_of_the_environment():
    """`elfatt-deploy models | head -1`: the pipe closes mid-output; exit 141 (128 + SIGPIPE, as shells report
    it), no `error: [Errno 32] Broken pipe` (exit 3) and no 'Exception ignored' at the interpreter's exit."""
    proc = subprocess.Popen([sys.executable, "-m", "elfatt_deploy", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves before the table is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Broken pipe" not in err and "Exception ignored" not in err, err


def test_a_bad_deepstream_input_size_names_the_form(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["deepstream", str(tmp_path / "m.engine"), "-o", str(tmp_path / "c.txt"), "--input-size", "384"])
    err = capsys.readouterr().err
    assert exit_info.value.code == EXIT_BAD_INPUT and "--input-size '384'" in err and "e.g. 224x224" in err, err
    assert "_size" not in err
