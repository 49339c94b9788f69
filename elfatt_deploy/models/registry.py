"""Model registry: ``create_model(name, **overrides)`` and ``list_models()``."""

from __future__ import annotations

import copy
import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import nn

from ..nn.attention import ATTENTION_KINDS
from .cswin import ElfattCSWin
from .vit import ElfattViT


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    defaults: dict = field(default_factory=dict)
    default_input_size: int = 224
    summary: str = ""

    def settings(self) -> tuple[str, ...]:
        """The keyword settings ``create_model`` (and a recipe's ``[model_config]``) accept for this model."""
        parameters = inspect.signature(self.builder).parameters.values()
        return tuple(p.name for p in parameters
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self")

    def check_settings(self, overrides, *, where: str = "") -> None:
        """ValueError naming each unknown setting and the valid ones, or the first setting whose value has the wrong
        type or size (``where`` says where they came from), or a combination that cannot be built."""
        unknown = [k for k in overrides if k not in self.settings()]
        if unknown:
            raise ValueError(f"{where}{', '.join(map(repr, unknown))} {'is not a setting' if len(unknown) == 1 else 'are not settings'} "
                             f"of {self.name}; its settings: {', '.join(self.settings())}")
        for key, value in overrides.items():
            problem = _size_problem(key, value, family=self.family)
            if problem:
                default = self.defaults.get(key)
                raise ValueError(f"{where}{key} = {value!r} {problem}" +
                                 (f" ({self.name}'s default: {default!r})" if default is not None else ""))
        cfg = {**self.defaults, **overrides}
        problem = _config_problem(self.family, cfg)
        if problem:
            raise ValueError(f"{where}{problem}")

    def window_summary(self) -> str:
        if self.family == "vit":
            wh, ww = self.defaults.get("window", (7, 7))
            return f"{wh}x{ww} windows"
        stripes = self.defaults.get("stripes", (1, 2, 7, 7))
        return "stripes " + "/".join(str(s) for s in stripes) + " (alternating rows/columns)"


#: sizes a model cannot have zero or less of (a depth of 0 would export a model without attention layers)
_POSITIVE_INT_SETTINGS = frozenset({"embed_dim", "depth", "num_heads", "img_size", "patch_size"})
_POSITIVE_INTS_SETTINGS = frozenset({"dims", "depths", "heads"})
_BOOL_SETTINGS = frozenset({"lepe"})
#: Transformer blocks a model may have in all (depth, or the sum of depths): each takes milliseconds to build and
#: to trace, so a depth of a million would run for an hour before anything said a word; the registered models
#: have at most 25.
MAX_BLOCKS = 1000


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_ints(value, low: int) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(_is_int(v) and v >= low for v in value)


def _size_problem(key: str, value, family: str = "vit") -> str:
    """Why ``value`` cannot be the setting ``key`` of a model of ``family`` ("" when it can, or when ``key`` is no
    setting checked here: num_classes has its own check, in the models)."""
    if key in _POSITIVE_INT_SETTINGS and not (_is_int(value) and value >= 1):
        return "must be a positive integer"
    if key in _POSITIVE_INTS_SETTINGS and not _is_ints(value, 1):
        return "must be a list of positive integers"
    if key == "depth" and value > MAX_BLOCKS:
        return (f"is more than the {MAX_BLOCKS} transformer blocks a model may have here (each takes milliseconds "
                "to build and to trace; the registered models have at most 25)")
    if key == "depths" and sum(value) > MAX_BLOCKS:
        return (f"gives {sum(value)} transformer blocks in all, more than the {MAX_BLOCKS} transformer blocks a model may have here "
                "(each takes milliseconds to build and to trace; the registered models have at most 25)")
    if key == "stripes" and not _is_ints(value, 1):
        return ("must be a list of positive integers, one stripe width (in tokens) per stage (a stripe of 0 would "
                "span the whole grid in both directions: that is a global head, see global_heads)")
    if key == "window" and not (isinstance(value, (list, tuple)) and len(value) == 2
                                and all(_is_int(v) and v >= 0 for v in value)):
        return ("must be a pair [window_h, window_w] of integers >= 0, the local window in tokens (0 means the whole "
                "axis: [0, 4] gives stripes of 4 columns)")
    if key in _BOOL_SETTINGS and not isinstance(value, bool):
        return "must be true or false (a boolean, not a string or a number)"
    if key == "mlp_ratio" and not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                   and math.isfinite(float(value)) and float(value) > 0):
        return "must be a finite number > 0 (the MLP's hidden width over the embedding width, e.g. 4.0)"
    if key == "in_chans" and not (_is_int(value) and value == 3):
        return ("is not supported: the exporter, validate and the image preprocessing take 3-channel (RGB) "
                "N x 3 x H x W inputs end to end; in_chans must be 3 (repeat a grayscale channel 3 times)")
    if key == "attention" and not (isinstance(value, str) and value in ATTENTION_KINDS):
        return f"must be one of {', '.join(map(repr, ATTENTION_KINDS))}"
    if key == "global_heads" and value is not None:
        if family == "cswin" and not _is_ints(value, 0):
            return ("must be a list with one count of global heads per stage (integers >= 0, e.g. [1, 2, 4, 8] for "
                    "four stages), or left out for half of each stage's heads")
        if family != "cswin" and not (_is_int(value) and value >= 0):
            return "must be an integer >= 0 (the number of global heads), or left out for half of num_heads"
    return ""


def _mlp_hidden(dim: int, mlp_ratio) -> int:
    return int(dim * mlp_ratio)  # as TransformerBlock computes it


def _config_problem(family: str, cfg: Mapping) -> str:
    """Why the settings ``cfg`` (defaults and overrides, each of the right type) cannot be built together ("" when they
    can; the models check what is left, e.g. heads that do not divide the channels)."""
    dims = [cfg.get("embed_dim", 384)] if family == "vit" else list(cfg.get("dims", ()))
    ratio = cfg.get("mlp_ratio", 4.0)
    if dims and min(_mlp_hidden(d, ratio) for d in dims) < 1:
        d = min(dims)
        return (f"mlp_ratio = {ratio!r} gives MLPs of int({d} * {ratio!r}) = 0 hidden units at width {d}; "
                f"it must be at least 1/{d} (the default is 4.0)")
    if dims and max(_mlp_hidden(d, ratio) for d in dims) > 2**31 - 1:  # sizes beyond int64 crash inside torch;
        # below that, a model too large for this machine is refused by the memory estimate / allocator (exit 3)
        return f"mlp_ratio = {ratio!r} gives MLPs of more than 2**31 hidden units; use a ratio such as 4.0"
    return ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> None:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry


for _name, _dim, _heads in (("tiny", 192, 3), ("small", 384, 6), ("base", 768, 12)):
    register_model(ModelEntry(
        name=f"elfatt_vit_{_name}",
        family="vit",
        builder=ElfattViT,
        defaults={"embed_dim": _dim, "depth": 12, "num_heads": _heads, "window": (7, 7)},
        summary=f"isotropic ViT/16, dim {_dim}, depth 12, {_heads} heads",
    ))

register_model(ModelEntry(
    name="elfatt_cswin_tiny",
    family="cswin",
    builder=ElfattCSWin,
    defaults={"dims": (64, 128, 256, 512), "depths": (1, 2, 21, 1), "heads": (2, 4, 8, 16), "stripes": (1, 2, 7, 7)},
    summary="CSWin-T-shaped hierarchical backbone, dims 64-512, depths 1/2/21/1",
))


# Reduced configs trained on the synthetic shapes task (elfatt_deploy.data.synthetic) at 112x112;
# their checkpoints ship in elfatt_deploy/reference_models/ (see docs/quantization.md).
register_model(ModelEntry(
    name="elfatt_vit_micro",
    family="vit",
    builder=ElfattViT,
    defaults={"embed_dim": 96, "depth": 4, "num_heads": 4, "window": (4, 4), "img_size": 112, "num_classes": 10},
    default_input_size=112,
    summary="reduced ViT/16, dim 96, depth 4, 4 heads, 4x4 windows, 10 classes (reference model, shapes task)",
))

register_model(ModelEntry(
    name="elfatt_cswin_micro",
    family="cswin",
    builder=ElfattCSWin,
    defaults={"dims": (32, 64, 96, 128), "depths": (1, 1, 2, 1), "heads": (2, 2, 4, 4), "stripes": (1, 2, 4, 2),
              "num_classes": 10},
    default_input_size=112,
    summary="reduced CSWin, dims 32-128, depths 1/1/2/1, 10 classes (reference model, shapes task)",
))


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if not isinstance(name, str):
        raise ValueError(f"the model name must be a string, got {name!r} ({type(name).__name__}); "
                         f"available: {', '.join(list_models())}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def model_config(name: str, **overrides) -> dict:
    """The full keyword configuration a model is built from (defaults + overrides)."""
    entry = get_entry(name)
    cfg = copy.deepcopy(entry.defaults)
    cfg.update(overrides)
    return cfg


def create_model(name: str, **overrides) -> nn.Module:
    """Builds a registered model; ``overrides`` replace constructor defaults.

    The returned module carries ``model_name``, ``model_config`` (a JSON-able
    dict) and ``default_input_size`` for exporters and reports.
    """
    entry = get_entry(name)
    entry.check_settings(overrides)
    cfg = model_config(name, **overrides)
    try:
        model = entry.builder(**cfg)
    except TypeError as exc:
        raise ValueError(f"bad override for model {name!r}: {exc}") from None
    model.model_name = name
    model.model_config = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    model.default_input_size = entry.default_input_size
    return model
