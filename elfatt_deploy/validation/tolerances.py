"""Default parity tolerances: relative L2 error of a backend's outputs against PyTorch float32."""

from __future__ import annotations

from typing import Optional

from ..engine.engine_file import TF32_NOT_RECORDED

#: (backend, precision of the deployed model) -> max relative L2 error
DEFAULT_RTOL_L2 = {
    ("onnxruntime", "fp32"): 1e-5,
    ("onnxruntime", "fp16"): 5e-3,
    # OpenVINO with INFERENCE_PRECISION_HINT f32 (the runner's default): measured 3.7e-7 (fp32) and
    # 4.9e-4 (fp16 file) on ViT-T; the fp16 limit is the op contract's 2e-3
    ("openvino", "fp32"): 1e-5,
    ("openvino", "fp16"): 2e-3,
    ("tensorrt", "fp32"): 1e-4,
    ("tensorrt", "fp16"): 5e-3,
    # INT8 Q/DQ (elfatt-deploy quantize): the reference models' logits move by ~1e-2 (docs/quantization.md)
    ("onnxruntime", "int8-qdq"): 5e-2,
    ("tensorrt", "int8-qdq"): 5e-2,
    ("openvino", "int8-qdq"): 5e-2,  # measured below (OPENVINO_INFERENCE_RTOL_L2)
}


#: A TensorRT engine whose FP32 layers may use TF32 (`build --tf32`; or not known: a plan without a sidecar, as
#: trtexec allows TF32 unless --noTF32, or a sidecar without the "tf32" key, whose build left TensorRT's
#: default on): TF32 rounds the inputs of FP32 matrix multiplies and convolutions to 10-bit mantissas.
#: Estimated by emulation on a CPU (bench/tf32_emulation_cpu.py, docs/benchmarks.md: every FP32 Linear, Conv,
#: MatMul and attention product fed TF32-rounded inputs, against float64). The trained reference models have
#: the heavy tail: ViT-micro, 300 draws of 2 images, truncation with the op's products in TF32 too: mean
#: 1.4e-3, p99 2.3e-3, max 2.9e-3 at 112x112, and up to 4.4e-3 in 200 draws at 90x118; round-to-nearest
#: <= 1.2e-3 (all 2 images per draw; single images spread wider: 3.8e-3 and 1.2e-3 at most in 200 draws).
#: Strict FP32 gives <= 8e-7. Hence 1e-2, ~2.3x the worst single draw seen.
TENSORRT_TF32_RTOL_L2 = 1e-2


#: OpenVINO asked to compute below the file's precision (validate/bench --inference-precision): the
#: default is the larger of the file's and this. Measured (fp32 files of the reference models, OpenVINO
#: 2025 CPU, logits, 2 shapes x 3 samples): bf16 2.97e-3 (ViT-micro) and 3.24e-3 (CSWin-micro) on an Intel
#: Xeon without bf16 units (a first limit of 1e-2 left ~3x there). On an AMD EPYC with avx512_bf16 (2026-12-07, OpenVINO 2026.4.1, 2x3x112x112 and
#: 1x3x90x118, 13 seeds) bf16 reached 1.34e-2 (ViT-micro, random weights; 7.3e-3 trained, ViT-T random 4.8e-3), hence
#: 3e-2 (2.2x). OpenVINO's CPU plugin computes f16 requests in bf16 on CPUs without f16 units
#: (runtime/openvino_runner.cpu_inference_precision; validate applies the bf16 limit then); f16 is not applied on
#: CPUs with neither (3e-7 there) and is
#: given the fp16 limit of the other GPU backends (5e-3). INT8 Q/DQ files: OpenVINO 3.52e-2 / 2.27e-2,
#: ONNX Runtime 3.57e-2 / 2.36e-2 on the same inputs, hence the same limit.
OPENVINO_INFERENCE_RTOL_L2 = {"f32": 0.0, "bf16": 3e-2, "f16": 5e-3}


#: An int8-qdq file with 8-bit weights run by a CPU backend (ONNX Runtime's CPU EP, OpenVINO's CPU device) on
#: an x86 CPU without VNNI: their int8 kernels sum u8 x s8 products in saturating 16-bit pairs (ONNX Runtime's
#: quantization documentation: "reduce_range ... may improve the accuracy ... on non-VNNI machines"). Measured
#: (2026-12-04, AVX2 Xeon without VNNI, ViT-micro Q/DQ, 2 shapes x 2 samples / 100 held-out images): OpenVINO
#: 8.4e-2 / 4.5e-2, ONNX Runtime 3.3e-2 / 2.8e-2; one MatMul with random per-channel weights moves by 2.6e-2
#: against the Q/DQ semantics in both. With 7-bit weights (quantize --reduce-range): 1.7e-2 / 1.2e-2 and
#: 1.7e-2 / 1.1e-2. Hence 1.5e-1 there (~1.8x the worst), and the note that says why.
CPU_INT8_WITHOUT_VNNI_RTOL_L2 = 1.5e-1
_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


def _cpuinfo_field(name: str, cpuinfo: str = "/proc/cpuinfo") -> Optional[str]:
    """The value of the first /proc/cpuinfo line named ``name`` (None where it cannot be read or is absent)."""
    try:
        text = open(cpuinfo, encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name):
            return line.split(":", 1)[-1].strip()
    return None


def onnxruntime_may_use_tf32(providers) -> Optional[bool]:
    """None (may use TF32, not known) when ONNX Runtime's first provider is its TensorRT EP, else False (the CPU
    EP has no TF32; the CUDA EP is given use_tf32=0 by the runner)."""
    first = str(providers[0]).strip().lower() if providers else "cpu"
    return None if first in ("tensorrt", "tensorrtexecutionprovider") else False


def x86_without_vnni(cpuinfo: str = "/proc/cpuinfo", machine: Optional[str] = None) -> bool:
    """True on an x86-64 Linux CPU whose flags list no VNNI (avx512_vnni, avx_vnni, amx_int8); False elsewhere
    or when the flags cannot be read (nothing is claimed then)."""
    import platform

    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return False
    flags = set((_cpuinfo_field("flags", cpuinfo) or "").split())
    return bool(flags) and not flags & _VNNI_FLAGS


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> Optional[str]:
    """The CPU's model name as /proc/cpuinfo gives it (None where it cannot be read)."""
    return _cpuinfo_field("model name", cpuinfo) or None


def saturating_cpu_int8(backend: str, precision: str, metadata, *, providers=None, device: Optional[str] = None,
                        cpu_without_vnni: Optional[bool] = None) -> bool:
    """Whether an int8-qdq file with 8-bit weights (not quantize --reduce-range) runs on the CPU kernels of
    ONNX Runtime or OpenVINO on an x86 CPU without VNNI (CPU_INT8_WITHOUT_VNNI_RTOL_L2)."""
    if precision != "int8-qdq" or str((metadata or {}).get("reduce_range", "false")).lower() == "true":
        return False
    if backend == "onnxruntime":
        first = str(providers[0]).lower() if providers else "cpu"
        on_cpu = first in ("cpu", "cpuexecutionprovider")
    elif backend == "openvino":
        on_cpu = str(device or "CPU").upper() == "CPU"
    else:
        return False
    return on_cpu and (x86_without_vnni() if cpu_without_vnni is None else cpu_without_vnni)


def known_precisions(backend: str) -> frozenset:
    """The precisions DEFAULT_RTOL_L2 has a limit for on ``backend``."""
    return frozenset(p for b, p in DEFAULT_RTOL_L2 if b == backend)


def deployed_precision(backend: str, given: Optional[str], onnx_precision: Optional[str],
                       engine_precision: Optional[str]) -> tuple[str, list[str]]:
    """The precision whose default limit validate applies, and notes where the files leave a choice.

    ``given`` (--precision) wins. For TensorRT the engine's recorded precision comes next: the engine is
    what computes, and the ONNX beside it may be another export of the same model (an fp32 ONNX next to the
    engine built from its fp16 or int8-qdq export); a recorded precision without a limit here (e.g. guessed
    from a bf16 input) is set aside with a note. Then the ONNX's metadata, then fp32."""
    notes: list[str] = []
    if given:
        return given, notes  # the user's choice: nothing to explain
    if engine_precision is not None and engine_precision not in known_precisions(backend):
        notes.append(f"the engine's sidecar records precision {engine_precision!r}, which has no default "
                     f"tolerance; taking {onnx_precision or 'fp32'} (give --precision or --rtol-l2 to choose)")
        engine_precision = None
    if engine_precision is not None:
        if onnx_precision and onnx_precision != engine_precision:
            notes.append(f"the engine records precision {engine_precision} and the ONNX {onnx_precision}; the "
                         f"{engine_precision} limit applies, as the engine computes (give --precision to choose)")
        return engine_precision, notes
    return onnx_precision or "fp32", notes


def default_rtol_l2(backend: str, precision: str, override: Optional[float] = None, *,
                    inference_precision: Optional[str] = None, cpu_int8_saturation: bool = False,
                    tf32: Optional[bool] = False) -> float:
    """The tolerance to apply: ``override`` when given, else the default for backend and precision
    (and, for OpenVINO, the precision it is told to compute in: OPENVINO_INFERENCE_RTOL_L2; for an
    int8 file on a CPU without VNNI, CPU_INT8_WITHOUT_VNNI_RTOL_L2; for a TensorRT engine that may use
    TF32, ``tf32`` True or None (not known), TENSORRT_TF32_RTOL_L2, and the same for ONNX Runtime with its
    TensorRT EP first: ``onnxruntime_may_use_tf32``)."""
    if override is not None:
        if not (0 < override < float("inf")):  # NaN fails both comparisons
            raise ValueError(f"relative L2 tolerance {override!r} must be a positive finite number, e.g. 1e-5")
        return float(override)
    try:
        limit = DEFAULT_RTOL_L2[(backend, precision)]
    except KeyError:
        known = ", ".join(sorted({f"{b}/{p}" for b, p in DEFAULT_RTOL_L2}))
        raise ValueError(f"no default tolerance for backend {backend!r} at precision {precision!r} (known: {known}); "
                         "pass --rtol-l2") from None
    if inference_precision is not None:
        limit = max(limit, OPENVINO_INFERENCE_RTOL_L2[inference_precision])
    if cpu_int8_saturation:
        limit = max(limit, CPU_INT8_WITHOUT_VNNI_RTOL_L2)
    if backend in ("tensorrt", "onnxruntime") and precision == "fp32" and tf32 is not False:
        # fp16 and int8 files keep their own, larger limits: TF32 on the FP32 products an fp16 export keeps (the
        # head, the op's products) left it inside 5e-3 by emulation (at most 3.5e-3; docs/benchmarks.md)
        limit = max(limit, TENSORRT_TF32_RTOL_L2)
    return limit


def tolerance_note(backend: str, precision: str, override: Optional[float] = None, *,
                   inference_precision: Optional[str] = None, cpu_int8_saturation: bool = False,
                   tf32: Optional[bool] = False, tf32_unknown_because: Optional[str] = None) -> str:
    """Why the tolerance is what it is, when that is not the plain default (for the PASS/FAIL line)."""
    if override is not None:
        return ": --rtol-l2"
    if backend in ("tensorrt", "onnxruntime") and tf32 is not False and \
            default_rtol_l2(backend, precision, tf32=tf32) > default_rtol_l2(backend, precision):
        if backend == "onnxruntime":
            return (": ONNX Runtime's TensorRT execution provider builds engines of its own, which may use TF32, "
                    "so TensorRT's TF32 limit applies (put cuda first in --providers for strict FP32)")
        if tf32:
            return ": the engine was built with --tf32 (FP32 layers may round their inputs to TF32)"
        if tf32_unknown_because == TF32_NOT_RECORDED:
            return (": the engine's metadata predates the TF32 record, and its build left TensorRT's default (TF32 "
                    "allowed), so TF32's limit applies; rebuild it with `elfatt-deploy build` (no TF32 unless --tf32)")
        return (": the plan has no sidecar saying whether TF32 was allowed (trtexec allows it unless --noTF32), so "
                "TF32's limit applies; give --rtol-l2 1e-4 for a --noTF32 plan, or build with `elfatt-deploy build` "
                "(no TF32 unless --tf32), which records it")
    if cpu_int8_saturation and default_rtol_l2(backend, precision, inference_precision=inference_precision,
                                               cpu_int8_saturation=True) > default_rtol_l2(
                                                   backend, precision, inference_precision=inference_precision):
        return (": int8 with 8-bit weights on an x86 CPU without VNNI, whose int8 kernels saturate 16-bit sums; "
                "`elfatt-deploy quantize --reduce-range` avoids it (docs/quantization.md)")
    if inference_precision and inference_precision != "f32":
        plain = default_rtol_l2(backend, precision)
        if default_rtol_l2(backend, precision, inference_precision=inference_precision) > plain:
            return f": OpenVINO computing in {inference_precision} (--inference-precision)"
    return ""


#: The op contract's limits for one op call, as relative L2 error against the float64 reference.
OP_RTOL_L2 = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-3}

#: How far an output may exceed the rounding error of the exact answer itself (see op_rtol_l2).
OUTPUT_ROUNDING_MARGIN = 1.25


def op_rtol_l2(dtype: str, rounding_error: float = 0.0) -> float:
    """Limit for one op output of ``dtype`` ("float32", "float16", "bfloat16") against float64.

    ``rounding_error`` is the relative L2 error of the float64 reference merely rounded to
    ``dtype``. For bfloat16 (8 significant bits) that alone averages ~1.7e-3 and exceeds the
    contract's 2e-3 for a few percent of outputs under ~100 elements, so a correct kernel would
    fail at random there. The limit is the contract's, or OUTPUT_ROUNDING_MARGIN times that
    unavoidable error where it is larger: still tight enough to catch a kernel that adds an
    error of its own of the size of the rounding.
    """
    try:
        limit = OP_RTOL_L2[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(OP_RTOL_L2)}") from None
    if not rounding_error >= 0.0:
        raise ValueError(f"rounding_error {rounding_error!r} must be a non-negative number")
    return max(limit, OUTPUT_ROUNDING_MARGIN * float(rounding_error))
