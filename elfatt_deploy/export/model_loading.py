"""The PyTorch model an export or a parity check starts from: registry name, config, weights."""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

#: Without a checkpoint, weights come from this seed, so that `export` and `validate`
#: (in separate processes) build the same random model.
DEFAULT_SEED = 0


def build_model(name: str, *, checkpoint: Optional[str] = None, config: Optional[Mapping] = None,
                seed: int = DEFAULT_SEED) -> nn.Module:
    """``create_model(name, **config)`` in eval mode, with ``checkpoint`` loaded (weights_only) when given."""
    from ..checkpoint import load_checkpoint
    from ..models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(name, **dict(config or {}))
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model.eval()
