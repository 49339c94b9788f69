"""The models' input preprocessing, defined once.

Every model takes an RGB image as float32 NCHW with ``y = (x * scale - mean[c]) / std[c]`` for 8-bit
pixel values ``x`` (scale 1/255, ImageNet mean and std). The exporter records it in the ONNX
``metadata_props`` (``elfatt.input_normalization``, export/metadata.py), engines carry it in their
sidecar, ``validate --images`` applies it to image files, and the DeepStream writer turns it into
nvinfer's ``net-scale-factor`` / ``offsets``. All of them read it from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence, Union

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Normalization:
    """``y = (x * scale - mean[c]) / std[c]`` per channel ``c`` of an RGB image with 8-bit values ``x``."""

    scale: Fraction = Fraction(1, 255)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: str = "RGB"

    def __post_init__(self):
        if self.scale <= 0:
            raise InputError(f"input normalization scale {self.scale} must be > 0 (e.g. 1/255)")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise InputError(f"input normalization needs 3 means and 3 stds (RGB), got mean {list(self.mean)}, "
                             f"std {list(self.std)}")
        if any(s <= 0 for s in self.std):
            raise InputError(f"input normalization std {list(self.std)} must be > 0 in every channel")

    # -- the metadata form (ONNX metadata_props, engine sidecar) ---------------------------------------------------
    def to_metadata(self) -> dict:
        """``{"scale": "1/255", "mean": [...], "std": [...]}``: what export/metadata.py records."""
        return {"scale": f"{self.scale.numerator}/{self.scale.denominator}" if self.scale.denominator != 1
                else str(self.scale.numerator), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_metadata(cls, value: Union[str, Mapping, None]) -> "Normalization":
        """Reads :meth:`to_metadata`'s dict (or its JSON text); ``None`` or ``{}`` gives the default."""
        if value is None or value == "" or value == {}:
            return cls()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InputError(f"input normalization {value!r} is not JSON ({exc})") from None
        if not isinstance(value, Mapping):
            raise InputError(f"input normalization must be an object with scale/mean/std, got {value!r}")
        try:
            scale = Fraction(str(value.get("scale", "1/255")))
            mean = tuple(float(v) for v in value.get("mean", cls.mean))
            std = tuple(float(v) for v in value.get("std", cls.std))
        except (TypeError, ValueError, ZeroDivisionError) as exc:
            raise InputError(f"input normalization {dict(value)} is malformed ({exc})") from None
        return cls(scale=scale, mean=mean, std=std)

    # -- applying it ------------------------------------------------------------------------------------------------
    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 (or 0..255 float) RGB images, ``[N, 3, H, W]`` or ``[N, H, W, 3]`` -> float32 NCHW model input."""
        array = np.asarray(images)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or 3 not in (array.shape[1], array.shape[3]):
            raise InputError(f"images of shape {list(array.shape)}: expected [N, 3, H, W] or [N, H, W, 3] RGB")
        if array.shape[1] != 3:  # NHWC -> NCHW
            array = array.transpose(0, 3, 1, 2)
        x = array.astype(np.float64) * float(self.scale)
        mean = np.asarray(self.mean, dtype=np.float64).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, dtype=np.float64).reshape(1, 3, 1, 1)
        return np.ascontiguousarray(((x - mean) / std).astype(np.float32))

    # -- the same transform in other tools' terms ----------------------------------------------------------------
    def pixel_offsets(self) -> tuple[float, float, float]:
        """The per-channel mean in 8-bit pixel units: ``mean[c] / scale`` (nvinfer's ``offsets``)."""
        return tuple(float(Fraction(str(m)) / self.scale) for m in self.mean)

    def pixel_scales(self) -> tuple[float, float, float]:
        """The per-channel factor in 8-bit pixel units: ``scale / std[c]``."""
        return tuple(float(self.scale / Fraction(str(s))) for s in self.std)

    def single_scale(self) -> tuple[float, float]:
        """One factor for all channels, as tools with a scalar scale (DeepStream nvinfer) need:
        ``scale / mean(std)``, and the largest relative deviation from the exact per-channel factors."""
        exact = self.pixel_scales()
        approx = float(self.scale) / (sum(self.std) / len(self.std))
        return approx, max(abs(approx / e - 1.0) for e in exact)


#: What every model of this toolkit expects.
DEFAULT_NORMALIZATION = Normalization()


def normalization_from_props(props: Mapping[str, str]) -> Normalization:
    """The normalization recorded in ONNX ``metadata_props`` (or an engine sidecar's ``model``), else the default."""
    for key in ("elfatt.input_normalization", "input_normalization"):
        if props.get(key):
            return Normalization.from_metadata(props[key])
    return DEFAULT_NORMALIZATION


def format_floats(values: Sequence[float], sep: str = ";") -> str:
    """``123.675;116.28;103.53``: shortest round-trip text of each value."""
    return sep.join(repr(float(v)) for v in values)
