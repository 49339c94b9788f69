"""Metadata edited after export, or absent: a clear error naming the key (exit 2), or a description that says
what it does not know; never an internal error."""

from __future__ import annotations

import pytest

from elfatt_deploy.cli import main
from elfatt_deploy.export.metadata import describe_export, set_metadata
from test_engine_onnx_fixture import elfatt_model, save


@pytest.mark.parametrize("value", ["[1, 2]", "{not json", "7"])
def test_a_model_config_that_is_not_an_object_is_named(tmp_path, value, capsys):
    model = elfatt_model()
    set_metadata(model, {"elfatt.model_name": "elfatt_vit_tiny", "elfatt.model_config": value})
    path = save(model, tmp_path / "edited.onnx")
    code = main(["validate", path, "--samples", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "elfatt.model_config" in err and value[:5] in err and "re-export" in err, err


def test_the_description_of_a_file_without_metadata_says_what_it_lacks():
    """quantize describes its output from the input's metadata, which a file from another tool lacks."""
    text = describe_export({"elfatt.dynamic": "false"})
    assert "fixed shape unrecorded" in text and "model (fp32)" in text


@pytest.mark.parametrize("command", [["validate"], ["build", "-o", "{tmp}/e.engine"],
                                     ["quantize", "-o", "{tmp}/q.onnx", "--calib", "{tmp}"]])
def test_an_empty_onnx_file_is_called_empty(tmp_path, command, capsys):
    """0 bytes parse as an empty ONNX model (protobuf): the message says the file is empty instead of 'has 0
    inputs' or 'has no MatMul'."""
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    argv = [command[0], str(empty)] + [a.replace("{tmp}", str(tmp_path)) for a in command[1:]]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "is empty (0 bytes" in err and "Traceback" not in err, err
