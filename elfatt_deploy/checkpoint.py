"""Loading trained weights into a model: ``.pt``/``.pth`` (weights_only) and ``.safetensors``."""

from __future__ import annotations

import re
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
            state = dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # SafetensorError (not a ValueError) for a truncated or foreign file
            raise ValueError(f"checkpoint {str(path)!r} is not a readable .safetensors file ({exc})") from None
        _check_keys_and_layouts(state, path)
        return state
    if suffix not in TORCH_SUFFIXES:
        raise ValueError(
            f"checkpoint {str(path)!r} has the suffix {suffix!r}; use one of "
            f"{', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}"
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ValueError(_load_failure_message(path, exc)) from None
    return _unwrap(obj, path)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _load_failure_message(path: Path, exc: Exception) -> str:
    """One line for a torch.load(weights_only=True) failure: which object the checkpoint holds that a safe
    load refuses (and how to re-save it), or that the file is no PyTorch checkpoint at all."""
    text = _ANSI.sub("", str(exc))
    where = f"checkpoint {str(path)!r}"
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found is not None or ("Weights only load failed" in text and "Unsupported operand" not in text):
        what = f" ({found.group(1)})" if found else ""
        return (f"{where} holds Python objects besides tensors{what}, which the safe load (weights_only=True) refuses "
                "to run; re-save its weights alone, from a file you trust: python -c \"import torch; "
                f"c = torch.load({str(path)!r}, weights_only=False); "
                "torch.save(c.get('state_dict', c.get('model', c)), 'weights.pt')\", or save it as .safetensors")
    operand = re.search(r"Unsupported operand \d+", text)  # the pickle's first byte is no pickle opcode
    first = operand.group(0) if operand else next((ln.strip() for ln in text.splitlines() if ln.strip()),
                                                  type(exc).__name__)
    first = first.split(". ")[0][:200]
    if " " not in first and first != type(exc).__name__:  # a bare KeyError('101') says nothing alone
        first = f"{type(exc).__name__} {first}"
    return (f"{where} is not a readable PyTorch checkpoint{_what_it_starts_with(path)} (torch.load: {first}); "
            "give a file written by torch.save(model.state_dict(), path), or a .safetensors file")


#: Leading bytes of files often given as a checkpoint by mistake.
_KNOWN_STARTS = ((b"\x08", "an ONNX model? (protobuf)"), (b"PK\x03\x04", "a zip archive that is not a torch.save file"),
                 (b"\x89HDF", "an HDF5 file (Keras?)"), (b"version https://git-lfs", "a Git LFS pointer; run git lfs pull"))


def _what_it_starts_with(path: Path) -> str:
    """A hint on what the file is, from its first bytes: empty, text (quoted), or a known foreign format."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return ""
    if not head:
        return ": the file is empty"
    for magic, what in _KNOWN_STARTS:
        if head.startswith(magic):
            return f": it looks like {what}"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
        line = text.splitlines()[0] if text.strip() else text
        return f": it holds text, starting {line[:40]!r}"
    return ""


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
    _check_keys_and_layouts(state, path)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _check_keys_and_layouts(state: Mapping, path: Path) -> None:
    """ValueError naming the first key that is no string, or the first tensor that is not a dense CPU tensor
    (sparse, meta, ...): neither can be loaded into a model's parameters."""
    for key, tensor in state.items():
        if not isinstance(key, str):
            raise ValueError(f"checkpoint {str(path)!r} has the key {key!r} ({type(key).__name__}); a state dict's keys "
                             "are parameter names (strings such as 'head.weight'): save model.state_dict()")
        if tensor.layout != torch.strided:
            raise ValueError(f"checkpoint {str(path)!r}: key {key!r} holds a {str(tensor.layout).replace('torch.', '')} "
                             "tensor; the model's parameters are dense: save it dense (tensor.to_dense())")
        if tensor.device.type == "meta":
            raise ValueError(f"checkpoint {str(path)!r}: key {key!r} is a meta tensor (a shape without values); "
                             "save the state dict of a model that holds its weights")


def _check_values(state: Mapping, own: Mapping, path: Path) -> None:
    """ValueError for a tensor that is not floating point where the model's parameter is (bool, integer and complex
    values would be cast without a word, or with torch's warning alone); a warning counting the keys that hold NaN
    or Inf."""
    for key, tensor in state.items():
        target = own.get(key)
        if target is not None and target.is_floating_point() and not tensor.is_floating_point():
            raise ValueError(f"checkpoint {str(path)!r}: key {key!r} holds {str(tensor.dtype).replace('torch.', '')} "
                             f"values, but the model's parameter is {str(target.dtype).replace('torch.', '')}; "
                             "a checkpoint of this model holds floating-point weights (was it saved from something "
                             "else, e.g. a mask or a quantized model?)")
    bad = [key for key, tensor in state.items()
           if key in own and tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all())]
    if bad:
        warnings.warn(f"checkpoint {str(path)!r}: {len(bad)} {'key holds' if len(bad) == 1 else 'keys hold'} NaN or Inf "
                      f"values: {_some(sorted(bad)).split(' ', 1)[1]}; the model's outputs will not be finite: was the "
                      "training diverging when it was saved?", stacklevel=3)


#: Keys of a mismatch message shown in full; the rest are counted.
KEYS_SHOWN = 5


def _strip_common_prefix(state: dict, own: Mapping) -> tuple[dict, str]:
    """Strips a leading ``name.`` that every key of ``state`` has and the model's keys lack (``model.``,
    ``backbone.``, ``_orig_mod.`` of torch.compile, ...), as long as that makes more keys match."""
    stripped = ""
    for _ in range(3):
        if not state:
            break
        first = {k.split(".", 1)[0] for k in state}
        if len(first) != 1 or any("." not in k for k in state):
            break
        prefix = next(iter(first)) + "."
        candidate = {k[len(prefix):]: v for k, v in state.items()}
        if sum(k in own for k in candidate) <= sum(k in own for k in state):
            break
        state, stripped = candidate, stripped + prefix
    return state, stripped


def _some(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:KEYS_SHOWN])
    more = f" and {len(keys) - KEYS_SHOWN} more" if len(keys) > KEYS_SHOWN else ""
    return f"{len(keys)} ({shown}{more})" if keys else "none"


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """'the unexpected keys are the missing ones under 'encoder.': ...' when stripping one prefix would match them."""
    if not missing or not unexpected:
        return ""
    missing_set = set(missing)
    prefixes = {}
    for key in unexpected:
        head, _, rest = key.partition(".")
        if rest in missing_set:
            prefixes[head + "."] = prefixes.get(head + ".", 0) + 1
    if not prefixes:
        return ""
    prefix, count = max(prefixes.items(), key=lambda kv: kv[1])
    return (f"; {count} unexpected keys are model keys under the prefix {prefix!r}: save the state dict without it "
            f"(e.g. {{k.removeprefix({prefix!r}): v for k, v in state.items()}})")


def _head_hint(key: str, found: list[int], expected: list[int]) -> str:
    if key.split(".")[0] == "head" and found and expected and found[1:] == expected[1:]:
        return (f"; the checkpoint's classifier has {found[0]} classes: pass --num-classes {found[0]} "
                f"(num_classes={found[0]} in create_model, [model_config] num_classes = {found[0]} in a recipe)")
    return "; is this a checkpoint of another model or configuration?"


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True) -> LoadResult:
    """Loads weights into ``model``.

    A prefix that every checkpoint key has and the model's keys lack (``model.``, ``backbone.``, ...)
    is stripped. Shape mismatches always raise ValueError naming the key and both shapes (and the
    --num-classes to pass for a classifier of another size). Missing or unexpected keys raise
    ValueError counting them and naming a few when ``strict``; otherwise they are reported with a
    warning and returned.
    """
    own = model.state_dict()
    state, _ = _strip_common_prefix(read_state_dict(path), own)
    for key, tensor in state.items():
        if key in own and tuple(own[key].shape) != tuple(tensor.shape):
            found, expected = list(tensor.shape), list(own[key].shape)
            raise ValueError(
                f"checkpoint {str(path)!r}: key {key!r} has shape {found} but the model expects {expected}"
                + _head_hint(key, found, expected)
            )
    _check_values(state, own, Path(path))
    result = LoadResult(
        missing_keys=sorted(k for k in own if k not in state),
        unexpected_keys=sorted(k for k in state if k not in own),
    )
    if not result.ok:
        message = (f"checkpoint {str(path)!r} does not match the model: missing keys {_some(result.missing_keys)}, "
                   f"unexpected keys {_some(result.unexpected_keys)}"
                   + _prefix_hint(result.missing_keys, result.unexpected_keys))
        if strict:
            raise ValueError(message + "; is this a checkpoint of another model or configuration? (In Python, "
                             "load_checkpoint(model, path, strict=False) loads the keys that match.)")
        warnings.warn(message, stacklevel=2)
    model.load_state_dict(state, strict=False)
    return result
