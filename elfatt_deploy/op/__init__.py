"""The ElfattAttention op: contract checks, eager reference, registered custom op."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from . import library as _library  # registers torch.ops.elfatt.attention
from .library import check_op_inputs
from .reference import elfatt_attention_reference
from .spec import ElfattAttrs

__all__ = ["elfatt_attention", "elfatt_attention_reference", "ElfattAttrs", "check_op_inputs"]

_cuda_backend_checked = False


def _ensure_cuda_backend() -> None:
    """Registers the CUDA kernels for the op on first use with a CUDA tensor."""
    global _cuda_backend_checked
    if _cuda_backend_checked:
        return
    _cuda_backend_checked = True
    try:
        from . import cuda_backend
    except ModuleNotFoundError as exc:  # only the optional module itself may be absent
        if exc.name != f"{__name__}.cuda_backend":
            raise
        return
    cuda_backend.maybe_register()


def elfatt_attention(
    qkv: torch.Tensor,
    lepe_weight: Optional[torch.Tensor] = None,
    lepe_bias: Optional[torch.Tensor] = None,
    *,
    global_heads: int,
    local_heads: int,
    window: Sequence[int] = (0, 0),
    scale: float = 0.0,
) -> torch.Tensor:
    """ELFATT attention on qkv [B, H, W, 3C] -> [B, H, W, C] (contract v1, docs/op-spec.md).

    ``window=(wh, ww)``: local block size in tokens, 0 = the whole axis.
    ``scale=0`` means 1/sqrt(d). Invalid input raises ValueError naming the value.
    """
    if not isinstance(qkv, torch.Tensor):
        raise ValueError(f"qkv must be a torch.Tensor [B, H, W, 3C], got {type(qkv).__name__}")
    if isinstance(window, int) or len(window) != 2:
        raise ValueError(f"window={window!r} must be a pair (window_h, window_w); 0 means the whole axis")
    wh, ww = window
    check_op_inputs(qkv, lepe_weight, lepe_bias, global_heads, local_heads, wh, ww, scale)
    if qkv.is_cuda:
        _ensure_cuda_backend()
    return torch.ops.elfatt.attention(qkv, lepe_weight, lepe_bias, global_heads, local_heads, wh, ww, float(scale))
