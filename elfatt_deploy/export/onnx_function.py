"""The model-local ONNX function ``elfatt::ElfattAttention``: the op in standard ONNX ops.

The body follows docs/op-spec.md:

- qkv is cast to float32; everything reduces in float32; the result is cast
  back to qkv's type (CastLike), so fp16/bf16 I/O accumulates in fp32.
- global heads: k goes channel-major ([B, c1, N], one transpose that moves the
  token axis inwards), so the softmax of k over the tokens is one ``Softmax``
  along the innermost axis and k'^T v a plain MatMul of [B, gh, d, N] by v
  head-major [B, gh, N, d]; q head-major [B, gh, N, d], its softmax over the
  head's channels, then q' ctx per head (the op's FLOPs, no more). The LePE Conv
  reads v channel-first (ONNX Runtime: its channels-last reorders).
- local heads: the grid is zero-padded to whole windows (0 = the whole axis;
  the window geometry is computed on [H, W] as one [2] tensor), q and k are cut
  into windows token-major, v window-major with its channels innermost (the
  LePE's channels-last images, and with the heads split off the right-hand side
  of P v); the windows stay two batch axes [B, nh, nw, ...], so every reshape
  that merges or splits them has a constant target; padded keys get an additive
  bias of -inf ([nh, nw, 1, 1, T]: zeros of the grid padded with -inf, all zeros
  when no window is partial, so an exact grid pays one Add and no Where); P v
  plus the LePE conv of the windows, then the windows go back to the grid and
  the padding is cropped. No transpose moves the head dim d or the channels off
  the innermost axis, except k's for the global heads.
- LePE: one depthwise 3x3 ``Conv`` per part (with the LePE bias as its bias):
  over the whole grid for the global channels, over each window (the windows as
  a batch, zero padding = taps outside the window read zero) for the local ones.
- reshape targets are constants (0 = keep the dim, -1 = the tokens), ``Shape``
  of a tensor of the wanted shape, or built once per layer from the geometry.

**One function per channel layout (ONNX function overloads).** ``Conv``'s
``group`` must be a static attribute, and the node has no channel-count
attribute, so one body cannot serve every layer. Each distinct (C, global_heads,
local_heads) of a model gets its own FunctionProto with that layout baked in
(``group``, head dim, channel split), told apart by ``overload``
(:func:`overload_name`, IR >= 10); every node names its overload. The node's
op type, domain and attributes are unchanged (TensorRT's parser matches the op
type; ``engine/onnx_prep.py`` gives each overload its own name on the no-plugin
path, since the parser keys local functions by name). Window sizes and scale
still come in by attribute reference (``ref_attr_name``) and H, W, B from
``Shape``, so one file runs at any H, W and one function serves the row- and
column-stripe layers of a stage. Tools that drop ``overload`` (onnx-graphsurgeon
0.6.1) break a file with two or more overloads; use the ``--inline`` form there.

**Shape transparency.** Third-party shape inference of a model-local function
(``onnx.shape_inference``, which ``onnxruntime.tools.symbolic_shape_infer`` runs
for our node) propagates no data, so any Reshape, Pad or Slice with a computed
target loses its dims. The output is therefore assembled so that plain shape
inference sees it: each part ends in a Reshape with a constant ``[0, 0, 0, c]``
target, and the final Concat starts with a zero-width slice of the input
(``[B, H, W, 0]``, no data), from which Concat takes B, H, W. Inside, every
shape is computed with Shape + Slice (no ``Shape(start, end)``), Concat and
integer arithmetic, which data-propagating tools (the inlined form) follow.

The body implements the contract's 3-input form (qkv, lepe_weight, lepe_bias);
the exporter writes every node in that form, passing zero weights for a layer
without LePE (the same output). A 1-input node cannot be served by a function
body in standard ONNX: a missing input cannot feed the ops that need the
weight, and the ways around it (LayerNormalization's optional bias, If on
OptionalHasElement) crash ONNX Runtime 1.32's optimizer or fail its type
inference. Such a node runs with the TensorRT plugin only.
"""

from __future__ import annotations

from dataclasses import dataclass
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
#: function overloads need IR version 10 (ONNX 1.16)
MIN_IR_VERSION = 10


@dataclass(frozen=True)
class ChannelLayout:
    """What one function body bakes in: the channel count C and the head split."""

    channels: int
    global_heads: int
    local_heads: int

    def __post_init__(self) -> None:
        from ..op.spec import check_channels, validate_attrs  # noqa: PLC0415

        validate_attrs(self.global_heads, self.local_heads, 0, 0, 0.0)
        if not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"channels={self.channels!r} must be a positive int (C, qkv's last dim / 3)")
        check_channels(self.channels, self.global_heads, self.local_heads)

    @property
    def head_dim(self) -> int:
        return self.channels // (self.global_heads + self.local_heads)

    @property
    def global_channels(self) -> int:
        return self.global_heads * self.head_dim

    @property
    def local_channels(self) -> int:
        return self.local_heads * self.head_dim


def overload_name(layout: ChannelLayout) -> str:
    """The ``overload`` of the function for ``layout``, e.g. ``c384_g3_l3``."""
    return f"c{layout.channels}_g{layout.global_heads}_l{layout.local_heads}"


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



def _depthwise3x3(b: _Body, image: str, weight: str, bias: str, channels: int) -> str:
    """Depthwise 3x3 Conv of image [N, c, h, w] with zero padding; weight [c, 1, 3, 3], bias [c]."""
    return b.op("Conv", image, weight, bias, group=channels, kernel_shape=[3, 3], pads=[1, 1, 1, 1])


def _swap_last(b: _Body, x: str, rank: int) -> str:
    """x with its last two axes swapped (ONNX Runtime folds this into the MatMul that reads it)."""
    return b.op("Transpose", x, perm=list(range(rank - 2)) + [rank - 1, rank - 2])


def _global_heads(b: _Body, qkv: Sequence[str], weight: str, bias: str, layout: ChannelLayout) -> str:
    """Global heads of (q, k, v), each [B, H, W, c1] -> [B, H, W, c1] (LePE included).

    k goes channel-major ([B, c1, N]: one transpose that moves the token axis inwards), so the k-softmax over
    the tokens is one ``Softmax`` along the innermost axis, and ``k'^T v`` is a plain MatMul of [B, gh, d, N] by
    v head-major [B, gh, N, d]. q head-major, softmax over its d channels, ``q' ctx`` per head: the body does the
    op's 4 N d c1 FLOPs. Only the LePE Conv reads v channel-first (ONNX Runtime: its channels-last reorders).
    """
    gh, d, c1 = layout.global_heads, layout.head_dim, layout.global_channels
    q, k, v = qkv
    # every reshape target is a constant (0 = keep that dim, -1 = the tokens): no shape arithmetic at run time
    heads = b.ints([0, -1, gh, d])

    def head_major(t: str) -> str:  # [B, H, W, c1] -> [B, gh, N, d]
        return b.op("Transpose", b.op("Reshape", t, heads), perm=[0, 2, 1, 3])

    k = b.op("Transpose", b.op("Reshape", k, b.ints([0, -1, c1])), perm=[0, 2, 1])  # [B, c1, N]
    k = b.op("Reshape", b.op("Softmax", k, axis=-1), b.ints([0, gh, d, -1]))  # [B, gh, d, N]: softmax_N(k)
    context = b.op("MatMul", k, head_major(v))  # [B, gh, d (k), d (v)] = k'^T v
    q = b.op("Softmax", head_major(q), axis=-1)  # [B, gh, N, d]: over each token's channels, per head
    out = b.op("Transpose", b.op("MatMul", q, context), perm=[0, 2, 1, 3])  # [B, N, gh, d] = q' ctx
    out = b.op("Reshape", out, b.op("Shape", v))  # [B, H, W, c1]
    lepe = b.op("Transpose", _depthwise3x3(b, b.op("Transpose", v, perm=[0, 3, 1, 2]), weight, bias, c1),
                perm=[0, 2, 3, 1])  # the Conv reads v channel-first (ONNX Runtime: its channels-last reorders)
    return b.op("Reshape", b.op("Add", out, lepe), b.ints([0, 0, 0, c1]))


def _window_geometry(b: _Body, grid: str) -> dict:
    """The windows of the grid ``[H, W]`` ([2] int64), both axes at once (every value a [2] or [4] tensor):
    ``size`` [wh, ww] (the attribute, 0 = the whole axis; never larger than the axis, at least 1), ``count``
    [nh, nw], ``ends`` [Hp - H, Wp - W] (the zero padding to whole windows) and ``split`` [nh, wh, nw, ww]."""
    window = b.concat(b.attr_int("window_h"), b.attr_int("window_w"))  # a constant once the function is inlined
    one = b.ints([1])
    # 0 (the whole axis) as 2^31 - 1 (more than any axis; fits int32 shape tensors), so that size = min(window, max(H, 1)) with no Where on the grid
    # (the Equal / Where on the constant window fold away once the function is inlined); an empty axis gets
    # windows of 1 and a count of 0
    unbounded = b.op("Where", b.op("Equal", window, b.ints([0])), b.ints([2 ** 31 - 1]), window)
    size = b.op("Min", unbounded, b.op("Max", grid, one))
    count = b.op("Div", b.op("Sub", b.op("Add", grid, size), one), size)
    return {"size": size, "count": count, "ends": b.op("Sub", b.op("Mul", count, size), grid),
            "split": b.op("Gather", b.concat(count, size), b.ints([0, 2, 1, 3]), axis=0)}  # [nh, wh, nw, ww]


def _key_bias(b: _Body, grid: str, geometry: dict) -> str:
    """[nh, nw, 1, 1, T] float: 0 for the window slots that hold a token, -inf for the padding (zeros of the
    grid's shape padded with -inf, cut into windows like the tokens)."""
    zeros = b.op("ConstantOfShape", grid, value=helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0]))
    padded = b.op("Pad", zeros, b.concat(b.ints([0, 0]), geometry["ends"]), b.scalar_float(float("-inf")))
    windows = b.op("Transpose", b.op("Reshape", padded, geometry["split"]), perm=[0, 2, 1, 3])  # [nh, nw, wh, ww]
    return b.op("Reshape", windows, b.ints([0, 0, 1, 1, -1]))


def _local_heads(b: _Body, qkv: Sequence[str], weight: str, bias: str, layout: ChannelLayout, grid: str) -> str:
    """Local heads of (q, k, v), each [B, H, W, c2] -> [B, H, W, c2] (LePE included); grid = [H, W].

    The windows are kept as two batch axes [B, nh, nw, ...] (T = wh ww tokens each), so that every reshape that
    merges or splits the window axes has a constant target (0 = keep that dim, -1 = the tokens)."""
    lh, d, c2 = layout.local_heads, layout.head_dim, layout.local_channels
    geometry = _window_geometry(b, grid)
    size = geometry["size"]
    pads = b.concat(b.ints([0, 0, 0, 0, 0]), geometry["ends"], b.ints([0]))  # rank 4: begins, then ends; zeros
    q, k, v = (b.op("Pad", t, pads) for t in qkv)  # [B, Hp, Wp, c2]
    padded_shape = b.op("Shape", v)
    split = geometry["split"]
    grid_windows = b.concat(b.ints([0]), split, b.ints([c2]))  # [B, nh, wh, nw, ww, c2]
    grid_heads = b.concat(b.ints([0]), split, b.ints([lh, d]))  # [B, nh, wh, nw, ww, lh, d]
    tokens_heads = b.ints([0, 0, 0, 0, -1, d])  # [B, nh, nw, lh, wh, ww, d] -> [B, nh, nw, lh, T, d]

    def token_major_windows(t: str) -> str:  # [B, Hp, Wp, c2] -> [B, nh, nw, lh, T, d]
        t = b.op("Transpose", b.op("Reshape", t, grid_heads), perm=[0, 1, 3, 5, 2, 4, 6])
        return b.op("Reshape", t, tokens_heads)

    q, k = token_major_windows(q), token_major_windows(k)
    # v window-major with its channels innermost ([B, nh, nw, wh, ww, c2]: rows of c2 move whole): the LePE's
    # input as channels-last images and, with the heads split off, the right-hand side of P v
    v = b.op("Transpose", b.op("Reshape", v, grid_windows), perm=[0, 1, 3, 2, 4, 5])
    v_heads = b.op("Transpose", b.op("Reshape", v, b.ints([0, 0, 0, -1, lh, d])),
                   perm=[0, 1, 2, 4, 3, 5])  # [B, nh, nw, lh, T, d]

    scale_attr = b.attr_float("scale")
    scale = b.op("Where", b.op("Equal", scale_attr, b.scalar_float(0.0)), b.scalar_float(d ** -0.5), scale_attr)
    logits = b.op("MatMul", b.op("Mul", q, scale), _swap_last(b, k, 6))  # [B, nh, nw, lh, T, T]
    logits = b.op("Add", logits, _key_bias(b, grid, geometry))
    probs = b.op("Softmax", logits, axis=-1)  # every window holds >= 1 real key: no NaN
    out = b.op("MatMul", probs, v_heads)  # [B, nh, nw, lh, T, d]
    out = b.op("Transpose", b.op("Reshape", out, b.concat(b.ints([0, 0, 0, 0]), size, b.ints([d]))),
               perm=[0, 1, 4, 2, 5, 3, 6])  # [B, nh, wh, nw, ww, lh, d]

    # the windows as a batch of channels-last images; the Conv reads them channel-first (ONNX Runtime turns the
    # two Transposes around the Conv into its channels-last reorders)
    images = b.op("Reshape", v, b.concat(b.ints([-1]), size, b.ints([c2])))  # [B nh nw, wh, ww, c2]
    lepe = b.op("Transpose", _depthwise3x3(b, b.op("Transpose", images, perm=[0, 3, 1, 2]), weight, bias, c2),
                perm=[0, 2, 3, 1])
    lepe = b.op("Transpose", b.op("Reshape", lepe, b.op("Shape", v)), perm=[0, 1, 3, 2, 4, 5])  # [B, nh, wh, nw, ww, c2]
    out = b.op("Add", b.op("Reshape", out, b.ints([0, 0, 0, 0, 0, c2])), lepe)
    out = b.op("Reshape", out, padded_shape)  # [B, Hp, Wp, c2]
    out = b.op("Slice", out, b.ints([0, 0]), grid, b.ints([1, 2]))  # crop the padding
    # the same shape twice, for two kinds of shape inference: from the data (symbolic_shape_infer on the inlined
    # form cannot prove height <= padded height at the Slice) and from a constant (plain ONNX inference)
    out = b.op("Reshape", out, b.op("Shape", qkv[0]))
    return b.op("Reshape", out, b.ints([0, 0, 0, c2]))


def build_function(opset: int, layout: ChannelLayout) -> onnx.FunctionProto:
    """The FunctionProto for nodes of ``layout`` in a model whose default-domain opset is ``opset`` (>= 18)."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset={opset}: the ElfattAttention function body needs ONNX opset >= {MIN_OPSET}")
    b = _Body()
    f32 = TensorProto.FLOAT
    c, c1, c2 = layout.channels, layout.global_channels, layout.local_channels

    grid = b.op("Slice", b.op("Shape", "qkv"), b.ints([1]), b.ints([3]), name="grid")  # [H, W]

    x = b.op("Cast", "qkv", to=f32)
    # [B, H, W, 0] (no data) first in the output Concat: its shape inference takes B, H, W from it
    parts = [b.op("Slice", x, b.ints([0]), b.ints([0]), b.ints([3]), name="shape_carrier")]
    # one Split of qkv [B, H, W, 3C] into q, k, v of each part (the only copy of qkv the body makes)
    sizes = [n for n in (c1, c2) if n] * 3
    pieces = b.op("Split", x, b.ints(sizes), axis=3, outputs=len(sizes))
    per_part = len(sizes) // 3
    qkv_g = pieces[0::per_part] if c1 else None  # (q, k, v) of the global channels
    qkv_l = pieces[per_part - 1::per_part] if c2 else None
    weight, bias = b.op("Cast", "lepe_weight", to=f32), b.op("Cast", "lepe_bias", to=f32)
    if c1 and c2:
        weight_g, weight_l = b.op("Split", weight, b.ints([c1, c2]), axis=0, outputs=2)
        bias_g, bias_l = b.op("Split", bias, b.ints([c1, c2]), axis=0, outputs=2)
    else:
        weight_g = weight_l = weight
        bias_g = bias_l = bias

    if c1:
        parts.append(_global_heads(b, qkv_g, weight_g, bias_g, layout))
    if c2:
        parts.append(_local_heads(b, qkv_l, weight_l, bias_l, layout, grid))
    out = b.op("Concat", *parts, axis=-1)
    b.nodes.append(helper.make_node("CastLike", [out, "qkv"], ["out"]))
    function = helper.make_function(
        DOMAIN, OP_TYPE, ["qkv", "lepe_weight", "lepe_bias"], ["out"], b.nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=list(INT_ATTRIBUTES + FLOAT_ATTRIBUTES + STRING_ATTRIBUTES),
        doc_string=f"ELFATT attention (contract v1, docs/op-spec.md) in standard ONNX ops for C={c}, "
                   f"{layout.global_heads} global + {layout.local_heads} local heads; "
                   "TensorRT uses the ElfattAttention plugin instead.",
    )
    function.overload = overload_name(layout)
    return function


def _initializer_dims(model: onnx.ModelProto, name: str) -> Optional[list]:
    for tensor in model.graph.initializer:
        if tensor.name == name:
            return list(tensor.dims)
    for node in model.graph.node:
        if node.op_type == "Constant" and name in node.output:
            for attribute in node.attribute:
                if attribute.name == "value":
                    return list(attribute.t.dims)
    return None


def _value_dims(infos, name: str) -> Optional[list]:
    for info in infos:
        if info.name == name and info.type.tensor_type.HasField("shape"):
            return [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
    return None


def node_layout(model: onnx.ModelProto, node: onnx.NodeProto, inferred: Optional[onnx.ModelProto] = None) -> ChannelLayout:
    """The channel layout of an ElfattAttention node of ``model``: its heads and C, from the LePE weight's
    first dim (an initializer or Constant) or else qkv's last dim / 3 (from shape inference)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    heads = (int(attrs.get("global_heads", 0)), int(attrs.get("local_heads", 0)))
    channels = None
    if len(node.input) > 1 and node.input[1]:
        dims = _initializer_dims(model, node.input[1])
        channels = dims[0] if dims else None
    if channels is None:
        inferred = inferred or onnx.shape_inference.infer_shapes(model)
        infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
        qkv = _value_dims(infos, node.input[0])
        if qkv and len(qkv) == 4 and qkv[3]:
            channels = qkv[3] // 3
        elif len(node.input) > 1 and node.input[1]:
            weight = _value_dims(infos, node.input[1])
            channels = weight[0] if weight else None
    if not channels:
        raise ValueError(f"node {node.name!r}: cannot tell its channel count C (no static last dim of qkv "
                         f"{node.input[0]!r} and no constant lepe_weight); the function body needs it")
    return ChannelLayout(int(channels), *heads)


def attach_functions(model: onnx.ModelProto, opset: Optional[int] = None) -> list[onnx.FunctionProto]:
    """Gives ``model`` (in place) one ElfattAttention function per distinct channel layout of its nodes, each
    node naming its overload; replaces any elfatt function it had. Returns the functions attached.

    ``opset``: the function's default-domain opset (default: the model's). Raises the IR version to
    :data:`MIN_IR_VERSION` when it is lower (overloads need it).
    """
    if opset is None:
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    keep = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(keep)
    nodes = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]
    inferred = None
    functions: dict[ChannelLayout, onnx.FunctionProto] = {}
    for node in nodes:
        try:
            layout = node_layout(model, node, inferred)
        except ValueError:
            if inferred is not None:
                raise
            inferred = onnx.shape_inference.infer_shapes(model)
            layout = node_layout(model, node, inferred)
        if layout not in functions:
            functions[layout] = build_function(opset, layout)
        node.overload = functions[layout].overload
    model.functions.extend(functions.values())
    if functions and model.ir_version < MIN_IR_VERSION:
        model.ir_version = MIN_IR_VERSION
    return list(functions.values())
