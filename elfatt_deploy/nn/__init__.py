"""Neural-network modules built on the ElfattAttention op."""

from .attention import ATTENTION_KINDS, ElfattAttention, default_global_heads
from .blocks import Mlp, TransformerBlock

__all__ = ["ATTENTION_KINDS", "ElfattAttention", "default_global_heads", "Mlp", "TransformerBlock"]
