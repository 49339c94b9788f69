"""The case grid every binding of the op is tested on (tests draw fresh random data)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpCase:
    id: str
    batch: int
    height: int
    width: int
    head_dim: int
    global_heads: int
    local_heads: int
    window_h: int
    window_w: int
    lepe: bool = True
    scale: float = 0.0

    @property
    def channels(self) -> int:
        return self.head_dim * (self.global_heads + self.local_heads)

    def attrs(self) -> dict:
        return dict(global_heads=self.global_heads, local_heads=self.local_heads,
                    window_h=self.window_h, window_w=self.window_w, scale=self.scale)


OP_CASES = [
    OpCase("partial-windows", 2, 9, 10, 16, 1, 1, 4, 4),
    OpCase("exact-windows", 3, 14, 14, 32, 1, 1, 7, 7),
    OpCase("row-stripes", 1, 7, 11, 16, 1, 2, 2, 0),
    OpCase("col-stripes-partial", 2, 6, 5, 32, 1, 1, 0, 3),
    OpCase("global-only", 3, 5, 7, 32, 2, 0, 0, 0),
    OpCase("local-only-scale", 2, 8, 6, 64, 0, 2, 3, 5, lepe=False, scale=0.2),
    OpCase("no-lepe-d64", 1, 4, 9, 64, 1, 1, 7, 7, lepe=False),
    OpCase("h1", 2, 1, 13, 16, 1, 1, 7, 7),
    OpCase("w1", 1, 12, 1, 16, 1, 1, 5, 5),
    OpCase("window-larger-than-grid", 1, 3, 4, 16, 1, 1, 7, 7),
    OpCase("local-whole-grid", 1, 5, 6, 16, 0, 1, 0, 0),
    OpCase("many-heads", 1, 6, 7, 16, 2, 3, 3, 2),
]
