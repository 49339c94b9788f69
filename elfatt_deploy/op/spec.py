"""The attributes of one ElfattAttention op and the contract's validation rules.

This module is the single place where the Python bindings (PyTorch op, ONNX
exporter, ONNX schema) check the contract's "Invalid input" rules, so that
every one of them rejects the same things with the same messages.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence

#: dtypes the contract allows for qkv (torch names). float64 is accepted by the
#: PyTorch reference only, as the ground truth for tests.
CONTRACT_DTYPES = ("float32", "float16", "bfloat16")
REFERENCE_DTYPES = CONTRACT_DTYPES + ("float64",)


@dataclass(frozen=True)
class ElfattAttrs:
    """The op's attributes (contract v1)."""

    global_heads: int
    local_heads: int
    window_h: int = 0
    window_w: int = 0
    scale: float = 0.0

    def __post_init__(self) -> None:
        # stores plain Python int / float (a numpy integer or float32 is accepted and converted)
        values = validate_attrs(self.global_heads, self.local_heads, self.window_h, self.window_w, self.scale)
        for name, value in zip(("global_heads", "local_heads", "window_h", "window_w", "scale"), values):
            object.__setattr__(self, name, value)

    @property
    def num_heads(self) -> int:
        return self.global_heads + self.local_heads

    def head_dim(self, channels: int) -> int:
        return check_channels(channels, self.global_heads, self.local_heads)

    def effective_scale(self, channels: int) -> float:
        return self.scale if self.scale != 0.0 else 1.0 / math.sqrt(self.head_dim(channels))

    def as_dict(self) -> dict:
        return {
            "global_heads": self.global_heads,
            "local_heads": self.local_heads,
            "window_h": self.window_h,
            "window_w": self.window_w,
            "scale": float(self.scale),
        }


#: the op's int attributes are int64 (the PyTorch schema's ``int``, ONNX INT, the plugin's int64 fields)
INT64_MAX = 2**63 - 1


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def window_pair(window) -> tuple:
    """``window=(window_h, window_w)`` -> the pair, or ValueError for anything that is not a pair
    (the two values themselves are checked by validate_attrs)."""
    if not isinstance(window, (str, bytes)):
        try:
            values = tuple(window)
        except TypeError:  # None, an int, ...
            values = ()
        if len(values) == 2:
            return values
    raise ValueError(f"window={window!r} must be a pair (window_h, window_w) of ints; 0 means the whole axis")


def validate_attrs(global_heads, local_heads, window_h, window_w, scale) -> tuple:
    """Raises ValueError naming the attribute and the rule it breaks; returns the attributes as
    (int, int, int, int, float)."""
    ints = []
    for name, value in (("global_heads", global_heads), ("local_heads", local_heads),
                        ("window_h", window_h), ("window_w", window_w)):
        if not _is_int(value):
            raise ValueError(f"{name}={value!r} must be an int")
        value = int(value)
        if value < 0:
            raise ValueError(f"{name}={value} is negative; it must be >= 0 (0 means the whole axis for windows)")
        if value > INT64_MAX:
            raise ValueError(f"{name}={value} is too large; the op's attributes are int64 (at most 2**63 - 1)")
        ints.append(value)
    if ints[0] + ints[1] < 1:
        raise ValueError(
            f"global_heads={global_heads} and local_heads={local_heads} give no head; "
            "global_heads + local_heads must be >= 1"
        )
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(f"scale={scale!r} must be a float (0 means 1/sqrt(d))")
    try:
        value = float(scale)
    except OverflowError:  # an int too large for a float
        value = math.inf
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"scale={scale!r} must be finite and >= 0 (0 means 1/sqrt(d))")
    return (*ints, value)


def check_channels(channels: int, global_heads: int, local_heads: int) -> int:
    """Returns d = C / heads, or raises ValueError naming C and the head count."""
    heads = global_heads + local_heads
    if channels < 1:
        raise ValueError(f"C={channels}: the op needs at least one channel per head (qkv last dim = 3C >= 3)")
    if channels % heads != 0:
        raise ValueError(
            f"C={channels} is not divisible by global_heads + local_heads = {heads}; "
            "pick a head count that divides the channel count"
        )
    return channels // heads


def check_qkv_channels(qkv_channels: int) -> int:
    """Returns C from the qkv channel count 3C."""
    if qkv_channels % 3 != 0:
        raise ValueError(
            f"qkv has {qkv_channels} channels, which is not divisible by 3; "
            "qkv must be [B, H, W, 3C] with channels [q | k | v]"
        )
    return qkv_channels // 3


def validate_inputs(
    qkv_shape: Sequence[int],
    qkv_dtype: str,
    lepe_weight_shape: Optional[Sequence[int]],
    lepe_bias_shape: Optional[Sequence[int]],
    attrs: ElfattAttrs,
    *,
    allowed_dtypes: Sequence[str] = CONTRACT_DTYPES,
    lepe_dtypes: Sequence[Optional[str]] = (),
) -> int:
    """Checks shapes and dtypes against the contract; returns C."""
    if len(qkv_shape) != 4:
        raise ValueError(f"qkv has shape {list(qkv_shape)}; it must be 4-D [B, H, W, 3C]")
    if qkv_dtype not in allowed_dtypes:
        raise ValueError(f"qkv dtype {qkv_dtype} is not supported; use one of {', '.join(allowed_dtypes)}")
    channels = check_qkv_channels(int(qkv_shape[3]))
    check_channels(channels, attrs.global_heads, attrs.local_heads)
    if lepe_weight_shape is None:
        if lepe_bias_shape is not None:
            raise ValueError("lepe_bias is given without lepe_weight; pass both or neither")
    else:
        if list(lepe_weight_shape) != [channels, 1, 3, 3]:
            raise ValueError(
                f"lepe_weight has shape {list(lepe_weight_shape)}; it must be [C, 1, 3, 3] = [{channels}, 1, 3, 3] "
                "(the weight of nn.Conv2d(C, C, 3, padding=1, groups=C))"
            )
        if lepe_bias_shape is not None and list(lepe_bias_shape) != [channels]:
            raise ValueError(f"lepe_bias has shape {list(lepe_bias_shape)}; it must be [C] = [{channels}]")
    for name, dt in zip(("lepe_weight", "lepe_bias"), lepe_dtypes):
        if dt is not None and dt not in REFERENCE_DTYPES:
            raise ValueError(f"{name} dtype {dt} is not supported; use a floating type ({', '.join(REFERENCE_DTYPES)})")
    return channels
