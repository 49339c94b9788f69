"""Inputs of the PyTorch op that are not tensors of the right shape: each gets a ValueError naming the
value and what to pass (spec.validate_attrs / window_pair and library.check_op_inputs are the one place)."""

import re

import numpy as np
import pytest
import torch

from _naive_elfatt import naive_elfatt, rel_l2
from elfatt_deploy.op import elfatt_attention
from elfatt_deploy.op.spec import ElfattAttrs, validate_attrs


def call(qkv=None, w="zeros", b="zeros", **kwargs):
    qkv = torch.zeros(1, 4, 4, 12) if qkv is None else qkv
    w = torch.zeros(4, 1, 3, 3) if isinstance(w, str) else w
    b = torch.zeros(4) if isinstance(b, str) else b
    attrs = dict(global_heads=1, local_heads=1, window=(2, 2), scale=0.0)
    attrs.update(kwargs)
    return elfatt_attention(qkv, w, b, **attrs)


BAD = [
    (dict(w=np.zeros((4, 1, 3, 3), np.float32)), "lepe_weight must be a torch.Tensor [C, 1, 3, 3] or None, got ndarray"),
    (dict(w=[[0.0] * 9] * 4), "lepe_weight must be a torch.Tensor [C, 1, 3, 3] or None, got list"),
    (dict(b=[0.0] * 4), "lepe_bias must be a torch.Tensor [C] or None, got list"),
    (dict(qkv=np.zeros((1, 4, 4, 12))), "qkv must be a torch.Tensor [B, H, W, 3C], got ndarray"),
    (dict(window=(2**63, 1)), "window_h=9223372036854775808 is too large; the op's attributes are int64"),
    (dict(window=(1, 2**64)), "window_w=18446744073709551616 is too large"),
    (dict(global_heads=2**63), "global_heads=9223372036854775808 is too large"),
    (dict(window=None), "window=None must be a pair (window_h, window_w)"),
    (dict(window="22"), "window='22' must be a pair (window_h, window_w)"),
    (dict(window=(1, 2, 3)), "window=(1, 2, 3) must be a pair"),
    (dict(window=(2.7, 2)), "window_h=2.7 must be an int"),
    (dict(window=(2, 2.0)), "window_w=2.0 must be an int"),
    (dict(window=(True, 2)), "window_h=True must be an int"),
    (dict(scale=np.float32("nan")), "must be finite"),
    (dict(scale=10**400), "must be finite"),
    (dict(scale=-np.float32(1)), "must be finite and >= 0"),
    (dict(scale="0.5"), "scale='0.5' must be a float"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m[:48] for _, m in BAD])
def test_bad_input_names_the_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(**kwargs)


def test_numpy_scalars_are_accepted_as_attributes(rng):
    qkv = torch.from_numpy(rng.standard_normal((2, 5, 7, 24)))
    w, b = torch.from_numpy(rng.standard_normal((8, 1, 3, 3)) * 0.3), torch.from_numpy(rng.standard_normal(8) * 0.1)
    want = naive_elfatt(qkv.numpy(), w.numpy(), b.numpy(), global_heads=1, local_heads=1, window_h=3, window_w=2,
                        scale=0.5)
    for scale in (np.float32(0.5), np.float64(0.5), 0.5):
        out = elfatt_attention(qkv, w, b, global_heads=np.int64(1), local_heads=1, window=np.array([3, 2]),
                               scale=scale)
        assert rel_l2(out.numpy(), want) <= 1e-10, type(scale)


def test_attrs_hold_plain_python_numbers():
    attrs = ElfattAttrs(np.int64(1), np.int32(2), np.uint8(3), 0, np.float32(0.25))
    assert attrs.as_dict() == dict(global_heads=1, local_heads=2, window_h=3, window_w=0, scale=0.25)
    assert all(type(v) is int for v in (attrs.global_heads, attrs.local_heads, attrs.window_h, attrs.window_w))
    assert type(attrs.scale) is float
    assert validate_attrs(1, 1, 2, 2, 1) == (1, 1, 2, 2, 1.0)


@pytest.mark.parametrize("window", [(2.7, 2), (2, 2.0)])
def test_attrs_refuse_non_integer_windows(window):
    with pytest.raises(ValueError, match="must be an int"):
        ElfattAttrs(1, 1, *window)


def test_largest_int64_window_is_accepted():
    """2**63 - 1 is a valid int64 attribute: it means a window larger than any grid (the whole axis)."""
    qkv = torch.randn(1, 3, 4, 12)
    whole = elfatt_attention(qkv, global_heads=0, local_heads=2, window=(0, 0))
    assert torch.equal(elfatt_attention(qkv, global_heads=0, local_heads=2, window=(2**63 - 1, 2**63 - 1)), whole)


@pytest.mark.parametrize("window, message", [((2.7, 2), "window_h=2.7 must be an int"),
                                             (None, "window=None must be a pair"), (7, "window=7 must be a pair")])
def test_the_layer_refuses_a_window_the_op_would_truncate(window, message):
    """ElfattAttention(window=(2.7, 2)) used to build a layer with 2 x 2 windows."""
    from elfatt_deploy.nn.attention import ElfattAttention

    with pytest.raises(ValueError, match=re.escape(message)):
        ElfattAttention(96, num_heads=4, window=window)
