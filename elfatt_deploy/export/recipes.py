"""Deploy recipes: TOML files in export/ that say what to export and build.

A recipe is named by what it builds, e.g. ``elfatt_vit_small-fp16-dynamic-224-1024.toml``::

    model = "elfatt_vit_small"
    checkpoint = ""                  # optional; a relative path is relative to the recipe file
    precision = "fp16"               # fp32 | fp16
    dynamic = true                   # one file for every batch / height / width
    opset = 18
    plugin_only = false              # true: no function body (trtexec / Polygraphy with the plugin)
    inline = false                   # true: the function body inlined into standard ops (OpenVINO, ...)
    min_shape = "1x3x224x224"        # TensorRT optimization profile; opt_shape is also the traced shape
    opt_shape = "1x3x512x512"
    max_shape = "2x3x1024x1024"

    [model_config]                   # optional create_model overrides, e.g. num_classes = 10
    num_classes = 1000

The exporter (``elfatt-deploy export --recipe``) and the TensorRT engine builder
read the same file through ``load_recipe``; command-line flags override it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Optional, Union

from ..engine.profiles import make_profile
from ..models.registry import get_entry
from .exporter import DEFAULT_OPSET, MAX_OPSET
from .metadata import PRECISIONS
from .onnx_function import MIN_OPSET

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class Recipe:
    model: str
    min_shape: Shape
    opt_shape: Shape
    max_shape: Shape
    checkpoint: Optional[str] = None
    precision: str = "fp32"
    opset: int = DEFAULT_OPSET
    plugin_only: bool = False
    inline: bool = False
    dynamic: bool = True
    model_config: dict = field(default_factory=dict)
    #: the file it was read from (None for a recipe built in code)
    path: Optional[str] = None

    def with_overrides(self, **overrides) -> "Recipe":
        """A copy with the given fields replaced; None values are ignored (flags that were not given)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - set(RECIPE_KEYS) - {"path"})
        if unknown:
            raise ValueError(f"unknown recipe field(s) {', '.join(unknown)}; valid: {', '.join(RECIPE_KEYS)}")
        return _checked(replace(self, **given))


#: Keys a recipe file may contain.
RECIPE_KEYS = tuple(f.name for f in fields(Recipe) if f.name != "path")
_TYPES = {"model": str, "checkpoint": str, "precision": str, "opset": int, "plugin_only": bool, "inline": bool,
          "dynamic": bool, "min_shape": str, "opt_shape": str, "max_shape": str, "model_config": dict}
_TYPE_WORDS = {str: "a string", int: "an integer", bool: "true or false", dict: "a table"}


def _checked(recipe: Recipe) -> Recipe:
    # a recipe built in code (export without --recipe) is the command's flags: name those instead
    where = f"recipe {recipe.path}: " if recipe.path else ""
    get_entry(recipe.model)  # ValueError listing the models
    if recipe.precision not in PRECISIONS:
        raise ValueError(f"{where or '--'}precision {recipe.precision!r} is not one of {', '.join(PRECISIONS)}")
    if isinstance(recipe.opset, bool) or not isinstance(recipe.opset, int) or not MIN_OPSET <= recipe.opset <= MAX_OPSET:
        raise ValueError(f"{where or '--'}opset {recipe.opset!r} must be an int from {MIN_OPSET} to {MAX_OPSET}")
    if recipe.plugin_only and recipe.inline:
        raise ValueError(f"{where}plugin_only and inline are both set (--plugin-only, --inline); a plugin-only file "
                         "has no function body to inline: choose one (--no-plugin-only or --no-inline override a "
                         "recipe)")
    profile = make_profile(recipe.min_shape, recipe.opt_shape, recipe.max_shape,
                           what=f"recipe {recipe.path}" if recipe.path else "--input-shape")
    if not recipe.dynamic and not profile.is_static:
        raise ValueError(f"{where or 'export settings: '}dynamic = false but min/opt/max shapes differ ({profile.describe()}); "
                         "give one shape or set dynamic = true")
    return replace(recipe, min_shape=profile.min, opt_shape=profile.opt, max_shape=profile.max)


def load_recipe(path: Union[str, Path]) -> Recipe:
    """Reads and checks a recipe; ValueError names the offending key and the valid ones."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {str(path)!r} does not exist; see export/ for examples")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"recipe {str(path)!r} is not valid TOML: {exc}") from None
    unknown = sorted(k for k in data if k not in RECIPE_KEYS)
    if unknown:
        raise ValueError(f"recipe {str(path)!r}: unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"valid keys: {', '.join(RECIPE_KEYS)}")
    for key, value in data.items():
        expected = _TYPES[key]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValueError(f"recipe {str(path)!r}: {key} = {value!r} must be {_TYPE_WORDS[expected]}")
    if "model" not in data:
        raise ValueError(f"recipe {str(path)!r} has no model; add e.g. model = \"elfatt_vit_small\"")
    shapes = {k: data.pop(k, None) for k in ("min_shape", "opt_shape", "max_shape")}
    if shapes["opt_shape"] is None:
        raise ValueError(f"recipe {str(path)!r} has no opt_shape (the traced shape); add e.g. opt_shape = \"1x3x224x224\"")
    if not data.get("dynamic", True):
        shapes = {k: v or shapes["opt_shape"] for k, v in shapes.items()}
    missing = [k for k, v in shapes.items() if v is None]
    if missing:
        raise ValueError(f"recipe {str(path)!r} is dynamic but lacks {', '.join(missing)}; give min_shape, opt_shape "
                         "and max_shape (or set dynamic = false with one opt_shape)")
    checkpoint = data.pop("checkpoint", "") or None
    if checkpoint is not None and not Path(checkpoint).is_absolute():
        checkpoint = str(path.parent / checkpoint)
    return _checked(Recipe(**data, **shapes, checkpoint=checkpoint, path=str(path)))
