"""load_checkpoint refuses what cannot be a model's weights (non-floating values, keys that are no strings, sparse
tensors) naming the key, and warns about NaN / Inf values, instead of loading them silently or crashing."""

import warnings

import pytest
import torch

from elfatt_deploy import create_model, load_checkpoint
from elfatt_deploy.checkpoint import read_state_dict


def micro():
    return create_model("elfatt_vit_micro").eval()


def _state():
    return micro().state_dict()


@pytest.mark.parametrize("convert,dtype", [(lambda v: v > 0, "bool"), (lambda v: (v * 100).long(), "int64"),
                                           (lambda v: v.to(torch.complex64), "complex64"),
                                           (lambda v: (v * 10).to(torch.int8), "int8")])
def test_non_floating_values_are_refused_naming_the_key_and_dtype(tmp_path, convert, dtype):
    """A bool (v > 0) or integer checkpoint loaded silently into the float parameters (complex: torch's warning)."""
    torch.save({k: convert(v) for k, v in _state().items()}, tmp_path / "w.pt")
    model = micro()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch ComplexHalf / casting warning either
        with pytest.raises(ValueError, match=rf"key '[\w.]+' holds {dtype} values, but the model's parameter is "
                                             "float32"):
            load_checkpoint(model, tmp_path / "w.pt")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded


def test_one_integer_tensor_among_floats_is_named(tmp_path):
    state = _state()
    state["head.bias"] = torch.zeros(10, dtype=torch.int64)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"key 'head.bias' holds int64 values"):
        load_checkpoint(micro(), tmp_path / "w.pt")


def test_safetensors_int32_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({k: (v * 100).to(torch.int32).contiguous() for k, v in _state().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match=r"holds int32 values, but the model's parameter is float32"):
        load_checkpoint(micro(), tmp_path / "w.safetensors")


def test_float64_and_float16_checkpoints_still_load(tmp_path):
    src = micro()
    for dtype in (torch.float64, torch.float16):
        torch.save({k: v.to(dtype) for k, v in src.state_dict().items()}, tmp_path / "w.pt")
        dst = micro()
        assert load_checkpoint(dst, tmp_path / "w.pt").ok
        assert torch.allclose(dst.head.weight, src.head.weight.to(dtype).float())


def test_nan_and_inf_values_are_warned_about_with_the_count(tmp_path):
    state = _state()
    state["head.bias"][0] = float("nan")
    state["norm.weight"][3] = float("inf")
    torch.save(state, tmp_path / "w.pt")
    with pytest.warns(UserWarning, match=r"2 keys hold NaN or Inf values: \('head.bias', 'norm.weight'\); the model's outputs will not be finite"):
        assert load_checkpoint(micro(), tmp_path / "w.pt").ok
    torch.save(_state(), tmp_path / "clean.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(micro(), tmp_path / "clean.pt")


@pytest.mark.parametrize("keys,shown", [((0, 1), "0"), (("head.bias", 7), "7"), (((1, 2), "x"), r"\(1, 2\)")])
def test_keys_that_are_no_strings_are_refused_naming_the_first(tmp_path, keys, shown):
    """{0: t, 1: t} was 'internal error: AttributeError: 'int' object has no attribute 'startswith''."""
    t = torch.zeros(3)
    torch.save({k: t for k in keys}, tmp_path / "intkeys.pt")
    with pytest.raises(ValueError, match=rf"has the key {shown} \(\w+\); a state dict's keys are parameter names"):
        read_state_dict(tmp_path / "intkeys.pt")
    with pytest.raises(ValueError, match=rf"has the key {shown}"):
        load_checkpoint(micro(), tmp_path / "intkeys.pt")
    torch.save({"state_dict": {k: t for k in keys}}, tmp_path / "nested.pt")
    with pytest.raises(ValueError, match=rf"has the key {shown}"):
        load_checkpoint(micro(), tmp_path / "nested.pt")


def test_sparse_tensors_are_refused_naming_the_key(tmp_path):
    """copy_ between a dense parameter and a sparse tensor was an internal error (exit 4)."""
    state = _state()
    state["head.weight"] = state["head.weight"].to_sparse()
    torch.save(state, tmp_path / "sparse.pt")
    with pytest.raises(ValueError, match=r"key 'head.weight' holds a sparse_coo tensor; .*\(tensor.to_dense\(\)\)"):
        load_checkpoint(micro(), tmp_path / "sparse.pt")
    state["head.weight"] = state["head.weight"].to_dense().to_sparse_csr()
    torch.save(state, tmp_path / "csr.pt")
    with pytest.raises(ValueError, match=r"key 'head.weight' holds a sparse_csr tensor"):
        load_checkpoint(micro(), tmp_path / "csr.pt")
