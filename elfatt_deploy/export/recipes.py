"""Deploy recipes: TOML files in export/ that say what to export and build.

A recipe is named by what it builds, e.g. ``elfatt_vit_small-fp16-dynamic-224-1024.toml``::

    model = "elfatt_vit_small"
    checkpoint = ""                  # optional; a relative path is relative to the recipe file
    precision = "fp16"               # fp32 | fp16
    dynamic = true                   # one file for every batch / height / width
    opset = 18
    plugin_only = false              # true: no function body (trtexec / Polygraphy with the plugin)
    inline = false                   # true: the function body inlined into standard ops (OpenVINO, ...)
    softmax = false                  # true: output "probabilities" (softmax of the logits; DeepStream classifier)
    min_shape = "1x3x224x224"        # TensorRT optimization profile; opt_shape is also the traced shape
    opt_shape = "1x3x512x512"        # (export --input-shape gives it when the recipe has none)
    max_shape = "2x3x1024x1024"      # optional for export; build then needs --shapes

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
    #: The TensorRT profile. opt_shape is also the traced shape; min/max may be None in a dynamic
    #: recipe (the ONNX export does not need them; ``build`` then asks for ``--shapes``).
    min_shape: Optional[Shape] = None
    opt_shape: Optional[Shape] = None
    max_shape: Optional[Shape] = None
    checkpoint: Optional[str] = None
    precision: str = "fp32"
    opset: int = DEFAULT_OPSET
    plugin_only: bool = False
    inline: bool = False
    softmax: bool = False
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
          "softmax": bool, "dynamic": bool, "min_shape": str, "opt_shape": str, "max_shape": str, "model_config": dict}
_TYPE_WORDS = {str: "a string", int: "an integer", bool: "true or false", dict: "a table"}


def _checked(recipe: Recipe) -> Recipe:
    # a recipe built in code (export without --recipe) is the command's flags: name those instead
    where = f"recipe {recipe.path}: " if recipe.path else ""
    entry = get_entry(recipe.model)  # ValueError listing the models
    entry.check_settings(recipe.model_config, where=f"{where}[model_config] " if recipe.path else "")
    classes = recipe.model_config.get("num_classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 0):
        raise ValueError(f"{where}[model_config] num_classes = {classes!r} must be an integer >= 0 (0: no classifier "
                         "head, the model outputs features)")
    if recipe.softmax and recipe.model_config.get("num_classes", 1) == 0:
        raise ValueError(f"{where}softmax needs a classifier head, but num_classes is 0 (the output is features); "
                         "drop softmax (--no-softmax) or give num_classes > 0")
    if recipe.precision not in PRECISIONS:
        hint = ("; an INT8 file is made from an fp32 or fp16 export with `elfatt-deploy quantize` (explicit Q/DQ, "
                "docs/quantization.md)") if str(recipe.precision).lower() == "int8" else ""
        raise ValueError(f"{where or '--'}precision {recipe.precision!r} is not one of {', '.join(PRECISIONS)}{hint}")
    if isinstance(recipe.opset, bool) or not isinstance(recipe.opset, int) or not MIN_OPSET <= recipe.opset <= MAX_OPSET:
        raise ValueError(f"{where or '--'}opset {recipe.opset!r} must be an int from {MIN_OPSET} to {MAX_OPSET}")
    if recipe.plugin_only and recipe.inline:
        raise ValueError(f"{where}plugin_only and inline are both set (--plugin-only, --inline); a plugin-only file "
                         "has no function body to inline: choose one (--no-plugin-only or --no-inline override a "
                         "recipe)")
    if recipe.opt_shape is None:
        raise ValueError(f"{where or 'export settings: '}no opt_shape (the traced shape); add e.g. "
                         "opt_shape = \"1x3x224x224\" to the recipe, or give --input-shape")
    if not recipe.dynamic:  # a static file has one shape: min and max are it
        recipe = replace(recipe, min_shape=recipe.min_shape or recipe.opt_shape,
                         max_shape=recipe.max_shape or recipe.opt_shape)
    # a dynamic recipe without min/max: check what is there against opt (build asks for --shapes)
    profile = make_profile(recipe.min_shape or recipe.opt_shape, recipe.opt_shape, recipe.max_shape or recipe.opt_shape,
                           what=f"recipe {recipe.path}" if recipe.path else "--input-shape")
    if not recipe.dynamic and not profile.is_static:
        raise ValueError(f"{where or 'export settings: '}dynamic = false but min/opt/max shapes differ ({profile.describe()}); "
                         "give one shape or set dynamic = true")
    return replace(recipe, min_shape=profile.min if recipe.min_shape else None, opt_shape=profile.opt,
                   max_shape=profile.max if recipe.max_shape else None)


def load_recipe(path: Union[str, Path], *, opt_shape: Optional[Shape] = None) -> Recipe:
    """Reads and checks a recipe; ValueError names the offending key and the valid ones.

    ``opt_shape`` (export's ``--input-shape``) stands in for a recipe's missing one, so such a
    recipe loads with it (the command's flags then override the rest). A dynamic recipe may leave out min_shape and max_shape: the ONNX export does not use
    them, and ``build`` then asks for ``--shapes``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"recipe {str(path)!r} is a directory; give a .toml file (see export/ for examples)")
    if not path.is_file():
        raise FileNotFoundError(f"recipe {str(path)!r} does not exist; see export/ for examples")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # (a BOM, as some Windows editors write)
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
    if shapes["opt_shape"] is None and opt_shape is not None:
        shapes["opt_shape"] = tuple(opt_shape)
    if shapes["opt_shape"] is None:
        raise ValueError(f"recipe {str(path)!r} has no opt_shape (the traced shape); add e.g. opt_shape = \"1x3x224x224\", "
                         "or give the shape on the command line (export --input-shape, build --shapes)")
    checkpoint = data.pop("checkpoint", "") or None
    if checkpoint is not None and not Path(checkpoint).is_absolute():
        checkpoint = str(path.parent / checkpoint)
    return _checked(Recipe(**data, **shapes, checkpoint=checkpoint, path=str(path)))
