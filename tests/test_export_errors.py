"""Bad export requests fail with clear errors, and a failed export leaves no file behind."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from test_export_helpers import reduced_model
from elfatt_deploy import export_onnx
from elfatt_deploy.export import exporter
from elfatt_deploy.op.spec import ElfattAttrs


@pytest.fixture(scope="module")
def tiny():
    return reduced_model("vit", depth=1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(precision="int8"), "precision='int8' is not supported; use one of fp32, fp16"),
    (dict(opset=17), "opset=17 is not supported; use an int from 18"),
    (dict(input_shape="1x4x64x64"), "has 4 channels; the model takes 3"),
    (dict(input_shape="1x3x64"), "must have 4 dimensions"),
    (dict(input_shape="1x3xAx64"), "'1x3xAx64' has the dimension 'a', which is not a non-negative integer"),
])
def test_bad_arguments(tiny, tmp_path, kwargs, message):
    args = dict(input_shape="1x3x64x64") | kwargs
    with pytest.raises(ValueError, match=message):
        export_onnx(tiny, tmp_path / "m.onnx", **args)
    assert list(tmp_path.iterdir()) == []


def test_bad_output_paths(tiny, tmp_path):
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(tiny, tmp_path / "m.txt", "1x3x64x64")
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        export_onnx(tiny, tmp_path / "missing" / "m.onnx", "1x3x64x64")


def test_unsupported_module(tmp_path):
    class WithMha(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2)

        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="'attn' is a torch.nn.MultiheadAttention"):
        export_onnx(WithMha(), tmp_path / "m.onnx", "1x3x64x64")


def test_non_static_head_configuration(tmp_path):
    model = reduced_model("vit", depth=1)
    layer = model.blocks[0].attn
    attrs = object.__new__(ElfattAttrs)
    for key, value in layer.attrs.as_dict().items():
        object.__setattr__(attrs, key, value)
    object.__setattr__(attrs, "local_heads", torch.tensor(2))  # a traced value, not a Python int
    layer.attrs = attrs
    with pytest.raises(ValueError, match=r"'blocks.0.attn' has a head configuration that is not static: local_heads="):
        export_onnx(model, tmp_path / "m.onnx", "1x3x64x64")


def test_untraceable_model_names_the_problem(tmp_path):
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.export cannot trace it
                return x
            return -x

    with pytest.raises(ValueError, match="torch.onnx.export could not export DataDependent"):
        export_onnx(DataDependent(), tmp_path / "m.onnx", "1x3x64x64", dynamic=False)
    assert list(tmp_path.iterdir()) == []


def _existing(tmp_path) -> Path:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")
    return target


def test_failure_mid_export_leaves_target_untouched(tiny, tmp_path, monkeypatch):
    def broken_functions(model, opset=None):
        raise RuntimeError("simulated failure while attaching the function")

    monkeypatch.setattr(exporter, "attach_functions", broken_functions)
    with pytest.raises(RuntimeError, match="simulated failure"):
        export_onnx(tiny, tmp_path / "new.onnx", "1x3x64x64")
    assert not (tmp_path / "new.onnx").exists()
    target = _existing(tmp_path)
    with pytest.raises(RuntimeError, match="simulated failure"):
        export_onnx(tiny, target, "1x3x64x64")
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_failure_mid_write_leaves_no_partial_file(tiny, tmp_path, monkeypatch):
    real_write = Path.write_bytes

    def half_then_fail(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError("simulated disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    target = tmp_path / "model.onnx"
    with pytest.raises(OSError, match="disk full"):
        export_onnx(tiny, target, "1x3x64x64")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file
    monkeypatch.setattr(Path, "write_bytes", real_write)
    target = _existing(tmp_path)
    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(tiny, target, "1x3x64x64")
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("version,ok", [("2.5.0a0+872d972e41.nv24.08", False), ("2.4.1", False),
                                        ("2.6.0", True), ("2.13.0+cpu", True), ("3.0.0", True)])
def test_exporter_refuses_a_torch_without_custom_translation(version, ok):
    from elfatt_deploy.export.exporter import check_torch_version

    if ok:
        check_torch_version(version)
    else:
        with pytest.raises(ValueError, match=r"needs torch >= 2\.6.*this is torch " + re.escape(version)):
            check_torch_version(version)


def test_an_interrupt_inside_torch_export_stays_an_interrupt(monkeypatch):
    """Ctrl-C (or SIGTERM, raised as a BaseException by the CLI) while torch.export runs: torch wraps it in an
    export error of its own; the exporter re-raises the interrupt, so the CLI exits 130 / 143 and cleans up,
    instead of reporting a model that cannot be exported (exit 2)."""
    import torch

    from elfatt_deploy.export import exporter
    from elfatt_deploy.export.model_loading import build_model

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt()
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("torch.export failed while tracing") from interrupt

    monkeypatch.setattr(torch.onnx, "export", interrupted)
    model = build_model("elfatt_vit_tiny", config={"depth": 1})
    with pytest.raises(KeyboardInterrupt):
        exporter.export_onnx(model, "/tmp/never-written.onnx", "1x3x64x64")

    def failing(*args, **kwargs):
        raise RuntimeError("a real export error")

    monkeypatch.setattr(torch.onnx, "export", failing)
    with pytest.raises(ValueError, match="could not export .*a real export error"):
        exporter.export_onnx(model, "/tmp/never-written.onnx", "1x3x64x64")
