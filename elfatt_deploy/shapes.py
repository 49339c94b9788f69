"""Parsing and checking of shape strings such as ``1x3x224x224``."""

from __future__ import annotations

from typing import Sequence


def parse_shape(text: str, *, rank: int | None = None, what: str = "shape") -> tuple[int, ...]:
    """Parses ``"1x3x224x224"`` into ``(1, 3, 224, 224)``.

    Raises ValueError naming the text and the expected form on bad input.
    """
    example = "x".join(("1", "3", "224", "224")[-rank:]) if rank in (1, 2, 3, 4) else "1x3x224x224"
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} {text!r} is empty: write it as dimensions joined by 'x', e.g. {example}")
    parts = text.strip().lower().split("x")
    dims = []
    for part in parts:
        if not part.strip().isdigit():
            raise ValueError(
                f"{what} {text!r} has the dimension {part!r}, which is not a non-negative integer: "
                f"write it as dimensions joined by 'x', e.g. {example}"
            )
        dims.append(int(part))
    if rank is not None and len(dims) != rank:
        raise ValueError(f"{what} {text!r} has {len(dims)} dimensions; expected {rank}, e.g. {example}")
    return tuple(dims)


def parse_shape_list(text: str, *, rank: int | None = None, what: str = "shapes") -> list[tuple[int, ...]]:
    """Parses ``"1x3x224x224,2x3x200x264"`` into a list of shapes."""
    items = [t for t in (text or "").split(",") if t.strip()]
    if not items:
        raise ValueError(f"{what} {text!r} is empty: give one or more shapes separated by ',', e.g. 1x3x224x224")
    return [parse_shape(t, rank=rank, what=what) for t in items]


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def check_image_shape(shape: Sequence[int], *, channels: int = 3, what: str = "input shape") -> tuple[int, int, int, int]:
    """Checks an NCHW image shape: 4 dims, the right channel count, positive sizes."""
    if len(shape) != 4:
        raise ValueError(f"{what} {format_shape(shape)} must have 4 dimensions (N x C x H x W), e.g. 1x3x224x224")
    n, c, h, w = (int(d) for d in shape)
    if c != channels:
        raise ValueError(f"{what} {format_shape(shape)} has {c} channels; the model takes {channels} (N x {channels} x H x W)")
    if n < 1 or h < 1 or w < 1:
        raise ValueError(f"{what} {format_shape(shape)} has a zero dimension; batch, height and width must be >= 1")
    return n, c, h, w
