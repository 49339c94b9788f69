"""The model-local ONNX function ``elfatt::ElfattAttention``: the op in standard ONNX ops.

One FunctionProto serves every node of a model: the per-node attributes (heads,
windows, scale) are read through attribute references (``ref_attr_name``), and
every size that depends on them or on the input (head dim, window counts,
padding) is computed as a tensor from ``Shape``, so one file runs at any H, W.

The body follows docs/op-spec.md:

- qkv is cast to float32; everything reduces in float32; the result is cast
  back to qkv's type (CastLike), so fp16/bf16 I/O accumulates in fp32.
- global heads: softmax(q) over channels, softmax(k) over tokens, q (k^T v).
- local heads: the grid is zero-padded to whole windows (0 = the whole axis),
  padded keys are masked out of the softmax, and the padding is cropped.
- LePE: a depthwise 3x3 as nine shifted multiply-adds (Conv would need the
  channel count as a static ``group`` attribute), over the whole grid for
  global channels and inside each window for local ones.

The body implements the contract's 3-input form (qkv, lepe_weight, lepe_bias);
the exporter writes every node in that form, passing zero weights for a layer
without LePE (the same output). A 1-input node cannot be served by a function
body in standard ONNX: a missing input cannot feed the ops that need the
weight, and the ways around it (LayerNormalization's optional bias, If on
OptionalHasElement) crash ONNX Runtime 1.32's optimizer or fail its type
inference. Such a node runs with the TensorRT plugin only.
"""

from __future__ import annotations

from typing import Optional, Sequence

import onnx
from onnx import AttributeProto, TensorProto, helper

DOMAIN = "elfatt"
OP_TYPE = "ElfattAttention"
#: Attributes of the node, in the contract's order; the plugin_* strings are
#: read by TensorRT's parser and ignored by the body.
INT_ATTRIBUTES = ("global_heads", "local_heads", "window_h", "window_w")
FLOAT_ATTRIBUTES = ("scale",)
STRING_ATTRIBUTES = ("plugin_version", "plugin_namespace")
MIN_OPSET = 18


class _Body:
    """Collects the nodes of the function body with generated value names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: Optional[str] = None, **attrs):
        self._count += 1
        base = name or f"{op_type.lower()}_{self._count}"
        outs = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def ints(self, values: Sequence[int], name: Optional[str] = None) -> str:
        tensor = helper.make_tensor("value", TensorProto.INT64, [len(values)], list(values))
        return self.op("Constant", value=tensor, name=name)

    def scalar_float(self, value: float) -> str:
        return self.op("Constant", value=helper.make_tensor("value", TensorProto.FLOAT, [], [value]))

    def attr_int(self, attr: str) -> str:
        """A [1] int64 tensor holding the node's integer attribute ``attr``."""
        node = helper.make_node("Constant", [], [f"attr_{attr}_scalar"])
        node.attribute.append(helper.make_attribute_ref("value_int", AttributeProto.INT))
        node.attribute[-1].ref_attr_name = attr
        self.nodes.append(node)
        return self.op("Unsqueeze", node.output[0], self.ints([0]), name=f"attr_{attr}")

    def attr_float(self, attr: str) -> str:
        node = helper.make_node("Constant", [], [f"attr_{attr}"])
        node.attribute.append(helper.make_attribute_ref("value_float", AttributeProto.FLOAT))
        node.attribute[-1].ref_attr_name = attr
        self.nodes.append(node)
        return node.output[0]

    def concat(self, *parts: str) -> str:
        return self.op("Concat", *parts, axis=0)

    def reshape(self, x: str, *dims: str) -> str:
        # allowzero: a head or channel count may legitimately be 0 (global-only / local-only ops)
        return self.op("Reshape", x, self.concat(*dims), allowzero=1)


def _depthwise3x3(b: _Body, x: str, taps: str, size_hw: str, axes_hw: str) -> str:
    """Depthwise 3x3 conv of x [N, h, w, c] with zero padding; taps [9, c] (row-major kernel)."""
    padded = b.op("Pad", x, b.ints([1, 1, 1, 1]), b.scalar_float(0.0), axes_hw)
    acc = None
    for r in range(3):
        for s in range(3):
            start = b.ints([r, s])
            window = b.op("Slice", padded, start, b.op("Add", size_hw, start), axes_hw)
            tap = b.op("Gather", taps, b.op("Constant", value_int=r * 3 + s), axis=0)
            term = b.op("Mul", window, tap)
            acc = term if acc is None else b.op("Add", acc, term)
    return acc


def build_function(opset: int) -> onnx.FunctionProto:
    """The FunctionProto for a model whose default-domain opset is ``opset`` (>= 18)."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset={opset}: the ElfattAttention function body needs ONNX opset >= {MIN_OPSET}")
    b = _Body()
    f32 = TensorProto.FLOAT
    zero, one = b.ints([0]), b.ints([1])
    last_axis, axes_hw = b.ints([-1]), b.ints([1, 2])

    # ---- sizes --------------------------------------------------------------
    gh, lh = b.attr_int("global_heads"), b.attr_int("local_heads")
    wh_attr, ww_attr = b.attr_int("window_h"), b.attr_int("window_w")
    scale_attr = b.attr_float("scale")
    batch = b.op("Shape", "qkv", start=0, end=1)
    height = b.op("Shape", "qkv", start=1, end=2)
    width = b.op("Shape", "qkv", start=2, end=3)
    channels = b.op("Div", b.op("Shape", "qkv", start=3, end=4), b.ints([3]))
    head_dim = b.op("Div", channels, b.op("Add", gh, lh))
    c1 = b.op("Mul", gh, head_dim)  # global channels [0, c1), local channels [c1, C)
    c2 = b.op("Sub", channels, c1)
    tokens = b.op("Mul", height, width)

    x = b.op("Cast", "qkv", to=f32)
    q, k, v = b.op("Split", x, axis=-1, num_outputs=3, outputs=3)

    def channel_slice(t: str, start: str, end: str) -> str:
        return b.op("Slice", t, start, end, last_axis)

    # ---- LePE weights: [C, 1, 3, 3] -> taps [9, C] in float32 ------------------
    taps = b.op("Transpose", b.reshape(b.op("Cast", "lepe_weight", to=f32), channels, b.ints([9])), perm=[1, 0])
    bias = b.op("Cast", "lepe_bias", to=f32)
    taps_g, taps_l = (b.op("Slice", taps, s, e, one) for s, e in ((zero, c1), (c1, channels)))
    bias_g, bias_l = (b.op("Slice", bias, s, e, zero) for s, e in ((zero, c1), (c1, channels)))

    # ---- global heads ---------------------------------------------------------
    qg, kg, vg = (b.reshape(channel_slice(t, zero, c1), batch, tokens, gh, head_dim) for t in (q, k, v))
    qg = b.op("Transpose", b.op("Softmax", qg, axis=-1), perm=[0, 2, 1, 3])  # [B, gh, N, d]
    kg = b.op("Transpose", b.op("Softmax", kg, axis=1), perm=[0, 2, 3, 1])  # [B, gh, d, N]
    vg = b.op("Transpose", vg, perm=[0, 2, 1, 3])  # [B, gh, N, d]
    context = b.op("MatMul", kg, vg)  # [B, gh, d, d]
    out_g = b.op("Transpose", b.op("MatMul", qg, context), perm=[0, 2, 1, 3])
    out_g = b.reshape(out_g, batch, height, width, c1)
    v_global = channel_slice(v, zero, c1)
    lepe_g = _depthwise3x3(b, v_global, taps_g, b.concat(height, width), axes_hw)
    out_g = b.op("Add", out_g, b.op("Add", lepe_g, bias_g))

    # ---- local heads: windows of wh x ww tokens, 0 = the whole axis -------------
    def window_size(attr: str, extent: str) -> str:
        whole = b.op("Equal", attr, zero)
        return b.op("Max", b.op("Where", whole, extent, b.op("Min", attr, extent)), one)

    wh, ww = window_size(wh_attr, height), window_size(ww_attr, width)
    nh = b.op("Div", b.op("Sub", b.op("Add", height, wh), one), wh)
    nw = b.op("Div", b.op("Sub", b.op("Add", width, ww), one), ww)
    height_p, width_p = b.op("Mul", nh, wh), b.op("Mul", nw, ww)
    pads = b.concat(zero, zero, b.op("Sub", height_p, height), b.op("Sub", width_p, width))
    n_windows, window_tokens = b.op("Mul", nh, nw), b.op("Mul", wh, ww)

    def padded(t: str) -> str:  # [B, H, W, c2] -> [B, Hp, Wp, c2], zeros in the padding
        return b.op("Pad", channel_slice(t, c1, channels), pads, b.scalar_float(0.0), axes_hw)

    def to_windows(t: str) -> str:  # [B, Hp, Wp, c2] -> [B, nWin, lh, T, d]
        t = b.reshape(t, batch, nh, wh, nw, ww, lh, head_dim)
        t = b.op("Transpose", t, perm=[0, 1, 3, 5, 2, 4, 6])
        return b.reshape(t, batch, n_windows, lh, window_tokens, head_dim)

    v_local = padded(v)
    ql, kl, vl = to_windows(padded(q)), to_windows(padded(k)), to_windows(v_local)
    scale_default = b.op("Div", b.scalar_float(1.0), b.op("Sqrt", b.op("Cast", head_dim, to=f32)))
    scale = b.op("Where", b.op("Equal", scale_attr, b.scalar_float(0.0)), scale_default, scale_attr)
    logits = b.op("Mul", b.op("MatMul", ql, b.op("Transpose", kl, perm=[0, 1, 2, 4, 3])), scale)

    # keys that are window padding get -inf; every window holds >= 1 real key
    rows = b.op("Range", b.op("Squeeze", zero), b.op("Squeeze", height_p), b.op("Squeeze", one))
    cols = b.op("Range", b.op("Squeeze", zero), b.op("Squeeze", width_p), b.op("Squeeze", one))
    valid = b.op("And", b.op("Unsqueeze", b.op("Less", rows, height), one),
                 b.op("Unsqueeze", b.op("Less", cols, width), zero))  # [Hp, Wp]
    valid = b.op("Transpose", b.reshape(valid, nh, wh, nw, ww), perm=[0, 2, 1, 3])
    valid = b.reshape(valid, one, n_windows, one, one, window_tokens)
    logits = b.op("Where", valid, logits, b.scalar_float(float("-inf")))
    out_l = b.op("MatMul", b.op("Softmax", logits, axis=-1), vl)  # [B, nWin, lh, T, d]
    out_l = b.reshape(out_l, batch, nh, nw, lh, wh, ww, head_dim)
    out_l = b.op("Transpose", out_l, perm=[0, 1, 4, 2, 5, 3, 6])  # [B, nh, wh, nw, ww, lh, d]
    out_l = b.reshape(out_l, batch, height_p, width_p, c2)

    # LePE inside each window: taps outside the window read zero
    v_win = b.reshape(v_local, batch, nh, wh, nw, ww, c2)
    v_win = b.op("Transpose", v_win, perm=[0, 1, 3, 2, 4, 5])
    v_win = b.reshape(v_win, b.op("Mul", batch, n_windows), wh, ww, c2)
    lepe_l = b.op("Add", _depthwise3x3(b, v_win, taps_l, b.concat(wh, ww), axes_hw), bias_l)
    lepe_l = b.op("Transpose", b.reshape(lepe_l, batch, nh, nw, wh, ww, c2), perm=[0, 1, 3, 2, 4, 5])
    out_l = b.op("Add", out_l, b.reshape(lepe_l, batch, height_p, width_p, c2))
    out_l = b.op("Slice", out_l, b.ints([0, 0]), b.concat(height, width), axes_hw)

    out = b.op("Concat", out_g, out_l, axis=-1)
    b.nodes.append(helper.make_node("CastLike", [out, "qkv"], ["out"]))
    return helper.make_function(
        DOMAIN, OP_TYPE, ["qkv", "lepe_weight", "lepe_bias"], ["out"], b.nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=list(INT_ATTRIBUTES + FLOAT_ATTRIBUTES + STRING_ATTRIBUTES),
        doc_string="ELFATT attention (contract v1, docs/op-spec.md) in standard ONNX ops; "
                   "TensorRT uses the ElfattAttention plugin instead.",
    )

