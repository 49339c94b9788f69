"""ElfattAttention layer: qkv Linear -> elfatt::attention -> proj Linear, on [B, H, W, C] tokens."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..op import elfatt_attention
from ..op.spec import ElfattAttrs, check_channels, window_pair

ATTENTION_KINDS = ("elfatt", "vanilla")


def default_global_heads(num_heads: int) -> int:
    """Half the heads (rounded down) are global; the rest are local."""
    return num_heads // 2


class ElfattAttention(nn.Module):
    """One ELFATT attention layer.

    ``attention="vanilla"`` keeps the same parameters but computes plain softmax
    attention over all tokens (F.scaled_dot_product_attention) plus the LePE of
    v over the whole grid: the baseline for speed and accuracy comparisons.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        global_heads: Optional[int] = None,
        window: Sequence[int] = (7, 7),
        lepe: bool = True,
        qkv_bias: bool = True,
        scale: float = 0.0,
        attention: str = "elfatt",
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention={attention!r} is not one of {ATTENTION_KINDS}")
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads={num_heads!r} must be an int >= 1")
        global_heads = default_global_heads(num_heads) if global_heads is None else global_heads
        if not isinstance(global_heads, int) or not 0 <= global_heads <= num_heads:
            raise ValueError(f"global_heads={global_heads!r} must be an int in [0, num_heads={num_heads}]")
        # (ElfattAttrs refuses a window of 2.7 instead of truncating it to 2, and names a bad scale)
        self.attrs = ElfattAttrs(global_heads, num_heads - global_heads, *window_pair(window), scale)
        check_channels(dim, global_heads, num_heads - global_heads)
        self.dim = dim
        self.num_heads = num_heads
        self.attention = attention
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if lepe else None
        self.proj = nn.Linear(dim, dim)

    @property
    def window(self) -> tuple[int, int]:
        return self.attrs.window_h, self.attrs.window_w

    def extra_repr(self) -> str:
        a = self.attrs
        return (f"dim={self.dim}, global_heads={a.global_heads}, local_heads={a.local_heads}, "
                f"window=({a.window_h}, {a.window_w}), lepe={self.lepe is not None}, attention={self.attention}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        w = None if self.lepe is None else self.lepe.weight
        b = None if self.lepe is None else self.lepe.bias
        if self.attention == "vanilla":
            out = self._vanilla(qkv, w, b)
        else:
            a = self.attrs
            out = elfatt_attention(qkv, w, b, global_heads=a.global_heads, local_heads=a.local_heads,
                                   window=(a.window_h, a.window_w), scale=a.scale)
        return self.proj(out)

    def _vanilla(self, qkv: torch.Tensor, w: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> torch.Tensor:
        bsz, h, wd, c3 = qkv.shape
        c = c3 // 3
        d = c // self.num_heads
        q, k, v = qkv.reshape(bsz, h * wd, 3, self.num_heads, d).permute(2, 0, 3, 1, 4)
        scale = self.attrs.scale if self.attrs.scale != 0.0 else None
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        out = out.transpose(1, 2).reshape(bsz, h, wd, c)
        if w is not None:
            vv = qkv[..., 2 * c:].permute(0, 3, 1, 2)
            out = out + F.conv2d(vv, w, b, padding=1, groups=c).permute(0, 2, 3, 1)
        return out
