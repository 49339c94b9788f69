"""Model registry: ``create_model(name, **overrides)`` and ``list_models()``."""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

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
        """ValueError naming each unknown setting and the valid ones (``where`` says where they came from)."""
        unknown = [k for k in overrides if k not in self.settings()]
        if unknown:
            raise ValueError(f"{where}{', '.join(map(repr, unknown))} {'is not a setting' if len(unknown) == 1 else 'are not settings'} "
                             f"of {self.name}; its settings: {', '.join(self.settings())}")
        for key, value in overrides.items():
            problem = _size_problem(key, value)
            if problem:
                default = self.defaults.get(key)
                raise ValueError(f"{where}{key} = {value!r} {problem}" +
                                 (f" ({self.name}'s default: {default!r})" if default is not None else ""))

    def window_summary(self) -> str:
        if self.family == "vit":
            wh, ww = self.defaults.get("window", (7, 7))
            return f"{wh}x{ww} windows"
        stripes = self.defaults.get("stripes", (1, 2, 7, 7))
        return "stripes " + "/".join(str(s) for s in stripes) + " (alternating rows/columns)"


#: sizes a model cannot have zero or less of (a depth of 0 would export a model without attention layers)
_POSITIVE_INT_SETTINGS = frozenset({"embed_dim", "depth", "num_heads", "img_size", "patch_size", "in_chans"})
_POSITIVE_INTS_SETTINGS = frozenset({"dims", "depths", "heads", "stripes", "window"})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _size_problem(key: str, value) -> str:
    """Why ``value`` cannot be the size setting ``key`` ("" when it can, or when ``key`` is no size setting)."""
    if key in _POSITIVE_INT_SETTINGS and not (_is_int(value) and value >= 1):
        return "must be a positive integer"
    if key in _POSITIVE_INTS_SETTINGS and not (isinstance(value, (list, tuple)) and value
                                                and all(_is_int(v) and v >= 1 for v in value)):
        return "must be a list of positive integers"
    return ""  # (num_classes has its own check, in the models)


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
