"""Pre-norm transformer block on [B, H, W, C] token grids."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .attention import ElfattAttention


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        global_heads: Optional[int] = None,
        window: Sequence[int] = (7, 7),
        mlp_ratio: float = 4.0,
        lepe: bool = True,
        qkv_bias: bool = True,
        attention: str = "elfatt",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ElfattAttention(dim, num_heads, global_heads=global_heads, window=window, lepe=lepe,
                                    qkv_bias=qkv_bias, attention=attention)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
