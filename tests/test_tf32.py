"""TF32: the emulation behind validate's TF32 limit (bench/tf32_emulation_cpu.py), the limit's choice, and the
engine metadata that says whether an engine may use TF32."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from test_engine_file import legacy_bytes  # noqa: E402
from tf32_emulation_cpu import TF32Emulation, measure_model, round_to_tf32  # noqa: E402

from elfatt_deploy.cli import main  # noqa: E402
from elfatt_deploy.engine.engine_file import (  # noqa: E402
    SIDECAR_FORMAT,
    TF32_NO_SIDECAR,
    load_engine,
    TF32_NOT_RECORDED,
    EngineRecord,
    engine_record,
    sidecar_path,
    write_engine_file,
)
from elfatt_deploy.reference_models import checkpoint_path  # noqa: E402
from elfatt_deploy.validation.tolerances import (  # noqa: E402
    DEFAULT_RTOL_L2,
    TENSORRT_TF32_RTOL_L2,
    default_rtol_l2,
    tolerance_note,
)


def _tf32_by_arithmetic(x: np.ndarray, rounding: str) -> np.ndarray:
    """TF32 rounding of normal float32 values computed in float64 from the exponent (not from the bits)."""
    x64 = x.astype(np.float64)
    _, exponent = np.frexp(x64)  # |x| = m 2^e, m in [0.5, 1): 11 significant bits -> ulp 2^(e - 11)
    ulp = np.ldexp(1.0, exponent - 11)
    steps = np.abs(x64) / ulp
    steps = np.floor(steps + 0.5) if rounding == "nearest" else np.floor(steps)  # half away from zero on |x|
    return (np.sign(x64) * steps * ulp).astype(np.float32)


@pytest.mark.parametrize("rounding", ["nearest", "truncate"])
def test_round_to_tf32_matches_the_arithmetic_definition(rng, rounding):
    x = (rng.standard_normal(20000) * np.exp2(rng.integers(-60, 60, 20000))).astype(np.float32)
    # 1 + odd multiples of 2^-11 (exact in float32) sit halfway between two TF32 values: ties go away from zero
    ties = (1.0 + (2.0 * rng.integers(0, 1024, 64) + 1.0) * 2.0 ** -11) * np.exp2(rng.integers(-20, 20, 64))
    ties = np.concatenate([ties, -ties]).astype(np.float32)
    x = np.concatenate([x, ties, [0.0, -0.0, 1.0, -2.5]]).astype(np.float32)
    got = round_to_tf32(torch.from_numpy(x), rounding).numpy()
    np.testing.assert_array_equal(got, _tf32_by_arithmetic(x, rounding))
    assert not (got.view(np.int32) & 0x1FFF).any(), "the 13 low mantissa bits must be zero"
    bound = 2.0 ** -11 if rounding == "nearest" else 2.0 ** -10
    nonzero = x != 0
    assert (np.abs(got[nonzero] / x[nonzero] - 1) <= bound).all()
    special = torch.tensor([0x7F800000, -0x800000, 0x7FC00000, 0x7F800001, -0x7FF000], dtype=torch.int32)
    out = round_to_tf32(special.view(torch.float32), rounding)  # inf, -inf, NaN, NaNs with low payload bits only
    assert out[0] == float("inf") and out[1] == float("-inf") and torch.isnan(out[2:]).all()
    assert round_to_tf32(torch.ones(3, dtype=torch.float16)).dtype == torch.float16  # only FP32 is rounded
    with pytest.raises(ValueError, match="rounding 'up' must be one of nearest, truncate"):
        round_to_tf32(torch.ones(1), "up")


def test_the_emulation_rounds_a_linear_layer_and_attention(rng):
    x = torch.from_numpy(rng.standard_normal((5, 64)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((32, 64)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(32).astype(np.float32))
    with TF32Emulation("nearest") as mode:
        got = F.linear(x, w, b)
    expected = round_to_tf32(x).double() @ round_to_tf32(w).double().T + b.double()
    exact = x.double() @ w.double().T + b.double()
    assert mode.products == 1
    assert float((got.double() - expected).norm() / expected.norm()) < 1e-6  # TF32 inputs, FP32 sums
    assert float((got.double() - exact).norm() / exact.norm()) > 1e-5  # and not the FP32 product
    q, k, v = (torch.from_numpy(rng.standard_normal((1, 2, 7, 16)).astype(np.float32)) for _ in range(3))
    with TF32Emulation("truncate") as mode:
        out = F.scaled_dot_product_attention(q, k, v, scale=0.25)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=0.25)
    err = float((out.double() - ref).norm() / ref.norm())
    assert mode.products == 2 and 1e-5 < err < 5e-3


def test_tf32_leaves_an_fp32_engine_outside_the_strict_limit_and_inside_the_tf32_limit(rng):
    """The reason for both limits, on the trained ViT-micro at a shape that is no multiple of its 4x4 window
    (fresh random images): PyTorch fp32 is far inside the strict limit, TF32 truncation (the op's products too,
    as in a --no-plugin engine) is outside it, and every TF32 variant is inside TENSORRT_TF32_RTOL_L2."""
    seed = int(rng.integers(1 << 31))
    result = measure_model("elfatt_vit_micro", (4, 3, 90, 118), seed=seed,
                           checkpoint=str(checkpoint_path("elfatt_vit_micro")))
    errors = result["rel_l2_vs_float64"]
    strict = DEFAULT_RTOL_L2[("tensorrt", "fp32")]
    # docs/benchmarks.md, 2 images per draw: fp32 <= 8e-7 (300 draws); truncation with the op in TF32 >= 8.7e-4
    # (300 draws at 112x112) and <= 4.4e-3 (200 draws at 90x118)
    assert errors["fp32"] < strict / 20, errors
    assert errors["tf32 truncate, op tf32"] > 2 * strict, errors
    assert max(v for k, v in errors.items() if k != "fp32") < TENSORRT_TF32_RTOL_L2, errors


def test_tf32_keeps_an_fp16_engine_inside_the_fp16_limit(rng):
    """Why fp16 engines keep their limit whether or not TF32 was allowed: the FP16 export's model (FP32 head,
    LayerNorms and op products) with TF32 on its FP32 products stays inside the tensorrt fp16 limit, while
    TF32 visibly changes it (the emulation reached its FP32 products) and FP16 is far from strict FP32."""
    seed = int(rng.integers(1 << 31))
    result = measure_model("elfatt_vit_micro", (4, 3, 90, 118), seed=seed, precision="fp16",
                           checkpoint=str(checkpoint_path("elfatt_vit_micro")))
    errors = result["rel_l2_vs_float64"]
    assert result["precision"] == "fp16" and "fp32" not in errors, errors
    assert errors["fp16"] > DEFAULT_RTOL_L2[("tensorrt", "fp32")], errors  # it ran in FP16
    assert errors["tf32 truncate, op tf32"] != errors["fp16"], errors
    # docs/benchmarks.md (100 draws of 4 images at 90x118): fp16 <= 1.2e-3, with TF32 <= 2.7e-3
    assert max(errors.values()) < DEFAULT_RTOL_L2[("tensorrt", "fp16")], errors
    with pytest.raises(ValueError, match="precision 'bf16' must be one of fp32, fp16"):
        measure_model("elfatt_vit_micro", (1, 3, 32, 32), precision="bf16")


def test_default_tolerance_for_an_engine_that_may_use_tf32():
    assert default_rtol_l2("tensorrt", "fp32") == default_rtol_l2("tensorrt", "fp32", tf32=False) == 1e-4
    assert default_rtol_l2("tensorrt", "fp32", tf32=True) == TENSORRT_TF32_RTOL_L2 == 1e-2
    assert default_rtol_l2("tensorrt", "fp32", tf32=None) == TENSORRT_TF32_RTOL_L2  # not known: TF32's limit
    assert default_rtol_l2("tensorrt", "fp16", tf32=True) == 5e-3  # fp16 products: TF32 does not apply
    assert default_rtol_l2("tensorrt", "int8-qdq", tf32=True) == 5e-2
    assert default_rtol_l2("openvino", "fp32", tf32=True) == 1e-5  # TensorRT's (and ORT's TensorRT EP's) only
    assert default_rtol_l2("tensorrt", "fp32", 2e-4, tf32=True) == 2e-4  # --rtol-l2 wins
    assert tolerance_note("tensorrt", "fp32") == ""
    assert "built with --tf32" in tolerance_note("tensorrt", "fp32", tf32=True)
    assert "trtexec allows it unless --noTF32" in tolerance_note("tensorrt", "fp32", tf32=None)
    assert "predates the TF32 record" in tolerance_note("tensorrt", "fp32", tf32=None,
                                                        tf32_unknown_because="not recorded")
    assert tolerance_note("tensorrt", "fp16", tf32=None) == ""  # the same limit: nothing to explain
    assert tolerance_note("tensorrt", "fp32", 1e-3, tf32=None) == ": --rtol-l2"


def _tf32(path):
    return engine_record(path).tf32


def test_engine_metadata_says_whether_tf32_was_allowed(tmp_path):
    plan = b"not really a plan, but bytes TensorRT would get"
    for value in (True, False):
        path = write_engine_file(tmp_path / f"{value}.engine", {"tf32": value}, plan)
        assert _tf32(path) is value
    old = write_engine_file(tmp_path / "old.engine", {"precision": "fp16"}, plan)  # a sidecar before the key
    assert _tf32(old) is None
    assert engine_record(old) == EngineRecord(None, TF32_NOT_RECORDED, "fp16")
    legacy = tmp_path / "legacy.engine"
    legacy.write_bytes(legacy_bytes({"precision": "fp32"}, plan))  # the old one-file format
    assert engine_record(legacy) == EngineRecord(None, TF32_NOT_RECORDED, "fp32")
    sidecar_path(legacy).write_text(json.dumps({"format": SIDECAR_FORMAT, "format_version": 1, "tf32": False,
                                                "precision": "fp16"}))
    assert load_engine(legacy).metadata["precision"] == "fp32"  # the old format ignores a sidecar beside it
    assert engine_record(legacy) == EngineRecord(None, TF32_NOT_RECORDED, "fp32")  # and so does this
    bare = tmp_path / "bare.plan"
    bare.write_bytes(plan)  # trtexec --saveEngine: no sidecar
    assert engine_record(bare) == EngineRecord(None, TF32_NO_SIDECAR)
    assert _tf32(tmp_path / "missing.engine") is False  # the runner says what is wrong with it
    side = sidecar_path(bare)
    side.write_text("{not json")
    assert _tf32(bare) is False  # an unreadable sidecar: refused by the runner, no TF32 note
    side.write_text(json.dumps({"format": SIDECAR_FORMAT, "format_version": 1, "tf32": True, "plan": {"sha256": "0"}}))
    assert _tf32(bare) is True  # read as recorded; the runner refuses the stale sidecar itself


def test_validate_says_why_a_bare_plan_gets_the_tf32_limit(tmp_path, reference_vit_onnx, without_tensorrt, capsys):
    """Before it looks for TensorRT (absent here), validate names the limit it will apply and why."""
    bare = tmp_path / "from_trtexec.plan"
    bare.write_bytes(bytes(range(256)) * 8)
    rc = main(["validate", str(reference_vit_onnx), "--backend", "tensorrt", "--engine", str(bare), "--no-progress"])
    err = capsys.readouterr().err
    assert "note: tolerance 1.0e-02: the plan has no sidecar saying whether TF32 was allowed" in err, err
    assert rc == 3 and "TensorRT" in err, err
    engine = write_engine_file(tmp_path / "strict.engine", {"tf32": False}, bytes(range(256)) * 8)
    assert main(["validate", str(reference_vit_onnx), "--backend", "tensorrt", "--engine", str(engine),
                 "--no-progress"]) == 3
    assert "TF32" not in capsys.readouterr().err  # the strict limit: nothing to explain


def test_onnxruntime_cuda_ep_is_asked_for_strict_fp32(monkeypatch, tmp_path):
    """ONNX Runtime's CUDA EP uses TF32 unless use_tf32=0; the runner passes it (ONNX Runtime's own call, so that
    any supported Polygraphy works), and leaves the CPU EP on Polygraphy's SessionFromOnnx."""
    import onnxruntime as ort

    from elfatt_deploy.runtime import onnxruntime_runner as runner_mod

    assert runner_mod.provider_options(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [{"use_tf32": "0"}, {}]
    assert runner_mod.provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider"]) == [{}, {"use_tf32": "0"}]
    seen = {}

    def fake_session(path, sess_options=None, providers=None, provider_options=None, **kwargs):
        seen.update(path=path, providers=providers, provider_options=provider_options,
                    threads=(sess_options.intra_op_num_threads, sess_options.inter_op_num_threads))
        return "session"

    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    load = runner_mod._session_loader(model, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert load() == "session"
    threads = len(os.sched_getaffinity(0))  # what Polygraphy's SessionFromOnnx sets (cpuset-limited containers)
    assert seen == {"path": str(model), "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                    "provider_options": [{"use_tf32": "0"}, {}], "threads": (threads, threads)}
    seen.clear()
    runner_mod._session_loader(model, ["CPUExecutionProvider"])()  # through Polygraphy, which calls ONNX Runtime
    assert seen["providers"] == ["CPUExecutionProvider"] and seen["provider_options"] is None


def test_onnxruntime_tensorrt_ep_gets_the_tf32_limit(reference_vit_onnx, capsys):
    from elfatt_deploy.validation.tolerances import onnxruntime_may_use_tf32

    assert onnxruntime_may_use_tf32(["tensorrt", "cuda", "cpu"]) is None
    assert onnxruntime_may_use_tf32(["TensorrtExecutionProvider"]) is None
    assert onnxruntime_may_use_tf32(["cuda", "tensorrt"]) is False and onnxruntime_may_use_tf32(None) is False
    assert default_rtol_l2("onnxruntime", "fp32", tf32=None) == TENSORRT_TF32_RTOL_L2
    assert "TensorRT execution provider" in tolerance_note("onnxruntime", "fp32", tf32=None)
    rc = main(["validate", str(reference_vit_onnx), "--providers", "tensorrt,cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert "note: tolerance 1.0e-02: ONNX Runtime's TensorRT execution provider" in err, err
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        assert rc == 3 and "onnxruntime-gpu" in err, err


def test_engine_only_validate_takes_a_known_sidecar_precision(tmp_path, without_tensorrt, capsys):
    """No ONNX given: the sidecar's precision picks the limit when validate has one for it; another string
    (e.g. guessed from a bf16 input) falls back to fp32 with a note instead of stopping validate."""
    plan = bytes(range(256)) * 8
    for precision, expected in (("int8-qdq", None), ("bf16", "records precision 'bf16'")):
        engine = write_engine_file(tmp_path / f"{precision}.engine", {"tf32": False, "precision": precision}, plan)
        rc = main(["validate", "--backend", "tensorrt", "--engine", str(engine), "--model", "elfatt_vit_micro",
                   "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 3 and "no default tolerance for backend" not in err, err  # it got to the TensorRT check
        assert (expected in err) if expected else "records precision" not in err, err
