"""Translation of ``torch.ops.elfatt.attention`` into one ``elfatt::ElfattAttention`` node.

The exporter's onnxscript tracer emits a bare node in the ``elfatt`` domain
because the op's OpSchema is registered (onnx_schema.py); an onnxscript
*function* would be inlined into standard ops instead, which is not what
TensorRT needs. The function body is attached to the model afterwards.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxscript
from onnxscript import opset18 as op

from .._version import OP_VERSION
from ..op.spec import ElfattAttrs
from .onnx_function import DOMAIN
from .onnx_schema import OP_SET_VERSION, register_schema

_elfatt = onnxscript.values.Opset(DOMAIN, OP_SET_VERSION)


def _zeros(shape, dtype: ir.DataType):
    array = np.zeros(shape, dtype=dtype.numpy())
    return op.Constant(value=ir.tensor(array))


def elfatt_attention_to_onnx(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    """Custom translation for ``torch.ops.elfatt.attention.default`` (torch.onnx.export, dynamo=True).

    Every node gets the contract's 3-input form: a layer without LePE passes a
    zero kernel and bias, which gives the same output (see onnx_function.py).
    """
    attrs = ElfattAttrs(int(global_heads), int(local_heads), int(window_h), int(window_w), float(scale))
    if lepe_weight is None:
        channels = qkv.shape[-1] // 3
        lepe_weight = _zeros((channels, 1, 3, 3), qkv.dtype)
        lepe_bias = _zeros((channels,), qkv.dtype)
    elif lepe_bias is None:
        lepe_bias = _zeros((lepe_weight.shape[0],), qkv.dtype)
    return _elfatt.ElfattAttention(
        qkv, lepe_weight, lepe_bias,
        global_heads=attrs.global_heads, local_heads=attrs.local_heads,
        window_h=attrs.window_h, window_w=attrs.window_w, scale=attrs.scale,
        plugin_version=OP_VERSION, plugin_namespace="",
    )


def custom_translation_table() -> dict:
    """The ``custom_translation_table`` argument for ``torch.onnx.export``."""
    import torch

    from .. import op as _op  # noqa: F401  (registers torch.ops.elfatt.attention)

    register_schema()
    return {torch.ops.elfatt.attention.default: elfatt_attention_to_onnx}
