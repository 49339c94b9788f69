"""FP16 export: the model in half precision with the accuracy-sensitive parts kept in float32.

TensorRT 11 builds strongly typed networks only, so an FP16 engine comes from an
FP16 graph. The graph takes and returns float32 (the file's I/O stays float32);
inside it, weights and activations are float16 except:

- every LayerNorm computes in float32 (statistics over channels),
- the final norm, the pooling after it and the classifier head stay in float32,
  so the logits are reduced and produced in float32,
- the attention op casts to float32 internally for its softmax sums and matrix
  products (the contract, and the ONNX function body, accumulate in float32).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class Float32LayerNorm(nn.Module):
    """LayerNorm computed in float32; returns the input's dtype, or float32 when ``float32_output``."""

    def __init__(self, norm: nn.LayerNorm, float32_output: bool = False) -> None:
        super().__init__()
        self.normalized_shape = norm.normalized_shape
        self.eps = norm.eps
        self.weight = None if norm.weight is None else nn.Parameter(norm.weight.detach().float())
        self.bias = None if norm.bias is None else nn.Parameter(norm.bias.detach().float())
        self.float32_output = float32_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)
        return y if self.float32_output else y.to(x.dtype)


class Float32Linear(nn.Module):
    """A Linear layer (the classifier head) computed in float32."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().float())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), self.weight, self.bias)


class HalfPrecisionModel(nn.Module):
    """float32 image in, float16 body, float32 output out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def _replace_layer_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.LayerNorm):
            setattr(module, name, Float32LayerNorm(child))
        else:
            _replace_layer_norms(child)


def to_half_precision(model: nn.Module) -> nn.Module:
    """A float16 copy of ``model`` for export (the original is left as it is)."""
    half = copy.deepcopy(model).float()
    final_norm = getattr(half, "norm", None)
    head = getattr(half, "head", None)
    half = half.half()
    _replace_layer_norms(half)
    if isinstance(final_norm, nn.LayerNorm):
        half.norm = Float32LayerNorm(final_norm.float(), float32_output=True)
    if isinstance(head, nn.Linear):
        half.head = Float32Linear(head.float())
    return HalfPrecisionModel(half).eval()
