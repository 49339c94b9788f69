"""FLOP counts of the models, ELFATT and its vanilla twin with the same formulas (docs/benchmarks.md).

A multiply-add counts as 2 FLOPs. Counted: every nn.Linear and nn.Conv2d (patch
embedding, qkv, proj, MLP, merges, head; from a forward on the "meta" device, so
nothing is computed), the LePE (a depthwise 3x3 of v: 18 C per token, in both
kinds) and the attention core:

- vanilla, all heads over all N tokens: q k^T and P v, 2 N^2 C each: 4 N^2 C;
- ELFATT global heads (c1 channels, head dim d): k'^T v and q' ctx, 2 N d c1 each;
- ELFATT local heads (c2 channels) in windows of T = wh x ww tokens on the grid
  padded to whole windows (Np tokens, the work the function body and the kernels
  do): q k^T and P v, 2 Np T c2 each.

Not counted, in either kind: softmax, exp, LayerNorm, GELU, bias and residual
adds (elementwise, O(N C) or O(N T) work that costs time but no matmul FLOPs).
The FLOP-ideal speedup of ELFATT is vanilla FLOPs / ELFATT FLOPs.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .op.reference import effective_window


def attention_core_flops(kind: str, batch: int, height: int, width: int, channels: int, num_heads: int,
                         global_heads: int, window_h: int, window_w: int, lepe: bool = True) -> int:
    """FLOPs of one attention layer's core (without its qkv / proj Linears) on a [batch, height, width] grid."""
    tokens = height * width
    lepe_flops = 18 * tokens * channels if lepe else 0
    if kind == "vanilla":
        return batch * (4 * tokens * tokens * channels + lepe_flops)
    if kind != "elfatt":
        raise ValueError(f"kind={kind!r}: use 'elfatt' or 'vanilla'")
    d = channels // num_heads
    c1, c2 = global_heads * d, (num_heads - global_heads) * d
    wh, ww = effective_window(window_h, height), effective_window(window_w, width)
    padded = (-(-height // wh) * wh) * (-(-width // ww) * ww)
    return batch * (4 * tokens * d * c1 + 4 * padded * wh * ww * c2 + lepe_flops)


def model_flops(model: nn.Module, input_shape: Sequence[int]) -> dict:
    """{"total", "attention_core", "linear_conv"} FLOPs of one forward of ``model`` at ``input_shape`` (NCHW)."""
    from .nn.attention import ElfattAttention

    counts = {"attention_core": 0, "linear_conv": 0}

    def linear_hook(module, inputs, output):
        counts["linear_conv"] += 2 * module.in_features * module.out_features * (inputs[0].numel() // module.in_features)

    def conv_hook(module, inputs, output):
        kh, kw = module.kernel_size
        counts["linear_conv"] += 2 * (module.in_channels // module.groups) * kh * kw * output.numel()

    def attention_hook(module, inputs):
        b, h, w, c = inputs[0].shape
        a = module.attrs
        counts["attention_core"] += attention_core_flops(module.attention, b, h, w, module.dim, module.num_heads,
                                                         a.global_heads, a.window_h, a.window_w, module.lepe is not None)

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        if isinstance(module, ElfattAttention):
            handles.append(module.register_forward_pre_hook(attention_hook))
    try:
        meta = _on_meta(model)
        with torch.no_grad():
            meta(torch.empty(tuple(input_shape), device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return {"total": counts["attention_core"] + counts["linear_conv"], **counts}


def _on_meta(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device (shapes only; the hooks are copied with the modules), so the
    caller's weights stay where they are."""
    import copy

    return copy.deepcopy(model).to("meta").eval()
