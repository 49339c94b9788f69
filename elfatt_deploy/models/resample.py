"""Bicubic resampling of a position-embedding table as two small matrix products.

``F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)`` is
separable: ``out = A_h @ table @ A_w^T`` with an interpolation matrix per axis
(``A_h`` is ``[h, g_h]``, four non-zero weights per row). Building the matrices
from the output sizes with elementwise ops (Range, Floor, Clip, Equal, ...) and
multiplying gives the same values (within float32 rounding) and, in an ONNX
export, a graph that:

- costs what it should: two MatMuls of ``h * g * (g * C) + h * w * g * C``
  multiply-adds (ONNX Runtime's bicubic ``Resize`` of the same table took 9-10%
  of ViT-S from 512 up);
- third-party shape inference can follow (ONNX Runtime's ``symbolic_shape_infer``
  tracks ``Range`` of a size, elementwise ops and MatMul), where a ``Resize``
  with computed ``sizes`` gets fresh symbols;
- in a static export has only constant inputs, so the exporter computes it once
  and stores the table (elfatt_deploy/export/fold.py).

The weights are PyTorch's (``upsample_bicubic2d``): source position
``(g / h) * (i + 0.5) - 0.5``, not clamped; Keys' cubic with ``A = -0.75`` at the
offsets -1..2 from its floor; taps outside the table read its edge. They are
computed more exactly than PyTorch's float32 kernel does (an exact floor, a kernel
without cancellation), so the result is closer to the float64 ``F.interpolate``
than the float32 one is.
"""

from __future__ import annotations

from typing import Union

import torch

#: Keys' cubic convolution parameter PyTorch (and OpenCV) use for bicubic interpolation
CUBIC_A = -0.75

Size = Union[int, torch.SymInt]


def _cubic_weights(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Keys' weights of the taps at offsets -1, 0, 1, 2 for the fraction ``t`` in [0, 1).

    Keys' kernel factored, so that float32 evaluates it without cancellation:
    ``A|x|^3 - 5A|x|^2 + 8A|x| - 4A = A (|x| - 1)(|x| - 2)^2`` for 1 <= |x| < 2 and
    ``(A + 2)|x|^3 - (A + 3)|x|^2 + 1 = (1 - |x|)(1 + |x| - (A + 2)|x|^2)`` for |x| < 1.
    """
    a = CUBIC_A
    rest = 1.0 - t
    return (a * t * rest * rest,                          # x = 1 + t
            rest * (1.0 + t - (a + 2.0) * t * t),           # x = t
            t * (1.0 + rest - (a + 2.0) * rest * rest),     # x = 1 - t
            a * rest * t * t)                               # x = 2 - t


def bicubic_matrix(out_size: Size, in_size: int, *, device=None) -> torch.Tensor:
    """The ``[out_size, in_size]`` float32 matrix of bicubic interpolation (align_corners=False) along one axis.

    ``out_size`` may be symbolic (a dynamic export); ``in_size`` is the table's (static) length.
    The source position of output ``i`` is ``num / den`` with ``num = (2i + 1) g - out`` and
    ``den = 2 out``: whole numbers, exact in float32 (below 2**24), so its floor is exact and its
    fraction rounded once.
    """
    if isinstance(in_size, bool) or not isinstance(in_size, int) or in_size < 1:
        raise ValueError(f"in_size={in_size!r} must be a positive int (the table's length along the axis)")
    count = torch.full((), out_size, dtype=torch.float32, device=device)
    position = torch.arange(out_size, dtype=torch.float32, device=device)
    num = (2.0 * position + 1.0) * float(in_size) - count
    den = 2.0 * count
    floor = torch.floor(num / den)  # from -1 (upsampling, first rows) to in_size - 1
    t = (num - floor * den) / den
    weights = torch.stack(_cubic_weights(t), dim=1)  # [out, 4]
    offsets = torch.tensor([-1.0, 0.0, 1.0, 2.0], device=device)
    taps = torch.clamp(floor.unsqueeze(1) + offsets, 0.0, float(in_size - 1))  # [out, 4]; outside reads the edge
    columns = torch.arange(in_size, dtype=torch.float32, device=device)
    hits = (taps.unsqueeze(2) == columns).to(torch.float32)  # [out, 4, in]: one 1 per (row, tap)
    matrix = (weights.unsqueeze(2) * hits).sum(dim=1)
    return matrix


def resize_bicubic_channels_last(table: torch.Tensor, height: Size, width: Size) -> torch.Tensor:
    """``[1, C, g_h, g_w]`` table -> ``[1, height, width, C]``, bicubic as ``F.interpolate`` (align_corners=False).

    Computed in float32 and returned in the table's dtype.
    """
    if table.dim() != 4 or table.shape[0] != 1:
        raise ValueError(f"table must have shape [1, C, g_h, g_w], got {list(table.shape)}")
    _, channels, grid_h, grid_w = (int(d) for d in table.shape)
    rows = bicubic_matrix(height, grid_h, device=table.device)      # [height, g_h]
    cols = bicubic_matrix(width, grid_w, device=table.device)       # [width, g_w]
    # [g_h, g_w * C] (a constant of the weights), rows first: [height, g_w * C] -> [height, g_w, C]
    grid = table[0].permute(1, 2, 0).reshape(grid_h, grid_w * channels).to(torch.float32)
    along_rows = torch.matmul(rows, grid).reshape(-1, grid_w, channels)
    # [width, g_w] @ [height, g_w, C] -> [height, width, C]
    out = torch.matmul(cols, along_rows)
    return out.unsqueeze(0).to(table.dtype)

