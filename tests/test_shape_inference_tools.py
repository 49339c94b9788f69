"""Third-party shape tools on our files: ONNX Runtime's symbolic_shape_infer and quantization.preprocess.

Each tool runs as users run it, ``python -m ...`` in a fresh process (so our OpSchema is not
registered: shapes come from the file alone), in an empty working directory that must hold
only the requested output afterwards (a failed run leaves ``sym_shape_infer_temp.onnx`` and a
weights-sized ``.data`` file there). Static files: the tool completes without ``--auto_merge``
and keeps every declared dim. Dynamic files: it completes and every attention output's dims are
expressions of the input's ``batch`` / ``height`` / ``width`` that evaluate to the real token grid.
"""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest

from _naive_elfatt import rel_l2
from test_export_helpers import REDUCED, ort_session, random_image, torch_reference
from elfatt_deploy import export_onnx
from elfatt_deploy.export.inline import inline_elfatt_functions
from elfatt_deploy.export.model_loading import build_model

sympy = pytest.importorskip("sympy")

STATIC_SHAPE = (1, 3, 200, 264)  # token grids off the window / stripe grid
CHECK_SIZE = (200, 264)          # where the symbolic dims of a dynamic file are evaluated


def _token_grids(family: str, h: int, w: int) -> list[tuple[int, int]]:
    """The (H, W) token grid of each attention layer, in graph order, for an h x w image."""
    if family == "vit":
        return [(-(-h // 16), -(-w // 16))] * REDUCED["vit"][1]["depth"]
    grid, grids = (-(-h // 4), -(-w // 4)), []
    for stage, depth in enumerate(REDUCED["cswin"][1]["depths"]):
        if stage:
            grid = tuple((s - 1) // 2 + 1 for s in grid)  # 3x3 conv, stride 2, padding 1
        grids += [grid] * depth
    return grids


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """family -> form -> path: static and dynamic default exports of the reduced ViT-T and CSWin-T
    (validate's seed-0 weights) and the --inline form of three of them."""
    tmp = tmp_path_factory.mktemp("shape_tools")
    files = {}
    for family, (name, config) in REDUCED.items():
        model = build_model(name, config=config)
        files[family] = {
            "model": model,
            "static": export_onnx(model, tmp / f"{family}_static.onnx", STATIC_SHAPE, dynamic=False),
            "dynamic": export_onnx(model, tmp / f"{family}_dynamic.onnx", "1x3x224x224"),
        }
    for family, form in (("vit", "static"), ("cswin", "dynamic"), ("cswin", "static")):
        inlined = inline_elfatt_functions(onnx.load(str(files[family][form])))
        path = tmp / f"{family}_{form}_inline.onnx"
        onnx.save(inlined, str(path))
        files[family][form + "_inline"] = path
    return files


def _dims(value_info) -> list:
    return [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
            for d in value_info.type.tensor_type.shape.dim]


def _run_tool(module: str, src, tmp_path, *extra) -> onnx.ModelProto:
    """``python -m module --input src --output out.onnx`` in an empty directory; returns the output model."""
    work = tmp_path / "cwd"
    work.mkdir(parents=True)
    out = work / "out.onnx"
    done = subprocess.run([sys.executable, "-m", module, "--input", str(src), "--output", str(out), *extra],
                          cwd=work, capture_output=True, text=True, timeout=900)
    log = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, log
    assert sorted(p.name for p in work.iterdir()) == ["out.onnx"], log  # no temporary files left behind
    return onnx.load(str(out))


def _attention_output_dims(default: onnx.ModelProto, inferred: onnx.ModelProto) -> list[list]:
    """The inferred dims of each attention layer's output, in graph order: the outputs of the default
    file's ElfattAttention nodes (inlining keeps their names for the last node of each body)."""
    shapes = {vi.name: _dims(vi) for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    names = [n.output[0] for n in default.graph.node if n.domain == "elfatt"]
    missing = [n for n in names if n not in shapes]
    assert names and not missing, f"no inferred shape for {missing[:3]}"
    return [shapes[n] for n in names]


def _evaluate(dim, sizes: dict) -> int:
    if isinstance(dim, int):
        return dim
    expression = sympy.sympify(dim, locals={k: sympy.Symbol(k, integer=True, positive=True) for k in sizes})
    assert {str(s) for s in expression.free_symbols} <= set(sizes), f"dim {dim!r} has symbols of its own"
    return int(expression.subs({sympy.Symbol(k, integer=True, positive=True): v for k, v in sizes.items()}))


def _check_static(exports, family, inferred):
    default = onnx.load(str(exports[family]["static"]))
    assert _dims(inferred.graph.output[0]) == [1, 1000]
    grids = _token_grids(family, *STATIC_SHAPE[2:])
    assert [tuple(d[:3]) for d in _attention_output_dims(default, inferred)] == [(1, *g) for g in grids]


def _check_dynamic(exports, family, inferred):
    default = onnx.load(str(exports[family]["dynamic"]))
    assert _dims(inferred.graph.input[0]) == ["batch", 3, "height", "width"]
    assert _dims(inferred.graph.output[0]) == ["batch", 1000]
    dims = _attention_output_dims(default, inferred)
    assert all(d[0] == "batch" and isinstance(d[3], int) for d in dims), dims
    h, w = CHECK_SIZE
    for d, grid in zip(dims, _token_grids(family, h, w)):
        assert (_evaluate(d[1], {"height": h}), _evaluate(d[2], {"width": w})) == grid, d


SYMBOLIC = "onnxruntime.tools.symbolic_shape_infer"


@pytest.mark.parametrize("family", ["vit", "cswin"])
def test_symbolic_shape_infer_keeps_every_dim_of_a_static_file(exports, family, tmp_path):
    _check_static(exports, family, _run_tool(SYMBOLIC, exports[family]["static"], tmp_path))


@pytest.mark.parametrize("family", ["vit", "cswin"])
def test_symbolic_shape_infer_follows_the_input_symbols_of_a_dynamic_file(exports, family, tmp_path):
    _check_dynamic(exports, family, _run_tool(SYMBOLIC, exports[family]["dynamic"], tmp_path))


def test_symbolic_shape_infer_on_the_inlined_forms(exports, tmp_path):
    _check_static(exports, "vit", _run_tool(SYMBOLIC, exports["vit"]["static_inline"], tmp_path))
    (tmp_path / "cwd").rename(tmp_path / "first")
    _check_dynamic(exports, "cswin", _run_tool(SYMBOLIC, exports["cswin"]["dynamic_inline"], tmp_path))


@pytest.mark.parametrize("family", ["vit", "cswin"])
def test_the_main_graph_is_followable_with_the_schema_registered(exports, family):
    """What does not depend on the function body: the main graph (patch pad, pos_embed resample,
    downsamples, head) of the dynamic file, with the nodes' shapes from our OpSchema (a plugin-only
    file, or any file in a process that called register_schema)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from elfatt_deploy.export.onnx_schema import register_schema

    register_schema()
    plugin_only = onnx.load(str(exports[family]["dynamic"]))
    del plugin_only.functions[:]
    inferred = SymbolicShapeInference.infer_shapes(plugin_only, auto_merge=False)
    _check_dynamic(exports, family, inferred)


@pytest.mark.parametrize("family", ["vit", "cswin"])
def test_quantization_preprocess_runs_on_a_dynamic_file(exports, family, tmp_path, rng):
    """It runs symbolic shape inference, ONNX Runtime's optimizer and ONNX shape inference; the file it
    writes keeps the symbols and computes what PyTorch computes."""
    out = _run_tool("onnxruntime.quantization.preprocess", exports[family]["dynamic"], tmp_path)
    assert _dims(out.graph.input[0]) == ["batch", 3, "height", "width"]
    assert _dims(out.graph.output[0]) == ["batch", 1000]
    session = ort_session(tmp_path / "cwd" / "out.onnx")
    image = random_image(rng, (2, 3, *CHECK_SIZE))
    expected = torch_reference(exports[family]["model"], image)
    assert rel_l2(session.run(None, {"image": image})[0], expected) <= 1e-5


def test_surgeon_sanitize_with_a_shape_override_on_the_default_vit_export(exports, tmp_path, rng):
    """`polygraphy surgeon sanitize --override-input-shapes ... --fold-constants` on the default (function) form
    of a dynamic ViT: onnx-graphsurgeon folds Shape(x, start, end) of a now static tensor to the whole shape, so
    the exporter writes torch's sym_size as Shape + Slice; the sanitized file must load and match PyTorch."""
    import shutil

    pytest.importorskip("onnx_graphsurgeon", reason="onnx-graphsurgeon is not installed (it is in the test extra)")
    src, out = exports["vit"]["dynamic"], tmp_path / "sanitized.onnx"
    assert not [n for n in onnx.load(str(src)).graph.node if n.op_type == "Shape" and n.attribute]
    shape = (2, 3, *CHECK_SIZE)
    exe = shutil.which("polygraphy")
    done = subprocess.run(([exe] if exe else [sys.executable, "-m", "polygraphy"]) +
                          ["surgeon", "sanitize", str(src), "--override-input-shapes",
                           f"image:[{','.join(map(str, shape))}]", "--fold-constants", "-o", str(out)],
                          capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Incompatible dimensions" not in log and "Inference failed" not in log, log[-3000:]
    image = random_image(rng, shape)
    got = ort_session(out).run(None, {"image": image})[0]
    assert rel_l2(got, torch_reference(exports["vit"]["model"], image)) <= 1e-5


def test_surgeon_sanitize_folds_the_inlined_cswin_cleanly(exports, tmp_path, rng):
    """The documented workaround for `polygraphy surgeon sanitize --fold-constants` (docs/export.md): sanitize
    the --inline form. On CSWin (several channel layouts) it is the only form that survives onnx-graphsurgeon;
    the run is clean (no function-count warnings, no failed inference), the folded file matches PyTorch, and
    the metadata the sanitized file lost can be copied back so that `validate` needs no --model."""
    import shutil

    from elfatt_deploy.cli import main

    pytest.importorskip("onnx_graphsurgeon", reason="onnx-graphsurgeon is not installed (it is in the test extra)")
    src, out = exports["cswin"]["static_inline"], tmp_path / "sanitized.onnx"
    exe = shutil.which("polygraphy")
    done = subprocess.run(([exe] if exe else [sys.executable, "-m", "polygraphy"]) +
                          ["surgeon", "sanitize", str(src), "--fold-constants", "-o", str(out)],
                          capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    for problem in ("ValidateFunctionNodeCounts", "Invalid output count", "Inference failed", "Error merging"):
        assert problem not in log, log[-3000:]
    before, sanitized = onnx.load(str(src)), onnx.load(str(out))
    # the weight-only arithmetic is folded at export already (inline.py); the static shape arithmetic is left
    assert len(sanitized.graph.node) < 0.7 * len(before.graph.node)
    assert not sanitized.metadata_props  # what docs/export.md warns about: validate would need --model
    session = ort_session(out)
    image = random_image(rng, STATIC_SHAPE)
    assert rel_l2(session.run(None, {"image": image})[0], torch_reference(exports["cswin"]["model"], image)) <= 1e-5
    sanitized.metadata_props.extend(before.metadata_props)  # the docs' recipe
    onnx.save(sanitized, str(out))
    assert main(["validate", str(out), "--samples", "1"]) == 0
