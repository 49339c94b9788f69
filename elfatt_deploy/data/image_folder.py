"""Image folders: ``DIR/<class>/*.png`` (ImageFolder layout, labelled) or a flat ``DIR/*.png`` (unlabelled).

Classes are the sub-directory names in sorted order, index 0, 1, ... (torchvision's ImageFolder
convention), so a folder written by ``write_image_folder`` (``0_disc``, ``1_ring``, ...) maps back
to the synthetic task's labels. Images that fail to decode are skipped with one warning that
counts them; a folder without any image file is an ``InputError``.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from ..errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class ImageDecodeWarning(UserWarning):
    """Some images of a folder could not be decoded and were skipped."""


@dataclass(frozen=True)
class ImageItem:
    path: Path
    #: class index, or None in a flat folder
    label: Optional[int]


@dataclass
class ImageFolder:
    root: Path
    items: list[ImageItem]
    #: class names in label order; empty for a flat folder
    classes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    def describe(self) -> str:
        if self.labelled:
            return f"{len(self.items)} images in {len(self.classes)} classes ({self.root})"
        return f"{len(self.items)} unlabelled images ({self.root})"


def _images_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def scan_image_folder(root) -> ImageFolder:
    """Lists the images of ``root``: class sub-directories when it has any with images, else its own files."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise InputError(f"image folder {str(root)!r} is not a directory; give a folder of images "
                         "(DIR/<class>/*.png for labels, or DIR/*.png)")
    class_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and _images_in(d)]
    if class_dirs:
        items = [ImageItem(p, label) for label, d in enumerate(class_dirs) for p in _images_in(d)]
        loose = _images_in(root)
        if loose:
            warnings.warn(f"{root}: {len(loose)} image(s) beside the class folders are ignored (ImageFolder layout: "
                          "DIR/<class>/*.png)", ImageDecodeWarning, stacklevel=2)
        return ImageFolder(root, items, [d.name for d in class_dirs])
    items = [ImageItem(p, None) for p in _images_in(root)]
    if not items:
        raise InputError(f"image folder {str(root)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}), neither "
                         "directly nor in class sub-folders; point it at a folder of images")
    return ImageFolder(root, items, [])


def read_image(path) -> np.ndarray:
    """RGB uint8 [H, W, 3]; ValueError naming the file when it does not decode or its pixels have no 8-bit
    meaning. 16-bit grey images (PNG/TIFF ``I;16``, or ``I`` holding values up to 65535) are scaled to 8 bits
    (``convert("RGB")`` would clip them to white); float images (``F``) are refused, since their range is not
    known; images over Pillow's decompression-bomb limit are refused too."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16") or image.mode == "I":
                values = np.asarray(image).astype(np.int64)
                if values.size and (values.min() < 0 or values.max() > 65535):
                    raise ValueError(f"32-bit integer pixels in [{values.min()}, {values.max()}], not 16-bit")
                grey = np.round(values / 257.0).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=-1)
            if image.mode == "F":
                raise ValueError("floating-point pixels (mode F) have no known range; save the image as 8- or "
                                 "16-bit")
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a decodable image ({type(exc).__name__}: {exc})") from None


@dataclass
class DecodedImage:
    item: ImageItem
    image: np.ndarray
    #: sha256 of the file's bytes
    sha256: str


def decode_items(items: Iterable[ImageItem], *, limit: Optional[int] = None,
                 skipped: Optional[list] = None) -> Iterator[DecodedImage]:
    """Decodes ``items`` in order, skipping those that fail (appended to ``skipped`` as (path, reason)),
    until ``limit`` images decoded. Warns once, with the count, at the end."""
    skipped = [] if skipped is None else skipped
    first_skipped = len(skipped)
    done = 0
    try:
        for item in items:
            if limit is not None and done >= limit:
                return
            try:
                data = item.path.read_bytes()
                image = read_image(item.path)
            except (OSError, ValueError) as exc:
                skipped.append((item.path, str(exc)))
                continue
            done += 1
            yield DecodedImage(item, image, hashlib.sha256(data).hexdigest())
    finally:
        new = skipped[first_skipped:]
        if new:
            examples = "; ".join(f"{p}" for p, _ in new[:3]) + (" ..." if len(new) > 3 else "")
            warnings.warn(f"skipped {len(new)} image(s) that could not be decoded: {examples} ({new[0][1]})",
                          ImageDecodeWarning, stacklevel=2)


def spread_order(count: int, wanted: int) -> list[int]:
    """Indices 0..count-1 with ``wanted`` evenly spread ones first (every class of a sorted
    ImageFolder gets its share), then the rest in order: replacements for images that fail to decode."""
    if wanted >= count:
        return list(range(count))
    first = [int(round(i)) for i in np.linspace(0, count - 1, wanted)] if wanted > 0 else []
    chosen = set(first)
    return first + [i for i in range(count) if i not in chosen]


def dataset_hash(images: Sequence[DecodedImage], root: Path) -> str:
    """sha256 over the (relative path, content hash) of the images, in the order used."""
    h = hashlib.sha256()
    for d in images:
        try:
            rel = d.item.path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            rel = d.item.path.name
        h.update(f"{rel}\0{d.sha256}\n".encode())
    return h.hexdigest()


def write_image_folder(root, count: int, *, seed: int = 1, size=112, start: int = 0) -> ImageFolder:
    """Renders ``count`` images of the synthetic task (split ``seed``) as ``root/<label>_<class>/<index>.png``."""
    from PIL import Image

    from ..atomic import atomic_output
    from .synthetic import CLASSES, iter_images

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dirs = [root / f"{label}_{name}" for label, name in enumerate(CLASSES)]
    for d in dirs:
        d.mkdir(exist_ok=True)
    items = []
    for index, image, label in iter_images(count, seed=seed, size=size, start=start):
        path = dirs[label] / f"{index:06d}.png"
        with atomic_output(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        items.append(ImageItem(path, label))
    return ImageFolder(root, sorted(items, key=lambda i: (i.label, i.path.name)), [d.name for d in dirs])
