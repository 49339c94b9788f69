"""`build` on a quantized (int8-qdq) file, against the strict fake `tensorrt` of test_engine_fake_trt.py."""

import onnx
import pytest

from test_engine_fake_trt import fake_build  # noqa: F401  (the fixture)
from elfatt_deploy.engine.builder import BuildOptions, prepare_build
from elfatt_deploy.engine.engine_file import read_engine_file


@pytest.mark.parametrize("version", ["10.3.0", "11.1.0"])
def test_a_qdq_file_builds_strongly_typed_with_the_plugin_and_records_its_calibration(fake_build, reference_vit_int8,
                                                                                      version):
    meta, calls, options = fake_build(version, use_plugin=True, onnx_path=reference_vit_int8.output,
                                       shapes="min:1x3x112x112,opt:1x3x112x112,max:4x3x224x224")
    header, _ = read_engine_file(options.output)
    for m in (meta, header):
        assert m["precision"] == "int8-qdq" and m["strongly_typed"] and m["plugin"]["used"]
        q = m["quantization"]
        assert q["calibration_images"] == 30 == reference_vit_int8.calibration["images"]
        assert q["calibration_sha256"] == reference_vit_int8.calibration["sha256"]
        assert q["calibration_method"] == "max" and q["base_precision"] == "fp32"
        assert q["quantized_nodes"] == len(reference_vit_int8.quantized)


def test_the_parser_gets_the_qdq_graph_without_the_function_body(reference_vit_int8, tmp_path):
    plan = prepare_build(BuildOptions(onnx_path=reference_vit_int8.output, output=tmp_path / "m.engine",
                                      use_plugin=True, plugin=str(_fake_plugin(tmp_path)), shapes="1x3x112x112"))
    parsed = onnx.load_from_string(plan.model_bytes)
    assert not parsed.functions and plan.elfatt_node_count == 4
    assert sum(n.op_type == "DequantizeLinear" for n in parsed.graph.node) == 2 * len(reference_vit_int8.quantized)
    assert any("FP32 export" in note for note in plan.notes)  # says how to get FP16 plugin I/O


def test_an_fp32_file_has_no_quantization_block(fake_build):
    meta, _, _ = fake_build("10.3.0")
    assert meta["quantization"] is None


def _fake_plugin(tmp_path):
    lib = tmp_path / "libelfatt_trt_plugin.so"
    lib.write_bytes(b"\x7fELF")
    return lib
