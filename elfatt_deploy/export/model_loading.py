"""The PyTorch model an export or a parity check starts from: registry name, config, weights.

``build_model`` records how the weights were made on the model (``weights_provenance``):
the checkpoint's absolute path and sha256, or the seed of the random initialization.
``export`` writes it into the file's metadata (``elfatt.weights``) and ``validate``
rebuilds exactly those weights from it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn

#: Without a checkpoint, weights come from this seed, so that `export` and `validate`
#: (in separate processes) build the same random model.
DEFAULT_SEED = 0


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_provenance(*, checkpoint: Optional[str] = None, seed: int = DEFAULT_SEED) -> dict:
    """``{"source": "checkpoint", "path", "sha256"}`` or ``{"source": "random", "seed"}``."""
    if checkpoint:
        path = Path(checkpoint).expanduser().resolve()
        return {"source": "checkpoint", "path": str(path), "sha256": file_sha256(path)}
    return {"source": "random", "seed": int(seed)}


def describe_weights(provenance: Optional[Mapping]) -> str:
    """One line for the terminal: ``checkpoint /w.safetensors (sha256 1a2b3c4d5e6f...)`` or ``random, seed 3``."""
    if not provenance:
        return "unknown"
    if provenance.get("source") == "checkpoint":
        return f"checkpoint {provenance.get('path')} (sha256 {str(provenance.get('sha256', ''))[:12]}...)"
    return f"random, seed {provenance.get('seed')}"


def parse_provenance(text: Optional[str]) -> Optional[dict]:
    """The ``elfatt.weights`` metadata value as a dict; None when absent or unreadable."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and value.get("source") in ("checkpoint", "random") else None


def build_model(name: str, *, checkpoint: Optional[str] = None, config: Optional[Mapping] = None,
                seed: int = DEFAULT_SEED) -> nn.Module:
    """``create_model(name, **config)`` in eval mode, with ``checkpoint`` loaded (weights_only) when given.

    The model carries ``weights_provenance`` (see ``weights_provenance``).
    """
    from ..checkpoint import load_checkpoint
    from ..models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(name, **dict(config or {}))
    if checkpoint:
        load_checkpoint(model, checkpoint)
    model.weights_provenance = weights_provenance(checkpoint=checkpoint, seed=seed)
    return model.eval()
