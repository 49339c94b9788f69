"""Zero padding of an image to whole patches, in a form ONNX shape inference can follow."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """``[..., H, W]`` zero-padded at the bottom and right to multiples of ``multiple``.

    The pad is written ``ceil(n / m) * m - n`` (add, floor-divide, multiply, subtract) rather than
    ``(-n) % m``: the same number, but an ONNX export then has no ``Mod``, which ONNX Runtime's
    symbolic shape inference cannot follow (the padded image would get fresh dims).
    """
    h, w = image.shape[-2], image.shape[-1]
    pad_h = (h + multiple - 1) // multiple * multiple - h
    pad_w = (w + multiple - 1) // multiple * multiple - w
    return F.pad(image, (0, pad_w, 0, pad_h))
