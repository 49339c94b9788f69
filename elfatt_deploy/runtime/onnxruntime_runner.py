"""ONNX Runtime runner: Polygraphy's OnnxrtRunner over a session with checked execution providers.

The exported files run as they are: the ElfattAttention nodes execute through
their model-local function, no custom-op library is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

#: Short names accepted by --providers, as Polygraphy's SessionFromOnnx matches them.
PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}


def resolve_providers(providers: Optional[Sequence[str]]) -> list[str]:
    """Full ONNX Runtime provider names; ValueError naming a provider this onnxruntime lacks."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = list(providers) if providers else ["cpu"]
    resolved = []
    for provider in wanted:
        full = PROVIDER_ALIASES.get(provider.strip().lower(), provider.strip())
        if full not in available:
            hint = " (install onnxruntime-gpu for CUDA)" if full == "CUDAExecutionProvider" else ""
            raise ValueError(f"ONNX Runtime execution provider {provider!r} is not available here{hint}; "
                             f"available: {', '.join(available)}")
        resolved.append(full)
    return resolved


def make_onnxruntime_runner(onnx_path, providers: Optional[Sequence[str]] = None, name: Optional[str] = None):
    """An OnnxrtRunner for ``onnx_path`` (providers in priority order; default CPU)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    return OnnxrtRunner(SessionFromOnnx(str(path), providers=resolve_providers(providers)), name=name)
