"""A classifier whose output is class probabilities (softmax of its logits), for ``export --softmax``.

Consumers such as DeepStream's nvinfer classifier mode read an output as probabilities: its default
parser takes, per frame, the class whose value is above ``classifier-threshold`` and above 0, and
reports that value as the confidence. Raw logits break both (a frame whose best logit is negative
gets no class). The softmax runs in float32 whatever the model's precision.
"""

from __future__ import annotations

import torch
from torch import nn

#: The exported output's name when it holds probabilities (``logits`` otherwise, ``features`` without a head).
PROBABILITIES_OUTPUT = "probabilities"


class WithProbabilities(nn.Module):
    """``softmax(model(x), dim=-1)`` in float32; keeps the wrapped model's identifying attributes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        classes = getattr(model, "num_classes", None)
        if classes is not None and classes <= 0:
            raise ValueError(f"softmax needs a classifier head, but the model has num_classes={classes} (its output is "
                             "features); export it without --softmax, or with --num-classes N")
        self.model = model
        for name in ("num_classes", "model_name", "model_config", "weights_provenance"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x).float(), dim=-1)
