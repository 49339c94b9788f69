"""A labelled synthetic image task for reference models: 10 classes of shapes, textures and layouts.

Every image is a pure function of ``(seed, index, size)``: the class is ``index % 10``
and the random draws (colours, position, scale, rotation, clutter, noise) come from
``numpy.random.default_rng([seed, index])``, so a split is reproduced exactly on any
machine, and the same scene can be rendered at any size (shapes are drawn in
coordinates relative to the image). The convention used by the reference models:
seed 0 is the training split, seed 1 the held-out split.

Classes (``CLASSES``): disc, ring, square, triangle, cross (shapes); hstripes,
vstripes, checker (textures inside a rectangle); pair (two discs), dots (a 3x3 grid
of dots) (layouts). Each scene is drawn over a two-colour gradient background with
0-4 thin clutter lines and Gaussian noise.
"""

from __future__ import annotations

from typing import Iterator, Sequence, Union

import numpy as np

CLASSES = ("disc", "ring", "square", "triangle", "cross", "hstripes", "vstripes", "checker", "pair", "dots")
TRAIN_SEED = 0
HELD_OUT_SEED = 1

Size = Union[int, Sequence[int]]


def _size(size: Size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if isinstance(h, bool) or isinstance(w, bool) or int(h) < 8 or int(w) < 8:
        raise ValueError(f"image size {size!r} must be an int or an (height, width) pair, each >= 8")
    return int(h), int(w)


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground colours at least 0.45 apart (RGB in [0, 1])."""
    while True:
        bg, fg = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
        if np.linalg.norm(bg - fg) >= 0.45:
            return bg, fg


def _rotate(x: np.ndarray, y: np.ndarray, cx: float, cy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(theta), np.sin(theta)
    dx, dy = x - cx, y - cy
    return c * dx + s * dy, -s * dx + c * dy


def _disc(x, y, cx, cy, r):
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _shape_mask(label: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The foreground mask of class ``label`` on the relative coordinate grid (x right, y down, in [0, 1])."""
    name = CLASSES[label]
    scale = rng.uniform(0.32, 0.46)  # half-extent of the object, relative to the image
    cx, cy = rng.uniform(scale * 0.8, 1 - scale * 0.8, 2)
    theta = rng.uniform(0, 2 * np.pi)
    if name == "disc":
        return _disc(x, y, cx, cy, scale * 0.8)
    if name == "ring":
        d2 = (x - cx) ** 2 + (y - cy) ** 2
        outer = scale * 0.85
        return (d2 <= outer ** 2) & (d2 >= (outer * rng.uniform(0.5, 0.68)) ** 2)
    if name == "square":  # near axis-aligned (up to 20 degrees): its corners set it apart from the disc
        u, v = _rotate(x, y, cx, cy, rng.uniform(-0.35, 0.35))
        s = scale * 0.7
        return (np.abs(u) <= s) & (np.abs(v) <= s)
    u, v = _rotate(x, y, cx, cy, theta)
    if name == "triangle":
        r = scale * 0.95
        mask = np.ones_like(u, dtype=bool)
        for k in range(3):  # three half-planes of an equilateral triangle of circumradius r
            a = theta + k * 2 * np.pi / 3
            mask &= (x - cx) * np.cos(a) + (y - cy) * np.sin(a) <= r / 2
        return mask
    if name == "cross":
        s, t = scale * 0.85, scale * 0.85 * rng.uniform(0.25, 0.38)
        return ((np.abs(u) <= s) & (np.abs(v) <= t)) | ((np.abs(u) <= t) & (np.abs(v) <= s))
    if name in ("hstripes", "vstripes", "checker"):
        tilt = rng.uniform(-0.2, 0.2)  # textures keep their orientation: a small tilt only
        u, v = _rotate(x, y, cx, cy, tilt)
        hw, hh = scale * rng.uniform(0.85, 1.1), scale * rng.uniform(0.85, 1.1)
        region = (np.abs(u) <= hw) & (np.abs(v) <= hh)
        period = rng.uniform(0.09, 0.16)
        phase = rng.uniform(0, period)
        rows = np.floor((v + phase) / (period / 2)).astype(np.int64) % 2 == 0
        cols = np.floor((u + phase) / (period / 2)).astype(np.int64) % 2 == 0
        pattern = {"hstripes": rows, "vstripes": cols, "checker": rows ^ cols}[name]
        return region & pattern
    if name == "pair":
        r, gap = scale * 0.42, scale * 0.62
        dx, dy = gap * np.cos(theta), gap * np.sin(theta)
        return _disc(x, y, cx + dx, cy + dy, r) | _disc(x, y, cx - dx, cy - dy, r)
    if name == "dots":
        r, step = scale * 0.17, scale * 0.62
        mask = np.zeros_like(u, dtype=bool)
        for i in (-1, 0, 1):
            for j in (-1, 0, 1):
                mask |= (u - i * step) ** 2 + (v - j * step) ** 2 <= r * r
        return mask
    raise AssertionError(name)


def _segment_mask(x, y, p0, p1, width) -> np.ndarray:
    d = p1 - p0
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / max(float(d @ d), 1e-12), 0.0, 1.0)
    return (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 <= width * width


def render(index: int, *, seed: int = TRAIN_SEED, size: Size = 112) -> tuple[np.ndarray, int]:
    """Image ``index`` of split ``seed``: (uint8 array [H, W, 3], label)."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index {index!r} must be an int >= 0")
    h, w = _size(size)
    label = int(index) % len(CLASSES)
    rng = np.random.default_rng([int(seed), int(index)])
    # pixel centres in relative coordinates; the shorter side spans [0, 1]
    side = min(h, w)
    y, x = np.meshgrid((np.arange(h) + 0.5) / side, (np.arange(w) + 0.5) / side, indexing="ij")
    x = x - (w / side - 1) / 2
    y = y - (h / side - 1) / 2
    bg, fg = _colour_pair(rng)
    bg2 = np.clip(bg + rng.uniform(-0.2, 0.2, 3), 0, 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle), 0, 1)[..., None]
    image = bg * (1 - ramp) + bg2 * ramp
    mask = _shape_mask(label, x, y, rng)
    image = np.where(mask[..., None], fg * rng.uniform(0.85, 1.0), image)
    for _ in range(int(rng.integers(0, 5))):  # clutter: thin lines of random colour
        p0, p1 = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
        line = _segment_mask(x, y, p0, p1, rng.uniform(0.003, 0.008) + 0.5 / side)
        image = np.where(line[..., None], rng.uniform(0, 1, 3), image)
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.05), image.shape)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), label


def render_batch(indices: Sequence[int], *, seed: int = TRAIN_SEED, size: Size = 112) -> tuple[np.ndarray, np.ndarray]:
    """Images ``indices`` of split ``seed``: (uint8 [N, H, W, 3], int64 labels [N])."""
    pairs = [render(int(i), seed=seed, size=size) for i in indices]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=np.int64)


def iter_images(count: int, *, seed: int = TRAIN_SEED, size: Size = 112, start: int = 0) -> Iterator[tuple[int, np.ndarray, int]]:
    """``(index, image, label)`` for ``count`` images from ``start`` (balanced: the class is index % 10)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count {count!r} must be an int >= 0")
    for index in range(start, start + count):
        image, label = render(index, seed=seed, size=size)
        yield index, image, label
