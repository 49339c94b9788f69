"""Isotropic ELFATT ViT: patch 16, no class token, global-average-pool head, any input size."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..nn import TransformerBlock
from .padding import pad_to_multiple
from .resample import resize_bicubic_channels_last


class ElfattViT(nn.Module):
    def __init__(
        self,
        *,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        global_heads: Optional[int] = None,
        window: Sequence[int] = (7, 7),
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        img_size: int = 224,
        mlp_ratio: float = 4.0,
        lepe: bool = True,
        attention: str = "elfatt",
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes={num_classes!r} must be an integer >= 0 (0: no classifier head, the model "
                             "outputs features)")
        if img_size % patch_size != 0:
            raise ValueError(f"img_size={img_size} must be a multiple of patch_size={patch_size}")
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        grid = img_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, global_heads=global_heads, window=window, mlp_ratio=mlp_ratio,
                             lepe=lepe, attention=attention)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The table resampled to the token grid, [1, h, w, C]: ``F.interpolate(mode="bicubic")`` as two
        matrix products (resample.py), always (at the table's own size it is the identity), so that a
        dynamic export has no branch on the input size and a static one folds it to a constant."""
        return resize_bicubic_channels_last(self.pos_embed, h, w)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] image -> [B, ceil(H/16), ceil(W/16), C] tokens after the final norm.

        The image is zero-padded at the bottom and right to whole patches, so
        every size from 1x1 up works (and a dynamic ONNX export runs at any size).
        """
        x = self.patch_embed(pad_to_multiple(x, self.patch_size))
        x = x.permute(0, 2, 3, 1)
        x = x + self._pos_embed(x.shape[1], x.shape[2])
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(1, 2)))
