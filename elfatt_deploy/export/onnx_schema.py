"""The ONNX OpSchema of ``elfatt::ElfattAttention`` v1, with type and shape inference.

Registering it lets ``onnx.checker.check_model(full_check=True)`` check our nodes
and ``onnx.shape_inference.infer_shapes`` give their output type and shape
(also in plugin-only files, which carry no function body), and lets the
exporter's onnxscript tracer emit the node. The inference applies the
contract's rules (spec.py) to whatever the input shapes make known.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, defs, helper

from ..engine.compat import version_parts
from ..errors import MissingDependencyError
from ..op.spec import ElfattAttrs, check_channels, check_qkv_channels
from .onnx_function import DOMAIN, FLOAT_ATTRIBUTES, INT_ATTRIBUTES, OP_TYPE, STRING_ATTRIBUTES

OP_SET_VERSION = 1
ALLOWED_TYPES = ("tensor(float)", "tensor(float16)", "tensor(bfloat16)")
_ALLOWED_ELEM_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)


def _attribute_value(ctx, name: str, default=None):
    attr = ctx.get_attribute(name)
    return default if attr is None else helper.get_attribute_value(attr)


def _infer(ctx) -> None:
    """Output: same element type as qkv, shape [B, H, W, C] with C = qkv's last dim / 3."""
    attrs = ElfattAttrs(**{n: int(_attribute_value(ctx, n, 0)) for n in INT_ATTRIBUTES},
                        scale=float(_attribute_value(ctx, "scale", 0.0)))
    qkv_type = ctx.get_input_type(0)
    if qkv_type is None or not qkv_type.HasField("tensor_type"):
        return
    elem_type = qkv_type.tensor_type.elem_type
    if elem_type and elem_type not in _ALLOWED_ELEM_TYPES:
        raise ValueError(f"ElfattAttention: qkv type {TensorProto.DataType.Name(elem_type)} is not supported; "
                         "use float, float16 or bfloat16")
    out = onnx.TypeProto()
    out.tensor_type.elem_type = elem_type
    if qkv_type.tensor_type.HasField("shape"):
        dims = list(qkv_type.tensor_type.shape.dim)
        if len(dims) != 4:
            raise ValueError(f"ElfattAttention: qkv has rank {len(dims)}; it must be 4-D [B, H, W, 3C]")
        for dim in dims[:3]:
            out.tensor_type.shape.dim.add().CopyFrom(dim)
        last = out.tensor_type.shape.dim.add()
        if dims[3].HasField("dim_value"):
            channels = check_qkv_channels(dims[3].dim_value)
            check_channels(channels, attrs.global_heads, attrs.local_heads)
            last.dim_value = channels
    ctx.set_output_type(0, out)


def _make_schema() -> defs.OpSchema:
    S = defs.OpSchema
    optional = S.FormalParameterOption.Optional
    attributes = [S.Attribute(n, S.AttrType.INT, "see docs/op-spec.md") for n in INT_ATTRIBUTES]
    attributes += [S.Attribute(n, S.AttrType.FLOAT, "0 means 1/sqrt(d)") for n in FLOAT_ATTRIBUTES]
    attributes += [S.Attribute(n, S.AttrType.STRING, "read by TensorRT's ONNX parser", required=False)
                   for n in STRING_ATTRIBUTES]
    schema = S(
        OP_TYPE, DOMAIN, OP_SET_VERSION,
        "ELFATT attention: global linear heads and local block heads with LePE (docs/op-spec.md, contract v1).",
        inputs=[
            S.FormalParameter("qkv", "T", "[B, H, W, 3C], channels [q | k | v]"),
            S.FormalParameter("lepe_weight", "T", "[C, 1, 3, 3] depthwise kernel", param_option=optional),
            S.FormalParameter("lepe_bias", "T", "[C]", param_option=optional),
        ],
        outputs=[S.FormalParameter("out", "T", "[B, H, W, C]")],
        type_constraints=[("T", list(ALLOWED_TYPES), "float32, float16 or bfloat16; reductions run in float32")],
        attributes=attributes,
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


#: The oldest onnx whose OpSchema takes a Python inference function and survives interpreter exit with
#: one registered (1.17-1.18 have no set_type_and_shape_inference_function, 1.19 hangs at exit, 1.20-1.22
#: crash there); pyproject.toml requires it too.
MIN_ONNX = (1, 23)


def _check_onnx_version() -> None:
    if version_parts(onnx.__version__)[:2] < MIN_ONNX:
        wanted = ".".join(map(str, MIN_ONNX))
        raise MissingDependencyError(
            f"onnx {onnx.__version__} is too old: elfatt-deploy needs onnx >= {wanted} "
            f"(its op schema's shape inference); upgrade it with: python3 -m pip install -U \"onnx>={wanted}\"")


def register_schema() -> None:
    """Registers the schema once per process (safe to call many times)."""
    _check_onnx_version()
    try:
        defs.get_schema(OP_TYPE, OP_SET_VERSION, DOMAIN)
        return
    except defs.SchemaError:
        defs.register_schema(_make_schema())
