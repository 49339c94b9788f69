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
