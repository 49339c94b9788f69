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
