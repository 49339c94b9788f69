"""Hierarchical ELFATT backbone in the CSWin-T shape.

Conv stem (stride 4), four stages of dim 64/128/256/512, depths 1/2/21/1,
heads 2/4/8/16. Local heads attend inside stripes of 1/2/7/7 rows (or columns),
alternating horizontal and vertical stripes between blocks; global heads run
in every block. ``forward_features`` returns the four stage maps (NCHW).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..nn import TransformerBlock
from .padding import pad_to_multiple


class ConvDownsample(nn.Module):
    """Conv (NCHW) then LayerNorm over channels; returns [B, H, W, C]."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(out_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


def stripe_window(stripe: int, block_index: int) -> tuple[int, int]:
    """Horizontal stripes (rows) for even blocks, vertical stripes (columns) for odd ones."""
    return (stripe, 0) if block_index % 2 == 0 else (0, stripe)


class ElfattCSWin(nn.Module):
    def __init__(
        self,
        *,
        dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (1, 2, 21, 1),
        heads: Sequence[int] = (2, 4, 8, 16),
        stripes: Sequence[int] = (1, 2, 7, 7),
        global_heads: Optional[Sequence[int]] = None,
        in_chans: int = 3,
        num_classes: int = 1000,
        mlp_ratio: float = 4.0,
        lepe: bool = True,
        attention: str = "elfatt",
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes={num_classes!r} must be an integer >= 0 (0: no classifier head, the model "
                             "outputs features)")
        lengths = {len(dims), len(depths), len(heads), len(stripes)}
        if len(lengths) != 1:
            raise ValueError(f"dims, depths, heads and stripes must have the same length, got {dims}, {depths}, {heads}, {stripes}")
        if global_heads is not None and len(global_heads) != len(dims):
            raise ValueError(f"global_heads={global_heads} must give one count per stage ({len(dims)})")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.stem = ConvDownsample(in_chans, dims[0], 7, 4, 2)
        self.downsamples = nn.ModuleList(ConvDownsample(dims[i], dims[i + 1], 3, 2, 1) for i in range(len(dims) - 1))
        self.stages = nn.ModuleList()
        for s, (dim, depth, nh, stripe) in enumerate(zip(dims, depths, heads, stripes)):
            gh = None if global_heads is None else global_heads[s]
            self.stages.append(nn.ModuleList(
                TransformerBlock(dim, nh, global_heads=gh, window=stripe_window(stripe, i), mlp_ratio=mlp_ratio,
                                 lepe=lepe, attention=attention)
                for i in range(depth)
            ))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()

    def _run(self, x: torch.Tensor, collect: bool):
        maps = []
        # Zero-pad the image to a multiple of the stem stride: stage maps are
        # ceil(H/4), ceil(H/8), ... and every size from 1x1 up works.
        s = self.stem.conv.stride[0]
        x = pad_to_multiple(x, s)
        x = self.stem(x)
        for s, blocks in enumerate(self.stages):
            if s > 0:
                x = self.downsamples[s - 1](x.permute(0, 3, 1, 2))
            for block in blocks:
                x = block(x)
            if collect:
                maps.append(x.permute(0, 3, 1, 2))
        return x, maps

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, H, W] -> four NCHW maps at strides 4, 8, 16, 32 for dense tasks."""
        return self._run(x, collect=True)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._run(x, collect=False)
        return self.head(self.norm(x).mean(dim=(1, 2)))
