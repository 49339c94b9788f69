"""The shapes the GPU kernels are verified and timed on (bench/kernels_gpu.py; the names of
TIMED_CASES are also the case names of bench/kernels_model.py, so that measured and
predicted rows pair up).

TIMED_CASES are the cases of issue 10, all float16 with LePE, B = 1 unless the name says:
- ViT-S (C = 384, 3 global + 3 local heads, d = 64, 7x7 windows) at 64x64 tokens (a 1024x1024
  image at patch 16) and 128x128 tokens (2048x2048), B = 1, and 64x64 tokens at B = 8;
- CSWin-T stages 1-3 (elfatt_deploy/models/cswin.py: stem stride 4 then stride 2 per stage, dims
  64/128/256, heads 2/4/8 half global and half local, d = 32, horizontal stripes of 1/2/7 rows)
  at 512x512 and 1024x1024 input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    height: int
    width: int
    channels: int
    global_heads: int
    local_heads: int
    window_h: int
    window_w: int
    lepe: bool = True
    scale: float = 0.0
    magnitude: float = 1.0  # std of q and k (large values stress the max-subtracted softmax)
    tol_factor: float = 1.0  # logits of size ~L carry float32 rounding errors ~L * eps: looser limit

    @property
    def head_dim(self) -> int:
        return self.channels // (self.global_heads + self.local_heads)

    @property
    def heads(self) -> int:
        return self.global_heads + self.local_heads

    @property
    def tokens(self) -> int:
        return self.height * self.width

    def args(self) -> tuple:
        """The op's attributes in call order: global_heads, local_heads, window_h, window_w, scale."""
        return (self.global_heads, self.local_heads, self.window_h, self.window_w, self.scale)

    def floor_bytes(self, element_bytes: int) -> int:
        """The memory floor's traffic: qkv read once and the output written once."""
        return self.batch * self.tokens * 4 * self.channels * element_bytes

    def shape(self) -> dict:
        """The shape parameters as JSON fields."""
        fields = asdict(self)
        for key in ("name", "magnitude", "tol_factor"):
            fields.pop(key)
        fields["head_dim"] = self.head_dim
        return fields


def _vit_s(name: str, tokens: int, batch: int) -> Case:
    return Case(name, batch, tokens, tokens, 384, 3, 3, 7, 7)


def _cswin_t(stage: int, image: int) -> Case:
    tokens = image // 4 >> (stage - 1)
    dim, heads, stripe = ((64, 2, 1), (128, 4, 2), (256, 8, 7))[stage - 1]
    return Case(f"cswin-t-s{stage}-{image}", 1, tokens, tokens, dim, heads // 2, heads // 2, stripe, 0)


TIMED_CASES = [
    _vit_s("vit-s-64x64-b1", 64, 1),
    _vit_s("vit-s-128x128-b1", 128, 1),
    _vit_s("vit-s-64x64-b8", 64, 8),
    *(_cswin_t(stage, image) for image in (512, 1024) for stage in (1, 2, 3)),
]

# The full verification grid. Head dims: 16/32/64 take the tiled and tensor-core local kernels;
# others the generic one. Shapes off the window grid throughout.
VERIFY_CASES = [
    Case("partial-7x7-d32", 2, 9, 13, 96, 1, 2, 7, 7),
    Case("partial-7x7-d32-nolepe", 2, 9, 13, 96, 1, 2, 7, 7, lepe=False),
    Case("partial-7x7-d16", 3, 15, 11, 48, 1, 2, 7, 7),
    Case("partial-7x7-d64", 2, 20, 22, 256, 2, 2, 7, 7),
    Case("stripes-2rows-d32", 2, 14, 20, 64, 1, 1, 2, 0),
    Case("stripes-7rows-d32", 1, 30, 17, 128, 2, 2, 7, 0),
    Case("stripes-7x256-d32", 1, 14, 256, 64, 1, 1, 7, 0),
    Case("stripes-1row-d64", 2, 9, 70, 128, 1, 1, 1, 0),
    Case("vertical-stripes-d32", 2, 12, 12, 64, 0, 2, 0, 3),
    Case("whole-grid-window-d32", 1, 40, 40, 64, 1, 1, 0, 0),
    Case("window-larger-than-grid", 2, 5, 6, 64, 1, 1, 9, 11),
    Case("global-only-d32", 3, 16, 16, 64, 2, 0, 0, 0),
    Case("global-only-d64-many-chunks", 1, 200, 200, 64, 1, 0, 0, 0),
    Case("global-only-d64-nolepe", 2, 33, 65, 128, 2, 0, 0, 0, lepe=False),
    Case("local-only-d32", 2, 15, 15, 128, 0, 4, 7, 7),
    Case("local-only-d64-scale", 2, 15, 15, 128, 0, 2, 7, 7, scale=0.37),
    Case("batch-8", 8, 7, 7, 64, 1, 1, 7, 7),
    Case("h1", 2, 1, 37, 64, 1, 1, 7, 7),
    Case("w1", 2, 23, 1, 64, 1, 1, 0, 0),
    Case("h1-w1", 3, 1, 1, 64, 1, 1, 7, 7),
    Case("generic-d24", 2, 11, 9, 48, 1, 1, 4, 5),
    Case("generic-d48", 2, 11, 9, 96, 1, 1, 7, 7),
    Case("generic-d80", 1, 10, 12, 160, 1, 1, 5, 0),
    Case("generic-d128", 1, 17, 9, 256, 1, 1, 7, 7),
    Case("generic-d5", 2, 8, 8, 15, 1, 2, 3, 3),
    Case("d192-global", 1, 12, 12, 384, 1, 1, 7, 7),
    Case("large-logits", 2, 14, 14, 64, 1, 1, 7, 7, magnitude=12.0, tol_factor=10.0),
    Case("high-res-multichunk", 1, 128, 130, 64, 1, 1, 7, 7),
]

# --quick: one case of each kind the kernels distinguish (partial windows, stripes both ways,
# global-only with many chunks, local-only with a scale, H or W = 1, odd and generic head dims,
# batch, large logits), d = 32 and 64 first.
QUICK_VERIFY_NAMES = (
    "partial-7x7-d32", "partial-7x7-d64", "stripes-7rows-d32", "vertical-stripes-d32", "global-only-d64-many-chunks",
    "local-only-d64-scale", "h1", "w1", "generic-d24", "generic-d5", "batch-8", "large-logits",
    "partial-7x7-d32-nolepe",
)
QUICK_VERIFY_CASES = [c for c in VERIFY_CASES if c.name in QUICK_VERIFY_NAMES]

# Small odd shapes for compute-sanitizer (fast under instrumentation).
SANITIZE_CASES = {
    "odd-partial": Case("odd-partial", 2, 9, 13, 96, 1, 2, 7, 7),
    "odd-stripes": Case("odd-stripes", 1, 11, 70, 64, 1, 1, 3, 0),
    "odd-generic": Case("odd-generic", 2, 5, 7, 15, 1, 2, 2, 3),
    "odd-h1": Case("odd-h1", 2, 1, 33, 64, 1, 1, 7, 7),
    "odd-global-d100": Case("odd-global-d100", 1, 19, 23, 200, 1, 1, 0, 0),
    "odd-chunks": Case("odd-chunks", 1, 45, 47, 32, 1, 0, 0, 0),
}
QUICK_SANITIZE_NAMES = ("odd-partial", "odd-stripes", "odd-generic")
