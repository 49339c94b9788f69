"""A Polygraphy runner for a PyTorch module (the reference side of parity checks).

Polygraphy's stock ``PytRunner`` does not run on CPU-only machines as shipped,
so this small runner feeds numpy arrays (or torch tensors) to the module under
``torch.inference_mode`` and returns numpy arrays (torch tensors when fed torch).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Optional, Sequence

import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata
from torch import nn


class TorchRunner(BaseRunner):
    """Runs ``module(*inputs)`` on ``device``; one output per name in ``output_names``."""

    def __init__(
        self,
        module: nn.Module,
        input_names: Sequence[str] = ("image",),
        output_names: Sequence[str] = ("logits",),
        *,
        input_shapes: Optional[Sequence[Sequence]] = None,
        input_dtype: torch.dtype = torch.float32,
        device: str = "cpu",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name, prefix="torch-runner")
        self.module = module
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.input_shapes = list(input_shapes) if input_shapes else [("batch", 3, "height", "width")] * len(self.input_names)
        self.input_dtype = input_dtype
        self.device = torch.device(device)

    def activate_impl(self) -> None:
        self.module = self.module.to(self.device).eval()

    def get_input_metadata_impl(self) -> TensorMetadata:
        meta = TensorMetadata()
        for name, shape in zip(self.input_names, self.input_shapes):
            meta.add(name, dtype=self.input_dtype, shape=list(shape))
        return meta

    def infer_impl(self, feed_dict) -> "OrderedDict[str, object]":
        as_torch = any(isinstance(v, torch.Tensor) for v in feed_dict.values())
        inputs = [torch.as_tensor(feed_dict[n]).to(self.device) for n in self.input_names]
        start = time.perf_counter()
        with torch.inference_mode():
            outputs = self.module(*inputs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.inference_time = time.perf_counter() - start
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        if len(outputs) != len(self.output_names):
            raise ValueError(f"the module returned {len(outputs)} outputs but {len(self.output_names)} names were "
                             f"given ({', '.join(self.output_names)})")
        return OrderedDict(
            (n, o.detach() if as_torch else o.detach().cpu().numpy()) for n, o in zip(self.output_names, outputs)
        )

    def deactivate_impl(self) -> None:
        pass
