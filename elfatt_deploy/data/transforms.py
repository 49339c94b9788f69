"""Decoded images -> model input: resize to the model's input size, then the one normalization
(elfatt_deploy/preprocess.py, as recorded in the export metadata)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..preprocess import DEFAULT_NORMALIZATION, Normalization


def resize(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [h, w, 3], Pillow bilinear (antialiased when shrinking); unchanged at the same size."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def to_model_input(images: Sequence[np.ndarray], size: Sequence[int],
                   normalization: Optional[Normalization] = None) -> np.ndarray:
    """RGB uint8 images of any sizes -> one float32 batch [N, 3, h, w] at ``size`` = (h, w)."""
    norm = normalization or DEFAULT_NORMALIZATION
    return norm.apply(np.stack([resize(im, size) for im in images]))
