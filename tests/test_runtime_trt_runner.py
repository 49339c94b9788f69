"""TrtRunner: the TensorRT-free parts here; a real engine in test_engine_tensorrt.py."""

import pytest

from elfatt_deploy.engine.engine_file import write_engine_file
from elfatt_deploy.engine.profiles import make_profile
from elfatt_deploy.runtime.tensorrt_runner import TrtRunner, check_shape_in_profile


def test_profile_range_error_names_shape_and_range():
    p = make_profile("1x3x224x224", "2x3x224x224", "4x3x512x512")
    check_shape_in_profile("images", (4, 3, 300, 512), p)
    with pytest.raises(ValueError, match=r"5x3x224x224 is outside .*min 1x3x224x224, opt 2x3x224x224, max 4x3x512x512"):
        check_shape_in_profile("images", (5, 3, 224, 224), p)
    with pytest.raises(ValueError, match="1x3x224 is outside"):
        check_shape_in_profile("images", (1, 3, 224), p)


def test_is_a_polygraphy_runner():
    from polygraphy.backend.base import BaseRunner

    assert issubclass(TrtRunner, BaseRunner)
    assert TrtRunner("x.engine", name="mine").name == "mine"


def test_activate_errors_before_tensorrt(tmp_path):
    with pytest.raises(FileNotFoundError, match="elfatt-deploy build"):
        TrtRunner(tmp_path / "none.engine").activate()
    stale = write_engine_file(tmp_path / "stale.engine", {"tensorrt_version": "10.3.0"}, b"plan one")
    stale.write_bytes(b"plan two")
    with pytest.raises(ValueError, match="describes another plan"):
        TrtRunner(stale).activate()


def test_plan_without_sidecar_reaches_tensorrt(tmp_path, without_tensorrt):
    """A trtexec/Polygraphy plan is not refused for lacking metadata: the runner gets as far as TensorRT."""
    plain = tmp_path / "plain.engine"
    plain.write_bytes(b"ftrt" + b"\0" * 100)
    with pytest.raises(RuntimeError, match="needs TensorRT's Python package"):
        TrtRunner(plain).activate()


def test_activate_without_tensorrt_says_so(tmp_path, without_tensorrt):
    path = write_engine_file(tmp_path / "m.engine", {"tensorrt_version": "10.3.0", "plugin": {"used": False}}, b"plan")
    with pytest.raises(RuntimeError, match="needs TensorRT's Python package.*doctor"):
        TrtRunner(path).activate()


def test_input_views_are_realigned_for_tensorrt():
    """TensorRT needs 256-byte aligned tensor addresses (IExecutionContext::setTensorAddress); a view may not be."""
    torch = pytest.importorskip("torch")
    from elfatt_deploy.runtime.tensorrt_runner import TENSOR_ADDRESS_ALIGNMENT, aligned

    base = torch.arange(4096, dtype=torch.float32)
    skip = (-base.data_ptr() % TENSOR_ADDRESS_ALIGNMENT) // base.element_size()
    ok = base[skip:skip + 1024]
    assert ok.data_ptr() % TENSOR_ADDRESS_ALIGNMENT == 0 and aligned(ok) is ok
    view = base[skip + 1:skip + 1025]
    fixed = aligned(view)
    assert fixed.data_ptr() != view.data_ptr() and torch.equal(fixed, view) and fixed.is_contiguous()
