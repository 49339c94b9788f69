"""validate --backend tensorrt: the limit follows the precision the engine records (the engine is what computes),
and validate says when the ONNX given beside the engine is not the one it was built from."""

from __future__ import annotations

import pytest

from elfatt_deploy.cli import main
from elfatt_deploy.engine.engine_file import engine_record, sha256_file, write_engine_file
from elfatt_deploy.validation.tolerances import deployed_precision

PLAN = bytes(range(256)) * 8  # not a plan TensorRT could load; validate stops at the TensorRT check here


@pytest.mark.parametrize("given, onnx, engine, expected, note", [
    (None, "fp32", "int8-qdq", "int8-qdq", "the int8-qdq limit applies"),
    (None, "fp32", "fp16", "fp16", "the fp16 limit applies"),
    (None, "fp16", "fp16", "fp16", None),
    (None, None, "int8-qdq", "int8-qdq", None),
    (None, "fp16", None, "fp16", None),           # a plan without a sidecar: the ONNX says
    (None, None, None, "fp32", None),
    ("fp32", "fp16", "int8-qdq", "fp32", None),   # --precision wins, without a note
    ("fp32", "fp16", "bf16", "fp32", None),       # ... also where the sidecar's precision has no limit
    (None, "fp16", "bf16", "fp16", "records precision 'bf16'"),  # no limit for bf16: set aside
    (None, None, "bf16", "fp32", "taking fp32"),
])
def test_the_engine_precision_picks_the_tensorrt_limit(given, onnx, engine, expected, note):
    precision, notes = deployed_precision("tensorrt", given, onnx, engine)
    assert precision == expected
    assert (note in " ".join(notes)) if note else notes == [], notes


def test_an_int8_engine_beside_its_fp32_onnx_gets_the_int8_limit(tmp_path, reference_vit_onnx, without_tensorrt,
                                                                  capsys):
    """Before it looks for TensorRT (absent here) validate names the precision it took and why, and says that
    the ONNX is not the engine's source when the recorded hash differs; with the source ONNX it says neither."""
    # the sidecar's layout as build_metadata writes it (engine/metadata.py; tests/test_engine_fake_trt.py builds one)
    engine = write_engine_file(tmp_path / "int8.engine", {"tf32": False, "precision": "int8-qdq", "source_onnx": {
        "path": str(tmp_path / "int8.onnx"), "sha256": "0" * 64}}, PLAN)
    assert engine_record(engine).source_onnx_sha256 == "0" * 64
    rc = main(["validate", str(reference_vit_onnx), "--backend", "tensorrt", "--engine", str(engine), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3 and "TensorRT" in err, err
    assert "the engine records precision int8-qdq and the ONNX fp32; the int8-qdq limit applies" in err, err
    assert "was built from another ONNX than" in err and "source_onnx.sha256" in err, err
    assert main(["validate", str(reference_vit_onnx), "--backend", "tensorrt", "--engine", str(engine), "--rtol-l2",
                 "1e-2", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "limit applies" not in err and "another ONNX" in err, err  # a given limit: no precision note

    source = write_engine_file(tmp_path / "fp32.engine", {"tf32": False, "precision": "fp32", "source_onnx": {
        "path": str(reference_vit_onnx), "sha256": sha256_file(reference_vit_onnx)}}, PLAN)
    assert main(["validate", str(reference_vit_onnx), "--backend", "tensorrt", "--engine", str(source),
                 "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "records precision" not in err and "another ONNX" not in err, err
