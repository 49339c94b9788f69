"""A deliberately simple float64 implementation of the op, written from the
contract text with explicit loops: the independent ground truth of the tests.
Shared by the tests of every binding (PyTorch, ONNX function body, ...)."""

from __future__ import annotations

import math

import numpy as np


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _windows(h: int, w: int, wh: int, ww: int):
    wh = h if wh == 0 else wh
    ww = w if ww == 0 else ww
    for r0 in range(0, h, wh):
        for c0 in range(0, w, ww):
            yield r0, min(r0 + wh, h), c0, min(c0 + ww, w)


def _dwconv_region(v: np.ndarray, weight: np.ndarray, r0, r1, c0, c1) -> np.ndarray:
    """Depthwise 3x3 conv of v[r0:r1, c0:c1, ch] where taps outside the region read zero."""
    out = np.zeros((r1 - r0, c1 - c0, v.shape[-1]))
    for r in range(r0, r1):
        for c in range(c0, c1):
            acc = np.zeros(v.shape[-1])
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if r0 <= rr < r1 and c0 <= cc < c1:
                        acc += weight[:, 0, dr + 1, dc + 1] * v[rr, cc]
            out[r - r0, c - c0] = acc
    return out


def naive_elfatt(qkv, lepe_weight=None, lepe_bias=None, *, global_heads, local_heads,
                 window_h=0, window_w=0, scale=0.0) -> np.ndarray:
    qkv = np.asarray(qkv, dtype=np.float64)
    b, h, w, c3 = qkv.shape
    c = c3 // 3
    heads = global_heads + local_heads
    d = c // heads
    scale = scale if scale != 0.0 else 1.0 / math.sqrt(d)
    out = np.zeros((b, h, w, c))
    for bi in range(b):
        q_all, k_all, v_all = qkv[bi, :, :, :c], qkv[bi, :, :, c:2 * c], qkv[bi, :, :, 2 * c:]
        for head in range(heads):
            ch = slice(head * d, (head + 1) * d)
            q, k, v = q_all[:, :, ch], k_all[:, :, ch], v_all[:, :, ch]
            if head < global_heads:
                qs = _softmax(q.reshape(h * w, d), axis=1)
                ks = _softmax(k.reshape(h * w, d), axis=0)
                ctx = ks.T @ v.reshape(h * w, d)
                o = (qs @ ctx).reshape(h, w, d)
                if lepe_weight is not None:
                    o = o + _dwconv_region(v, np.asarray(lepe_weight, np.float64)[ch], 0, h, 0, w)
                out[bi, :, :, ch] = o
            else:
                for r0, r1, c0, c1 in _windows(h, w, window_h, window_w):
                    n = (r1 - r0) * (c1 - c0)
                    qw = q[r0:r1, c0:c1].reshape(n, d)
                    kw = k[r0:r1, c0:c1].reshape(n, d)
                    vw = v[r0:r1, c0:c1].reshape(n, d)
                    o = (_softmax(scale * qw @ kw.T, axis=1) @ vw).reshape(r1 - r0, c1 - c0, d)
                    if lepe_weight is not None:
                        o = o + _dwconv_region(v, np.asarray(lepe_weight, np.float64)[ch], r0, r1, c0, c1)
                    out[bi, r0:r1, c0:c1, ch] = o
    if lepe_weight is not None and lepe_bias is not None:
        out = out + np.asarray(lepe_bias, np.float64)
    return out


def rel_l2(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300))
