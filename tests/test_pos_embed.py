"""pos_embed: bicubic resampling as two matrix products (models/resample.py), folded in static exports (export/fold.py)."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from _naive_elfatt import rel_l2
from test_export_helpers import ort_session, random_image, reduced_model, torch_reference
from elfatt_deploy import export_onnx
from elfatt_deploy.export.fold import fold_constant_nodes
from elfatt_deploy.models.padding import pad_to_multiple
from elfatt_deploy.models.resample import bicubic_matrix, resize_bicubic_channels_last


def _interpolate64(table: torch.Tensor, h: int, w: int) -> np.ndarray:
    """F.interpolate in float64 (the exact reference), channels last."""
    out = F.interpolate(table.double(), size=(h, w), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).numpy()


def _random_sizes(rng, count):
    """(grid_h, grid_w, h, w): tables from 1x1 to 16x16 resampled up, down, to odd sizes and to 1."""
    cases = [(14, 14, 14, 14), (14, 14, 64, 64), (14, 14, 5, 9), (7, 9, 3, 2), (14, 14, 1, 1), (1, 1, 5, 4)]
    for _ in range(count):
        gh, gw = (int(v) for v in rng.integers(1, 17, size=2))
        h, w = (int(v) for v in rng.integers(1, 130, size=2))
        cases.append((gh, gw, h, w))
    return cases


def test_resample_matches_float64_interpolate_on_random_tables_and_sizes(rng):
    for gh, gw, h, w in _random_sizes(rng, 12):
        channels = int(rng.integers(1, 40))
        table = torch.from_numpy(rng.standard_normal((1, channels, gh, gw)).astype(np.float32))
        out = resize_bicubic_channels_last(table, h, w)
        assert out.shape == (1, h, w, channels) and out.dtype == torch.float32
        # float32 rounding relative to the table's scale: a relative L2 of a 1x1 output with one or two
        # channels divides by a random number that can be near 0 (failed 29 of 40000 draws at 1e-6); the
        # bound peaked at 0.56e-6 of max|table| over 27000 resamples (2026-12-07)
        error = np.abs(out.double().numpy() - _interpolate64(table, h, w)).max()
        assert error <= 2e-6 * float(table.abs().max()), (gh, gw, h, w, channels)


def test_resample_is_exact_at_the_tables_own_size(rng):
    table = torch.from_numpy(rng.standard_normal((1, 24, 14, 9)).astype(np.float32))
    assert torch.equal(resize_bicubic_channels_last(table, 14, 9), table.permute(0, 2, 3, 1))


def test_interpolation_matrix_rows_sum_to_one_with_four_taps_at_most(rng):
    for _, g, n, _ in _random_sizes(rng, 6):
        matrix = bicubic_matrix(n, g).double()
        assert matrix.shape == (n, g)
        assert torch.allclose(matrix.sum(dim=1), torch.ones(n, dtype=torch.float64), atol=1e-6)
        assert int((matrix != 0).sum(dim=1).max()) <= 4


def test_resample_of_a_half_table_returns_half(rng):
    table = torch.from_numpy(rng.standard_normal((1, 16, 14, 14)).astype(np.float32))
    out = resize_bicubic_channels_last(table.half(), 33, 20)
    assert out.dtype == torch.float16
    assert rel_l2(out.double().numpy(), _interpolate64(table.half().float(), 33, 20)) <= 2e-3


def test_resample_refuses_a_table_of_another_shape():
    with pytest.raises(ValueError, match=r"\[1, C, g_h, g_w\].*\[2, 3, 4, 4\]"):
        resize_bicubic_channels_last(torch.zeros(2, 3, 4, 4), 8, 8)
    with pytest.raises(ValueError, match="in_size=0"):
        bicubic_matrix(4, 0)


def test_vit_keeps_the_checkpoint_table_and_resamples_as_interpolate(rng):
    model = reduced_model("vit", img_size=224)
    assert tuple(model.state_dict()["pos_embed"].shape) == (1, 192, 14, 14)  # checkpoints load as before
    with torch.no_grad():
        model.pos_embed.copy_(torch.from_numpy(rng.standard_normal((1, 192, 14, 14)).astype(np.float32)))
        for h, w in [(14, 14), (13, 17), (64, 3)]:
            assert rel_l2(model._pos_embed(h, w).double().numpy(), _interpolate64(model.pos_embed, h, w)) <= 1e-6


def test_pad_to_multiple_pads_as_the_modulo_did(rng):
    for _ in range(8):
        h, w, m = (int(v) for v in rng.integers(1, 40, size=3))
        image = torch.from_numpy(rng.standard_normal((1, 2, h, w)).astype(np.float32))
        assert torch.equal(pad_to_multiple(image, m), F.pad(image, (0, (-w) % m, 0, (-h) % m)))


# ---- the exported files -----------------------------------------------------------------------------------------

def _main_ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_static_export_stores_the_resampled_table(tmp_path, rng, precision):
    model = reduced_model("vit", depth=1)
    with torch.no_grad():  # a table that is not the identity's business: fresh values, resampled to 5x7 tokens
        model.pos_embed.copy_(torch.from_numpy(rng.standard_normal(model.pos_embed.shape).astype(np.float32)))
    path = export_onnx(model, tmp_path / "static.onnx", "1x3x80x104", dynamic=False, precision=precision)
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert not {"Resize", "Range", "Equal", "Floor"} & set(ops)
    tables = [init for init in proto.graph.initializer if tuple(init.dims) == (1, 5, 7, 192)]
    assert len(tables) == 1 and not [i for i in proto.graph.initializer if tuple(i.dims) == (1, 192, 14, 14)]
    (add,) = [n for n in proto.graph.node if tables[0].name in n.input]  # the patch embedding + the stored table
    assert add.op_type == "Add" and set(ops[:ops.index("Add")]) <= {"Cast", "Pad", "Conv", "Transpose"}
    expected = model._pos_embed(5, 7).detach().double().numpy()
    table = numpy_helper.to_array(tables[0])
    assert table.dtype == (np.float16 if precision == "fp16" else np.float32)
    assert rel_l2(table.astype(np.float64), expected) <= (1e-3 if precision == "fp16" else 1e-6)
    image = random_image(rng, (1, 3, 80, 104))
    out = ort_session(path).run(None, {"image": image})[0]
    assert rel_l2(out, torch_reference(model, image)) <= (5e-3 if precision == "fp16" else 1e-5)


def test_dynamic_export_resamples_with_matmuls_not_resize(tmp_path, rng, monkeypatch):
    model = reduced_model("vit", depth=1)
    with torch.no_grad():
        model.pos_embed.copy_(torch.from_numpy(rng.standard_normal(model.pos_embed.shape).astype(np.float32)))
    path = export_onnx(model, tmp_path / "dynamic.onnx", "1x3x64x96")
    ops = _main_ops(path)
    assert "Resize" not in ops and "Mod" not in ops
    first_attention = ops.index("ElfattAttention")
    assert ops[:first_attention].count("MatMul") == 3  # the two of the resample, then qkv
    # shape inference follows the main graph (the quick run's check; test_shape_inference_tools.py runs the tools)
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from elfatt_deploy.export.onnx_schema import register_schema

    register_schema()
    work = tmp_path / "cwd"  # the tool writes sym_shape_infer_temp.onnx there when a shape is left unknown
    work.mkdir()
    monkeypatch.chdir(work)
    inferred = SymbolicShapeInference.infer_shapes(onnx.load(str(path)), auto_merge=False)
    assert not list(work.iterdir())
    shapes = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    (attention,) = [n.output[0] for n in inferred.graph.node if n.op_type == "ElfattAttention"]
    assert shapes[attention] == ["batch", "floor(height/16 + 15/16)", "floor(width/16 + 15/16)", 192]
    assert shapes[inferred.graph.output[0].name] == ["batch", 1000]
    session = ort_session(path)
    for shape in [(1, 3, 224, 224), (2, 3, 37, 150), (1, 3, 400, 96)]:  # up, down, odd, partial patches
        image = random_image(rng, shape)
        assert rel_l2(session.run(None, {"image": image})[0], torch_reference(model, image)) <= 1e-5, shape


# ---- fold_constant_nodes on small graphs --------------------------------------------------------------------------

def _model(nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("elfatt", 1)])


def _f32(name, shape):
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def test_fold_computes_constant_chains_and_keeps_what_reads_inputs(rng):
    a, b = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"]),
             helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.float32(2.0))),
             helper.make_node("Mul", ["ab", "two"], ["ab2"]),
             helper.make_node("Add", ["x", "ab2"], ["y"]),
             helper.make_node("Relu", ["a"], ["custom_in"]),
             helper.make_node("Custom", ["custom_in"], ["z"], domain="elfatt")]
    model = _model(nodes, [_f32("x", [3, 4])], [_f32("y", [3, 4]), _f32("z", [3, 4])],
                   [numpy_helper.from_array(a, "a"), numpy_helper.from_array(b, "b")])
    assert fold_constant_nodes(model) == 3  # Add, Mul, Relu; the custom node and the input's Add stay
    assert [n.op_type for n in model.graph.node] == ["Add", "Custom"]
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert set(values) == {"ab2", "custom_in"}  # a and b are read by nothing any more; the Constant is gone
    np.testing.assert_allclose(values["ab2"], (a + b) * 2, rtol=1e-6)
    np.testing.assert_array_equal(values["custom_in"], np.maximum(a, 0))


def test_fold_leaves_values_over_the_limit_to_run_time(rng):
    a = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["a"], ["at"]),
             helper.make_node("Tile", ["at", "reps"], ["big"]),
             helper.make_node("Add", ["x", "big"], ["y"])]
    reps = numpy_helper.from_array(np.array([64, 64], dtype=np.int64), "reps")
    model = _model(nodes, [_f32("x", [256, 256])], [_f32("y", [256, 256])], [numpy_helper.from_array(a, "a"), reps])
    assert fold_constant_nodes(model, max_bytes=256 * 256 * 4 - 1) == 1  # the Transpose; the Tile stays
    assert [n.op_type for n in model.graph.node] == ["Tile", "Add"]
    np.testing.assert_array_equal(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "at")),
                                  a.T)
    assert fold_constant_nodes(model) == 1 and [n.op_type for n in model.graph.node] == ["Add"]


def test_pos_embed_bench_script_times_the_three_forms(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(repo / "bench" / "pos_embed_cpu.py"), "--channels", "8", "--grid", "3",
                           "--sizes", "48,80", "--repeats", "2", "--threads", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "pos_embed_cpu.json").read_text())
    assert [r["size"] for r in report["results"]] == [48, 80]
    for row in report["results"]:
        assert row["resize_nodes"] == {"resize": 1, "matmul": 0, "folded": 0}
        assert row["main_graph_nodes"]["folded"] == 1  # the Add of the stored table, nothing else
        assert all(len(t) == 2 for t in row["times_ms"].values())
        assert all(e <= 1e-6 for e in row["rel_l2_vs_float64_interpolate"].values())
    assert len(report["environment"]["load_average"]["before"]) == 3
    assert "| 80x80 | 5x5 |" in proc.stdout
    pytest.importorskip("matplotlib")
    assert (tmp_path / "pos_embed_cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pos_embed_cpu.json", "pos_embed_cpu.png"]  # no temp files


def test_fold_keeps_a_widening_cast_at_run_time(rng):
    a = rng.standard_normal((4, 6)).astype(np.float16)
    nodes = [helper.make_node("Transpose", ["a"], ["at"]),
             helper.make_node("Cast", ["at"], ["at32"], to=onnx.TensorProto.FLOAT),
             helper.make_node("Add", ["x", "at32"], ["y"]),
             helper.make_node("Cast", ["at32"], ["back"], to=onnx.TensorProto.FLOAT16),  # inside: folds
             helper.make_node("Add", ["back", "back"], ["z"])]
    model = _model(nodes, [_f32("x", [6, 4])], [_f32("y", [6, 4]),
                                               helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT16, [6, 4])],
                   [numpy_helper.from_array(a, "a")])
    assert fold_constant_nodes(model) == 3  # Transpose, the inner Cast back and the Add of z
    assert [n.op_type for n in model.graph.node] == ["Cast", "Add"]
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert values["at"].dtype == np.float16 and values["z"].dtype == np.float16
    np.testing.assert_array_equal(values["at"], a.T)
