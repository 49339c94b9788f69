"""ONNX Runtime runner: Polygraphy's OnnxrtRunner over a session with checked execution providers.

The exported files run as they are: the ElfattAttention nodes execute through
their model-local function, no custom-op library is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

#: Short names accepted by --providers, as Polygraphy's SessionFromOnnx matches them.
PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}


#: The pip package that brings an execution provider ONNX Runtime knows but this build lacks.
PROVIDER_PACKAGES = {"CUDAExecutionProvider": "onnxruntime-gpu", "TensorrtExecutionProvider": "onnxruntime-gpu",
                     "OpenVINOExecutionProvider": "onnxruntime-openvino",
                     "DmlExecutionProvider": "onnxruntime-directml"}


#: Options that keep an FP32 model in FP32 on a provider that would otherwise round it: ONNX Runtime's CUDA EP
#: lets cuBLAS and cuDNN use TF32 by default (its provider option use_tf32, default 1, ONNX Runtime >= 1.18),
#: which puts an fp32 model ~5e-4 (relative L2) from PyTorch, 50x validate's onnxruntime fp32 limit
#: (bench/tf32_emulation_cpu.py). ONNX Runtime's TensorRT EP builds engines of its own: validate gives it
#: TensorRT's TF32 limit instead (validation/tolerances.py).
STRICT_FP32_PROVIDER_OPTIONS = {"CUDAExecutionProvider": {"use_tf32": "0"}}


def provider_options(providers: Sequence[str]) -> list[dict]:
    """The options each resolved provider gets (STRICT_FP32_PROVIDER_OPTIONS; {} for the others)."""
    return [dict(STRICT_FP32_PROVIDER_OPTIONS.get(p, {})) for p in providers]


def resolve_providers(providers: Optional[Sequence[str]]) -> list[str]:
    """Full ONNX Runtime provider names, in the given order (default CPU).

    A name ONNX Runtime does not know at all (a typo) is bad input (InputError, exit 2); a provider
    it knows but this installed build lacks (``cuda`` with the CPU-only ``onnxruntime``) is the
    environment (MissingDependencyError, exit 3), with the package that brings it."""
    import onnxruntime as ort

    from elfatt_deploy.errors import InputError, MissingDependencyError

    available = ort.get_available_providers()
    known = set(ort.get_all_providers())
    wanted = list(providers) if providers else ["cpu"]
    resolved = []
    for provider in wanted:
        full = PROVIDER_ALIASES.get(provider.strip().lower(), provider.strip())
        if full in available:
            resolved.append(full)
            continue
        listing = f"available here: {', '.join(available)} (short names: {', '.join(PROVIDER_ALIASES)})"
        if full not in known:
            raise InputError(f"--providers {provider!r} is not an ONNX Runtime execution provider; {listing}")
        package = PROVIDER_PACKAGES.get(full)
        install = (f"; install {package} in place of onnxruntime (pip uninstall onnxruntime && "
                   f"pip install {package})") if package else ""
        raise MissingDependencyError(f"ONNX Runtime execution provider {provider!r} ({full}) is not available "
                                     f"in this onnxruntime {ort.__version__}{install}; {listing}")
    return resolved


def _refuses_the_model(exc: BaseException) -> bool:
    """Whether ONNX Runtime's session creation failed on the file itself (an invalid graph or protobuf,
    a node its shape inference rejects: ORT's "Load model from ... failed"), not on the environment."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    if isinstance(exc, (state.InvalidGraph, state.InvalidProtobuf)):
        return True
    return type(exc).__module__.startswith("onnxruntime") and "Load model from" in str(exc)


def _session_loader(path: Path, providers: list[str]):
    """Polygraphy's SessionFromOnnx, with a file ONNX Runtime refuses reported as bad input (exit 2)
    that says what usually causes it, instead of an internal error."""
    from polygraphy.backend.onnxrt import SessionFromOnnx

    from elfatt_deploy.errors import InputError

    options = provider_options(providers)
    if any(options):  # ONNX Runtime's own call: Polygraphy takes (name, options) pairs only from 0.49.24 on
        import onnxruntime as ort

        def load():
            settings = ort.SessionOptions()  # the thread counts SessionFromOnnx sets (cpuset-limited containers)
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            settings.intra_op_num_threads = settings.inter_op_num_threads = threads
            return ort.InferenceSession(str(path), sess_options=settings, providers=list(providers),
                                        provider_options=options)
    else:
        load = SessionFromOnnx(str(path), providers=providers)

    def session():
        try:
            return load()
        except Exception as exc:
            if not _refuses_the_model(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(
                f"ONNX Runtime cannot load {str(path)!r}: {first}. If a tool rewrote the file after export "
                "(onnxslim, onnx-graphsurgeon, Polygraphy surgeon, onnx.version_converter), it may have dropped or "
                "merged the model-local ElfattAttention functions (their 'overload' field): re-export, export with "
                "--inline before such tools, or restore the functions with "
                "elfatt_deploy.export.onnx_function.attach_functions (docs/export.md, 'Which file for which tool')"
            ) from exc
    return session


def make_onnxruntime_runner(onnx_path, providers: Optional[Sequence[str]] = None, name: Optional[str] = None):
    """An OnnxrtRunner for ``onnx_path`` (providers in priority order; default CPU)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    return OnnxrtRunner(_session_loader(path, resolve_providers(providers)), name=name)
