"""Optimization-profile shapes: ``--shapes min:1x3x224x224,opt:4x3x224x224,max:8x3x512x512``.

A profile is three NCHW shapes with min <= opt <= max in every dimension, and it
must agree with the ONNX input: a static ONNX dimension fixes that dimension in
all three shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

from ..shapes import check_image_shape, format_shape, parse_shape

Dim = Union[int, str, None]


@dataclass(frozen=True)
class Profile:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))

    def describe(self) -> str:
        if self.is_static:
            return format_shape(self.opt)
        return f"min {format_shape(self.min)}, opt {format_shape(self.opt)}, max {format_shape(self.max)}"

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Profile":
        return cls(*(tuple(int(d) for d in data[k]) for k in ("min", "opt", "max")))


def make_profile(min_shape, opt_shape, max_shape, *, what: str = "--shapes") -> Profile:
    """Checks three shapes (rank 4, 3 channels, sizes >= 1, min <= opt <= max) and returns a Profile."""
    checked = {}
    # opt first: where min or max was left out it stands in for them, and a bad one is named as opt
    for key, shape in (("opt", opt_shape), ("min", min_shape), ("max", max_shape)):
        if isinstance(shape, str):
            shape = parse_shape(shape, what=f"{what} {key}")
        checked[key] = tuple(check_image_shape(tuple(int(d) for d in shape), what=f"{what} {key} shape"))
    lo, mid, hi = checked["min"], checked["opt"], checked["max"]
    for axis, name in enumerate("NCHW"):
        if not lo[axis] <= mid[axis] <= hi[axis]:
            raise ValueError(
                f"{what}: dimension {name} must satisfy min <= opt <= max, got min {lo[axis]}, opt {mid[axis]}, "
                f"max {hi[axis]} (min {format_shape(lo)}, opt {format_shape(mid)}, max {format_shape(hi)})"
            )
    return Profile(lo, mid, hi)


def parse_profile_spec(text: str, *, what: str = "--shapes") -> Profile:
    """Parses ``min:AxBxCxD,opt:...,max:...`` or a single shape (a static profile)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} is empty: write min:1x3x224x224,opt:4x3x224x224,max:8x3x512x512 or one shape")
    items = [t.strip() for t in text.split(",") if t.strip()]
    if len(items) == 1 and ":" not in items[0]:
        shape = parse_shape(items[0], what=what)
        return make_profile(shape, shape, shape, what=what)
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition(":")
        key = key.strip().lower()
        if not sep or key not in ("min", "opt", "max"):
            raise ValueError(
                f"{what} {text!r}: item {item!r} is not min:SHAPE, opt:SHAPE or max:SHAPE; "
                "write e.g. min:1x3x224x224,opt:4x3x224x224,max:8x3x512x512"
            )
        if key in found:
            raise ValueError(f"{what} {text!r} gives {key} twice; give each of min, opt, max once")
        found[key] = value.strip()
    missing = [k for k in ("min", "opt", "max") if k not in found]
    if missing:
        raise ValueError(f"{what} {text!r} lacks {', '.join(missing)}; give all of min:, opt: and max:")
    return make_profile(found["min"], found["opt"], found["max"], what=what)


def is_dynamic(dim: Dim) -> bool:
    return not isinstance(dim, int) or dim <= 0


def _dims_text(dims: Sequence[Dim]) -> str:
    """ONNX input dims for messages: static sizes, dim_param names, '?' for unnamed dynamic ones."""
    return "x".join(str(d) if not is_dynamic(d) or (isinstance(d, str) and d) else "?" for d in dims)


def check_profile_against_input(profile: Profile, input_name: str, onnx_dims: Sequence[Dim], *, what: str = "--shapes") -> None:
    """Raises ValueError when the profile disagrees with the ONNX input's dims (rank, static sizes)."""
    dims_text = _dims_text(onnx_dims)
    if len(onnx_dims) != 4:
        raise ValueError(f"the ONNX input {input_name!r} has shape {dims_text} (rank {len(onnx_dims)}); elfatt-deploy builds NCHW image models (rank 4)")
    if not is_dynamic(onnx_dims[1]) and onnx_dims[1] != 3:
        raise ValueError(f"the ONNX input {input_name!r} has shape {dims_text} with {onnx_dims[1]} channels; expected 3")
    for axis, (name, dim) in enumerate(zip("NCHW", onnx_dims)):
        if is_dynamic(dim):
            continue
        for key in ("min", "opt", "max"):
            value = getattr(profile, key)[axis]
            if value != dim:
                raise ValueError(
                    f"{what} {key} shape {format_shape(getattr(profile, key))} sets {name}={value}, but the ONNX input "
                    f"{input_name!r} ({dims_text}) has the static {name}={dim}; use {dim} there, or re-export with --dynamic"
                )


def resolve_profile(input_name: str, onnx_dims: Sequence[Dim], *, shapes: Optional[str] = None, recipe=None) -> Profile:
    """The profile for a build: ``--shapes`` first, then the recipe's min/opt/max, then the ONNX input if static."""
    if shapes:
        profile = parse_profile_spec(shapes)
        source = "--shapes"
    elif recipe is not None and all(getattr(recipe, k, None) for k in ("min_shape", "opt_shape", "max_shape")):
        source = f"recipe {getattr(recipe, 'path', '') or ''}".strip()
        profile = make_profile(recipe.min_shape, recipe.opt_shape, recipe.max_shape, what=source)
    elif len(onnx_dims) == 4 and not any(is_dynamic(d) for d in onnx_dims):
        static = tuple(int(d) for d in onnx_dims)
        check_image_shape(static, what=f"ONNX input {input_name!r}")
        return Profile(static, static, static)
    else:
        raise ValueError(
            f"the ONNX input {input_name!r} has dynamic dimensions ({_dims_text(onnx_dims)}); give the optimization profile with "
            "--shapes min:1x3x224x224,opt:1x3x224x224,max:4x3x448x448 (or --recipe FILE with min/opt/max shapes)"
        )
    check_profile_against_input(profile, input_name, onnx_dims, what=source)
    return profile
