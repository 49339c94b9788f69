"""INT8 on CPUs without VNNI: quantize --reduce-range (7-bit weights) and validate's tolerance there."""

import numpy as np
import onnx
import pytest

from elfatt_deploy.validation.tolerances import (CPU_INT8_WITHOUT_VNNI_RTOL_L2, default_rtol_l2, saturating_cpu_int8,
                                                 tolerance_note, x86_without_vnni)


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n")
    return str(path)


def test_vnni_is_read_from_the_cpu_flags(tmp_path):
    assert x86_without_vnni(_cpuinfo(tmp_path, "fpu sse2 avx avx2 fma"), machine="x86_64")
    assert not x86_without_vnni(_cpuinfo(tmp_path, "fpu avx2 avx512f avx512_vnni"), machine="x86_64")
    assert not x86_without_vnni(_cpuinfo(tmp_path, "fpu avx2 avx_vnni"), machine="x86_64")
    assert not x86_without_vnni(_cpuinfo(tmp_path, "fp asimd"), machine="aarch64")  # not claimed on ARM
    assert not x86_without_vnni(str(tmp_path / "missing"), machine="x86_64")  # unreadable: nothing claimed


def test_which_runs_get_the_cpu_int8_tolerance():
    meta8, meta7 = {"reduce_range": "false"}, {"reduce_range": "true"}
    yes = dict(cpu_without_vnni=True)
    assert saturating_cpu_int8("openvino", "int8-qdq", meta8, **yes)
    assert saturating_cpu_int8("onnxruntime", "int8-qdq", {}, **yes)  # files from before the key: 8-bit weights
    assert saturating_cpu_int8("onnxruntime", "int8-qdq", meta8, providers=["cpu"], **yes)
    assert not saturating_cpu_int8("onnxruntime", "int8-qdq", meta8, providers=["cuda", "cpu"], **yes)
    assert not saturating_cpu_int8("openvino", "int8-qdq", meta8, device="GPU", **yes)
    assert not saturating_cpu_int8("openvino", "int8-qdq", meta7, **yes)
    assert not saturating_cpu_int8("openvino", "fp16", meta8, **yes)
    assert not saturating_cpu_int8("tensorrt", "int8-qdq", meta8, **yes)
    assert not saturating_cpu_int8("openvino", "int8-qdq", meta8, cpu_without_vnni=False)
    assert default_rtol_l2("openvino", "int8-qdq") == 5e-2
    assert default_rtol_l2("openvino", "int8-qdq", cpu_int8_saturation=True) == CPU_INT8_WITHOUT_VNNI_RTOL_L2
    assert default_rtol_l2("openvino", "int8-qdq", 1e-2, cpu_int8_saturation=True) == 1e-2  # --rtol-l2 wins
    assert "--reduce-range" in tolerance_note("onnxruntime", "int8-qdq", cpu_int8_saturation=True)
    assert tolerance_note("onnxruntime", "int8-qdq") == ""


def test_reduce_range_gives_7_bit_weights(reference_vit_onnx, calibration_images, tmp_path):
    from elfatt_deploy.quantize.qdq import quantize_onnx

    results = {}
    for reduce in (False, True):
        out = tmp_path / f"q{int(reduce)}.onnx"
        quantize_onnx(reference_vit_onnx, out, calibration_images.root, samples=8, progress=False, reduce_range=reduce)
        model = onnx.load(str(out))
        props = {p.key: p.value for p in model.metadata_props}
        assert props["elfatt.reduce_range"] == ("true" if reduce else "false")
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        levels = []
        for node in model.graph.node:  # weights: QuantizeLinear of a float initializer (AddQDQPairToWeight)
            if node.op_type == "QuantizeLinear" and node.input[0] in inits and inits[node.input[0]].ndim >= 2:
                w, scale = inits[node.input[0]].astype(np.float64), inits[node.input[1]].astype(np.float64)
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                shape = [1] * w.ndim
                shape[axis] = -1
                levels.append(int(np.abs(np.round(w / scale.reshape(shape))).max()))
        assert levels
        results[reduce] = max(levels)
    assert results[False] == 127 and results[True] <= 64, results
    from elfatt_deploy.engine.metadata import quantization_from_onnx

    for reduce in (False, True):  # what build copies into the engine's sidecar
        props = {p.key: p.value for p in onnx.load(str(tmp_path / f"q{int(reduce)}.onnx")).metadata_props}
        assert quantization_from_onnx(props)["reduce_range"] is reduce
