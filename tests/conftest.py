import os
import secrets

import numpy as np
import pytest
import torch

from _elfatt_cases import OP_CASES


@pytest.fixture
def rng(request):
    """A fresh generator per test: inputs are new random draws on every run.

    The seed is reported with a failure; ELFATT_TEST_SEED=<seed> replays it.
    """
    seed = int(os.environ.get("ELFATT_TEST_SEED") or secrets.randbits(63))
    request.node.elfatt_seed = seed
    return np.random.default_rng(seed)


@pytest.fixture
def without_tensorrt():
    """For tests of what users see where TensorRT is missing: skipped where it is installed
    (there the real paths run in test_engine_tensorrt.py)."""
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return
    pytest.skip("TensorRT is installed here; the real TensorRT paths run in test_engine_tensorrt.py")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    seed = getattr(item, "elfatt_seed", None)
    if report.failed and seed is not None:
        report.sections.append(("random inputs", f"replay with ELFATT_TEST_SEED={seed}"))


def make_op_inputs(case, rng, dtype=torch.float64):
    qkv = torch.from_numpy(rng.standard_normal((case.batch, case.height, case.width, 3 * case.channels)))
    weight = bias = None
    if case.lepe:
        weight = torch.from_numpy(rng.standard_normal((case.channels, 1, 3, 3)) * 0.3)
        bias = torch.from_numpy(rng.standard_normal(case.channels) * 0.1)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(qkv), cast(weight), cast(bias)


def pytest_generate_tests(metafunc):
    if "op_case" in metafunc.fixturenames:
        metafunc.parametrize("op_case", OP_CASES, ids=[c.id for c in OP_CASES])


# ---- reference models (elfatt_deploy/reference_models) and image folders of the synthetic task ----------------

@pytest.fixture(scope="session")
def held_out_start():
    """A fresh offset into the held-out split per session (images the training never saw or scored);
    ELFATT_TEST_SEED replays it."""
    seed = int(os.environ.get("ELFATT_TEST_SEED") or secrets.randbits(63))
    return 10_000 + int(np.random.default_rng(seed).integers(0, 10**6))


@pytest.fixture(scope="session")
def held_out_images(tmp_path_factory, held_out_start):
    """80 held-out images (split seed 1) at 112x112 as an ImageFolder."""
    from elfatt_deploy.data.image_folder import write_image_folder

    root = tmp_path_factory.mktemp(f"held_out_{held_out_start}")
    return write_image_folder(root, 80, seed=1, size=112, start=held_out_start)


@pytest.fixture(scope="session")
def calibration_images(tmp_path_factory):
    """40 calibration images from another split (seed 2) at 112x112."""
    from elfatt_deploy.data.image_folder import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("calibration"), 40, seed=2, size=112)


@pytest.fixture(scope="session")
def reference_vit_onnx(tmp_path_factory):
    """The reference ViT (trained checkpoint) exported fp32, dynamic, traced at 1x3x112x112."""
    from elfatt_deploy.export.exporter import export_onnx
    from elfatt_deploy.export.model_loading import build_model
    from elfatt_deploy.reference_models import checkpoint_path

    try:
        checkpoint = checkpoint_path("elfatt_vit_micro")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    path = tmp_path_factory.mktemp("reference_onnx") / "vit_micro.onnx"
    model = build_model("elfatt_vit_micro", checkpoint=str(checkpoint))
    return export_onnx(model, path, "1x3x112x112")


@pytest.fixture(scope="session")
def reference_vit_int8(reference_vit_onnx, calibration_images, tmp_path_factory):
    """The reference ViT export quantized (elfatt-deploy quantize) on 30 calibration images: its QuantizeResult."""
    from elfatt_deploy.quantize.qdq import quantize_onnx

    out = tmp_path_factory.mktemp("int8") / "vit_micro_int8.onnx"
    return quantize_onnx(reference_vit_onnx, out, calibration_images.root, samples=30, progress=False)


# ---- the quick run: `pytest -m "not slow"` ---------------------------------------------------------
# CI runs everything. The quick run leaves out what takes more than ~4 s on 2 cores: compiling the CUDA
# sources (nvcc, the host emulation, the performance model's tracing build, the torch binding), the
# docker parity flows, full-size model exports and the OpenVINO runs of full models, gradchecks. Each
# entry is a test file, a test function (all its parameters) or one parametrized id; an entry that
# matches nothing is an error, so a renamed test cannot silently move back into the quick run.
SLOW_FILES = (
    "test_kernels_model.py", "test_kernels_nvcc.py", "test_kernels_emulated.py", "test_kernels_torch.py",
    "test_docker_parity.py", "test_openvino_bench_script.py",
    "test_shape_inference_tools.py",  # third-party tools on four exports; quick: test_pos_embed.py's dynamic export
)
SLOW_TESTS = (
    "test_openvino_backend.py::test_inlined_full_models_match_pytorch",
    "test_op_reference.py::test_gradcheck_partial_windows_with_lepe",
    "test_op_reference.py::test_gradcheck_stripes_without_lepe",
    "test_op_reference.py::test_opcheck_schema_fake_and_autograd",
    "test_export_models.py::test_full_size_model_export",
    "test_export_names.py::test_fp16_weights_and_nodes_have_the_fp32_files_names",
    "test_export_names.py::test_zero_biases_keep_their_own_names_also_in_fp16",
    "test_export_models.py::test_fp16_export_parity_and_types[cswin]",
    "test_export_models.py::test_fp32_parity_at_three_sizes",
    "test_export_models.py::test_layer_without_lepe_exports_zero_lepe_inputs",
    "test_bench_cli.py::test_bench_onnxruntime_backend",
    "test_bench_cli.py::test_bench_torch_backend",
    "test_export_errors.py::test_failure_mid_export_leaves_target_untouched",
    "test_export_errors.py::test_failure_mid_write_leaves_no_partial_file",
    "test_cli_basics.py::test_models_table_lists_every_model_with_its_parameter_count",
    "test_validate_cli.py::test_polygraphy_runs_a_static_fp16_file_as_is",
    "test_validate_cli.py::test_fp16_file_gets_the_fp16_tolerance",
    "test_cli_messages.py::test_export_shows_progress_on_stderr_only",
    "test_cli_messages.py::test_validate_keeps_library_logs_off_stdout_and_quiet_by_default",  # uses its export
    "test_export_inline.py::test_surgeon_sanitize_folds_the_inlined_file",
    "test_kernels_bench_script.py::test_self_test_passes",
    "test_models.py::test_forward_shapes_and_finite[224-elfatt_vit_small]",
    "test_models.py::test_any_image_size_from_1x1_works",
    "test_cli_exit_codes.py::test_plain_doctor_exits_0_on_any_machine",
    "test_pos_embed.py::test_pos_embed_bench_script_times_the_three_forms",
    "test_pos_embed.py::test_static_export_stores_the_resampled_table[fp16]",
)


def _slow_entry(item) -> "str | None":
    path = item.path.name
    if path in SLOW_FILES:
        return path
    function = f"{path}::{item.originalname or item.name}"
    exact = f"{path}::{item.name}"
    return next((entry for entry in SLOW_TESTS if entry in (function, exact)), None)


def pytest_collection_modifyitems(config, items):
    for item in items:
        entry = _slow_entry(item)
        if entry is not None:
            item.add_marker(pytest.mark.slow)
    tests_dir = config.rootpath / "tests"
    stale = []
    for entry in SLOW_FILES + SLOW_TESTS:
        file, _, function = entry.partition("::")
        source = tests_dir / file
        if not source.exists() or (function and f"def {function.split('[')[0]}(" not in source.read_text()):
            stale.append(entry)
    if stale:
        raise pytest.UsageError(f"tests/conftest.py marks tests slow that do not exist (renamed?): {stale}")
