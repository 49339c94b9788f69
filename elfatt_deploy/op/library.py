"""Registration of ``elfatt::attention`` as a PyTorch custom op.

The eager implementation (all devices) is the reference in ``reference.py``;
the CUDA kernels of ``plugins/`` register themselves for the "cuda" dispatch
key through ``cuda_backend.py`` when they can be built. The fake
implementation lets torch.export / torch.compile trace the op, and autograd
recomputes the reference for the backward pass.
"""

from __future__ import annotations

from typing import Optional

import torch

from .reference import elfatt_attention_reference
from .spec import REFERENCE_DTYPES, ElfattAttrs, validate_inputs

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
}


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def check_op_inputs(
    qkv: torch.Tensor,
    lepe_weight: Optional[torch.Tensor],
    lepe_bias: Optional[torch.Tensor],
    global_heads: int,
    local_heads: int,
    window_h: int,
    window_w: int,
    scale: float,
) -> int:
    """Validates the op's inputs against the contract; returns C."""
    attrs = ElfattAttrs(global_heads, local_heads, window_h, window_w, scale)  # validate_attrs checks its type
    for name, tensor in (("lepe_weight", lepe_weight), ("lepe_bias", lepe_bias)):
        if tensor is not None and tensor.device != qkv.device:
            raise ValueError(f"{name} is on {tensor.device} but qkv is on {qkv.device}; move both to the same device")
    return validate_inputs(
        tuple(qkv.shape),
        dtype_name(qkv.dtype),
        None if lepe_weight is None else tuple(lepe_weight.shape),
        None if lepe_bias is None else tuple(lepe_bias.shape),
        attrs,
        allowed_dtypes=REFERENCE_DTYPES,
        lepe_dtypes=tuple(None if t is None else dtype_name(t.dtype) for t in (lepe_weight, lepe_bias)),
    )


def attention_reference(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    """The op's eager implementation on any device: the contract's checks, then the reference."""
    check_op_inputs(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)
    return elfatt_attention_reference(
        qkv.contiguous(), lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale
    )


#: The op's schema (docs/op-spec.md: the PyTorch binding). Registered with ``torch.library.Library`` rather
#: than ``torch.library.custom_op``: the latter wraps the eager kernel in ``torch._disable_dynamo``, which
#: imports torch._dynamo (about 1 s) on the first call of the op in every process.
SCHEMA = ("attention(Tensor qkv, Tensor? lepe_weight, Tensor? lepe_bias, int global_heads, int local_heads, "
          "int window_h, int window_w, float scale) -> Tensor")

_LIBRARY = torch.library.Library("elfatt", "DEF")  # noqa: TOR901 (kept alive by the module)
_LIBRARY.define(SCHEMA)


def _attention_eager(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    return attention_reference(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)


_LIBRARY.impl("attention", _attention_eager, "CompositeExplicitAutograd")


def _attention_fake(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    check_op_inputs(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)
    b, h, w, c3 = qkv.shape
    return qkv.new_empty((b, h, w, c3 // 3))


torch.library.register_fake("elfatt::attention", _attention_fake, lib=_LIBRARY)


def _setup_context(ctx, inputs, output) -> None:
    qkv, lepe_weight, lepe_bias, *attrs = inputs
    ctx.save_for_backward(qkv, lepe_weight, lepe_bias)
    ctx.attrs = attrs


def _backward(ctx, grad_out):
    qkv, lepe_weight, lepe_bias = ctx.saved_tensors
    needs = ctx.needs_input_grad[:3]
    leaves = [None if t is None else t.detach().requires_grad_(bool(n)) for t, n in zip((qkv, lepe_weight, lepe_bias), needs)]
    with torch.enable_grad():
        out = elfatt_attention_reference(leaves[0], leaves[1], leaves[2], *ctx.attrs)
        wanted = [t for t, n in zip(leaves, needs) if t is not None and n]
        grads = iter(torch.autograd.grad(out, wanted, grad_out) if wanted else ())
    result = [next(grads) if (t is not None and n) else None for t, n in zip(leaves, needs)]
    return (*result, None, None, None, None, None)


torch.library.register_autograd("elfatt::attention", _backward, setup_context=_setup_context, lib=_LIBRARY)

#: the op (an OpOverloadPacket): ``attention(qkv, lepe_weight, lepe_bias, global_heads, ...)``
attention = torch.ops.elfatt.attention
