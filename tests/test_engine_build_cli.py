import pytest

from test_engine_onnx_fixture import elfatt_model, save
from elfatt_deploy.cli import main


def test_build_argument_errors(tmp_path, capsys):
    onnx_path = save(elfatt_model(), tmp_path / "m.onnx")
    out = str(tmp_path / "m.engine")
    cases = [
        (["build", str(tmp_path / "no.onnx"), "-o", out], "does not exist"),
        (["build", onnx_path, "-o", out, "--shapes", "min:1x3x64x64,opt:1x3x32x32,max:1x3x64x64", "--no-plugin"], "min <= opt <= max"),
        (["build", onnx_path, "-o", out, "--no-plugin"], "dynamic dimensions"),
        (["build", onnx_path, "-o", str(tmp_path / "nodir" / "m.engine"), "--no-plugin", "--shapes", "1x3x32x32"], "directory"),
        (["build", onnx_path, "-o", out, "--workspace", "0", "--no-plugin"], "--workspace 0"),
    ]
    for argv, match in cases:
        assert main(argv) == 2, argv
        assert match in capsys.readouterr().err
    assert not (tmp_path / "m.engine").exists()


def test_build_without_tensorrt_fails_clearly(tmp_path, capsys, without_tensorrt):
    onnx_path = save(elfatt_model(dims=(1, 3, 32, 32)), tmp_path / "m.onnx")
    assert main(["build", onnx_path, "-o", str(tmp_path / "m.engine"), "--no-plugin"]) == 3
    err = capsys.readouterr().err
    assert "TensorRT's Python package is not importable" in err and "docker/README.md" in err
    assert not (tmp_path / "m.engine").exists()
