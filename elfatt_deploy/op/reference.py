"""Eager PyTorch reference of the ElfattAttention op (contract v1).

Pure tensor code with no Python loop over windows or heads: windows are cut by
zero-padding the grid to whole windows and reshaping; padded keys get an additive
-inf bias (only when some window is partial) in PyTorch's scaled_dot_product_attention,
so peak memory is O(B * H * W * window) for a fixed window. The softmax of k over
the tokens runs along the innermost axis ([B, heads, d, N]), the LePE is one depthwise
conv per part. Reductions run in float32 for float16/bfloat16 inputs (float64 stays
float64). The ONNX function body (export/onnx_function.py) shares the window cut,
the additive key bias and the per-part conv; it reduces the k-softmax token-major
(max / exp / a sum folded into the context: channels innermost) and lays the local
v out window-major with its channels innermost, which suits ONNX Runtime, where
every transpose is a copy and one that moves the innermost axis is a slow one.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def effective_window(window: int, extent: int) -> int:
    """Window size along one axis: 0 means the whole axis; never larger than it."""
    size = extent if window == 0 else window
    return max(1, min(size, extent))


def _to_windows(x: torch.Tensor, wh: int, ww: int) -> tuple[torch.Tensor, int, int]:
    """[B, H, W, C] -> [B, nH, nW, wh*ww, C], zero-padding H and W up to whole windows."""
    b, h, w, c = x.shape
    nh, nw = -(-h // wh), -(-w // ww)
    x = F.pad(x, (0, 0, 0, nw * ww - w, 0, nh * wh - h))
    x = x.reshape(b, nh, wh, nw, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, nh, nw, wh * ww, c), nh, nw


def _from_windows(x: torch.Tensor, h: int, w: int, wh: int, ww: int) -> torch.Tensor:
    """[B, nH, nW, wh*ww, C] -> [B, H, W, C], cropping the padding."""
    b, nh, nw, _, c = x.shape
    x = x.reshape(b, nh, nw, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * wh, nw * ww, c)
    return x[:, :h, :w, :]


def _key_bias(h: int, w: int, wh: int, ww: int, nh: int, nw: int, dtype, device) -> Optional[torch.Tensor]:
    """[nH*nW, 1, 1, wh*ww]: 0 for window slots holding a real token, -inf for padding; None when no window
    is partial (nothing to mask)."""
    if h % wh == 0 and w % ww == 0:
        return None
    rows = torch.arange(nh * wh, device=device) < h
    cols = torch.arange(nw * ww, device=device) < w
    grid = (rows[:, None] & cols[None, :]).reshape(nh, wh, nw, ww).permute(0, 2, 1, 3).reshape(nh * nw, 1, 1, wh * ww)
    return torch.zeros(grid.shape, dtype=dtype, device=device).masked_fill_(~grid, float("-inf"))


def global_heads_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Global linear heads on [B, H, W, heads*d] tensors."""
    b, h, w, c = q.shape
    d = c // heads
    q = q.reshape(b, h * w, heads, d).softmax(dim=-1).transpose(1, 2)  # over each token's channels: [B, h, N, d]
    k = k.reshape(b, h * w, heads, d).permute(0, 2, 3, 1).softmax(dim=-1)  # over all tokens, innermost: [B, h, d, N]
    v = v.reshape(b, h * w, heads, d).transpose(1, 2)  # [B, h, N, d]
    out = torch.matmul(q, torch.matmul(k, v))  # q' (k'^T v)
    return out.transpose(1, 2).reshape(b, h, w, c)


def local_heads_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, window_h: int, window_w: int, scale: float
) -> torch.Tensor:
    """Local block heads on [B, H, W, heads*d] tensors, softmax attention inside each window."""
    b, h, w, c = q.shape
    d = c // heads
    wh, ww = effective_window(window_h, h), effective_window(window_w, w)
    scale = scale if scale != 0.0 else 1.0 / math.sqrt(d)
    qw, nh, nw = _to_windows(q, wh, ww)
    kw, _, _ = _to_windows(k, wh, ww)
    vw, _, _ = _to_windows(v, wh, ww)
    # [B, nH, nW, T, heads, d] -> [B, nH*nW, heads, T, d]
    qw, kw, vw = (t.reshape(b, nh * nw, wh * ww, heads, d).transpose(2, 3) for t in (qw, kw, vw))
    bias = _key_bias(h, w, wh, ww, nh, nw, q.dtype, q.device)  # every window holds >= 1 real key: no NaN
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=bias, scale=scale)
    out = out.transpose(2, 3).reshape(b, nh, nw, wh * ww, c)
    return _from_windows(out, h, w, wh, ww)


def lepe_forward(
    v: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    global_channels: int,
    window_h: int,
    window_w: int,
) -> torch.Tensor:
    """Depthwise 3x3 LePE of v [B, H, W, C]: global channels over the grid, local ones per window."""
    b, h, w, c = v.shape
    parts = []
    c1 = global_channels
    if c1 > 0:
        x = v[..., :c1].permute(0, 3, 1, 2)
        y = F.conv2d(x, weight[:c1], None if bias is None else bias[:c1], padding=1, groups=c1)
        parts.append(y.permute(0, 2, 3, 1))
    c2 = c - c1
    if c2 > 0:
        wh, ww = effective_window(window_h, h), effective_window(window_w, w)
        xw, nh, nw = _to_windows(v[..., c1:], wh, ww)  # padded slots are zero: taps outside read zero
        x = xw.reshape(b * nh * nw, wh, ww, c2).permute(0, 3, 1, 2)
        y = F.conv2d(x, weight[c1:], None if bias is None else bias[c1:], padding=1, groups=c2)
        y = y.permute(0, 2, 3, 1).reshape(b, nh, nw, wh * ww, c2)
        parts.append(_from_windows(y, h, w, wh, ww))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def elfatt_attention_reference(
    qkv: torch.Tensor,
    lepe_weight: Optional[torch.Tensor],
    lepe_bias: Optional[torch.Tensor],
    global_heads: int,
    local_heads: int,
    window_h: int,
    window_w: int,
    scale: float,
) -> torch.Tensor:
    """The op on already-validated inputs: qkv [B, H, W, 3C] -> out [B, H, W, C]."""
    b, h, w, c3 = qkv.shape
    c = c3 // 3
    if b == 0 or h == 0 or w == 0:
        return qkv.new_zeros((b, h, w, c))
    acc = _accumulation_dtype(qkv.dtype)
    x = qkv.to(acc)
    q, k, v = x.split(c, dim=-1)
    d = c // (global_heads + local_heads)
    c1 = global_heads * d
    parts = []
    if global_heads > 0:
        parts.append(global_heads_forward(q[..., :c1], k[..., :c1], v[..., :c1], global_heads))
    if local_heads > 0:
        parts.append(local_heads_forward(q[..., c1:], k[..., c1:], v[..., c1:], local_heads, window_h, window_w, scale))
    out = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
    if lepe_weight is not None:
        bias = None if lepe_bias is None else lepe_bias.to(acc)
        out = out + lepe_forward(v, lepe_weight.to(acc), bias, c1, window_h, window_w)
    return out.to(qkv.dtype)
