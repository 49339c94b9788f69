"""Shared helpers of the export tests (reduced-depth models, ORT sessions), and a check that they cover the models."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from elfatt_deploy.models import create_model
from elfatt_deploy.nn.attention import ElfattAttention

#: Reduced-depth configurations (same layer types, windows and stripes as the full models).
REDUCED = {
    "vit": ("elfatt_vit_tiny", {"depth": 2}),
    "cswin": ("elfatt_cswin_tiny", {"depths": (1, 2, 2, 1)}),
}
#: Three input sizes; 200x264 gives token grids that are not multiples of the windows / stripes.
SIZES = [(1, 3, 224, 224), (2, 3, 200, 264), (1, 3, 96, 160)]


def reduced_model(family: str, **overrides):
    name, config = REDUCED[family]
    return create_model(name, **{**config, **overrides}).eval()


def attention_layer_count(model) -> int:
    return sum(1 for m in model.modules() if isinstance(m, ElfattAttention) and m.attention == "elfatt")


def elfatt_nodes(model_proto: onnx.ModelProto):
    return [n for n in model_proto.graph.node if n.domain == "elfatt" and n.op_type == "ElfattAttention"]


def ort_session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def torch_reference(model, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(image)).double().numpy()


def random_image(rng, shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def test_reduced_models_keep_the_full_models_attention_layouts():
    """The parity tests run reduced depths; they must still cover every window / stripe layout."""
    for family, (name, _) in REDUCED.items():
        full = {(m.attrs.global_heads, m.attrs.local_heads, m.window) for m in create_model(name).modules()
                if isinstance(m, ElfattAttention)}
        reduced = {(m.attrs.global_heads, m.attrs.local_heads, m.window) for m in reduced_model(family).modules()
                   if isinstance(m, ElfattAttention)}
        assert reduced == full, family
