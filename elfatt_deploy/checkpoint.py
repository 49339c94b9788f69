"""Loading trained weights into a model: ``.pt``/``.pth`` (weights_only) and ``.safetensors``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
#: Keys under which training frameworks nest the state dict.
NESTED_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "ema")


@dataclass
class LoadResult:
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing_keys and not self.unexpected_keys


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a state dict from disk without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # SafetensorError (not a ValueError) for a truncated or foreign file
            raise ValueError(f"checkpoint {str(path)!r} is not a readable .safetensors file ({exc})") from None
    if suffix not in TORCH_SUFFIXES:
        raise ValueError(
            f"checkpoint {str(path)!r} has the suffix {suffix!r}; use one of "
            f"{', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}"
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ValueError(
            f"checkpoint {str(path)!r} could not be read with weights_only=True ({exc}); "
            "save it as a plain state dict (torch.save(model.state_dict(), path)) or as .safetensors"
        ) from None
    return _unwrap(obj, path)


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        nested = next((obj[k] for k in NESTED_KEYS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {str(path)!r} holds no state dict of tensors (looked under {', '.join(NESTED_KEYS)})")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True) -> LoadResult:
    """Loads weights into ``model``.

    Shape mismatches always raise ValueError naming the key and both shapes.
    Missing or unexpected keys raise ValueError listing them by name when
    ``strict``; otherwise they are reported with a warning and returned.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    for key, tensor in state.items():
        if key in own and tuple(own[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"checkpoint {str(path)!r}: key {key!r} has shape {list(tensor.shape)} but the model expects "
                f"{list(own[key].shape)}; is this a checkpoint of another model or configuration?"
            )
    result = LoadResult(
        missing_keys=sorted(k for k in own if k not in state),
        unexpected_keys=sorted(k for k in state if k not in own),
    )
    if not result.ok:
        message = (f"checkpoint {str(path)!r} does not match the model: missing keys {result.missing_keys or '[]'}, "
                   f"unexpected keys {result.unexpected_keys or '[]'}")
        if strict:
            raise ValueError(message + "; pass strict=False to load the keys that match")
        warnings.warn(message, stacklevel=2)
    model.load_state_dict(state, strict=False)
    return result
