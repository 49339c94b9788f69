"""The ElfattAttention op: contract checks, eager reference, registered custom op."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from . import library as _library  # registers torch.ops.elfatt.attention
from .library import check_op_inputs
from .reference import elfatt_attention_reference
from .spec import ElfattAttrs, window_pair

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
    Differentiable to any order, in reverse and forward mode and under the torch.func transforms.
    """
    attrs = ElfattAttrs(global_heads, local_heads, *window_pair(window), scale)  # plain ints / float, or ValueError
    a = attrs.global_heads, attrs.local_heads, attrs.window_h, attrs.window_w, attrs.scale
    check_op_inputs(qkv, lepe_weight, lepe_bias, *a)
    if qkv.is_cuda:
        _ensure_cuda_backend()
    return torch.ops.elfatt.attention(qkv, lepe_weight, lepe_bias, *a)
