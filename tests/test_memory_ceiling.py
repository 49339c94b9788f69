"""The memory ceiling: a run whose estimate exceeds the available memory is refused before it allocates,
in well under a second, with the estimate and the limit in the message (exit 3); --force tries anyway."""

import math
import time

import pytest
import torch

from elfatt_deploy import memory
from elfatt_deploy.cli import main
from elfatt_deploy.export.model_loading import build_model
from elfatt_deploy.export import export_onnx
from elfatt_deploy.memory import (ACTIVATION_FACTOR, InsufficientMemoryError, MemoryEstimate, available_memory,
                                  check_memory, estimate_forward)


def _measured_peak(model, shape) -> int:
    """Bytes of the largest module output of a real run (the quantity the estimate scales)."""
    largest = 0

    def record(module, inputs, output):
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    with torch.inference_mode():
        model(torch.zeros(shape))
    for handle in handles:
        handle.remove()
    return largest


@pytest.mark.parametrize("name, config, shape", [
    ("elfatt_vit_tiny", {"depth": 1}, (2, 3, 200, 264)),
    ("elfatt_vit_tiny", {"depth": 1}, (1, 3, 97, 33)),
    ("elfatt_cswin_tiny", {"depths": (1, 1, 1, 1)}, (1, 3, 160, 224)),
])
def test_the_estimate_scales_the_largest_activation_from_a_proxy_run(name, config, shape):
    estimate = estimate_forward(name, shape, config=config)
    largest = _measured_peak(build_model(name, config=config), shape)
    # an upper bound (grids padded to whole 32-pixel cells), and not a loose one
    assert largest * ACTIVATION_FACTOR <= estimate.parts["activations"] <= 2.5 * largest * ACTIVATION_FACTOR
    assert estimate.parts["input"] == math.prod(shape) * 4
    params = sum(p.numel() for p in build_model(name, config=config).parameters())
    assert estimate.parts["weights"] == params * 4


def test_vanilla_twins_count_the_n_by_n_matrix():
    shape = (1, 3, 320, 320)  # 20 x 20 = 400 tokens
    vanilla = estimate_forward("elfatt_vit_tiny", shape, config={"depth": 1}, attention="vanilla")
    assert vanilla.parts["N x N attention"] == 1 * 3 * 400 * 400 * 4  # batch x heads x N x N float32
    assert "N x N attention" not in estimate_forward("elfatt_vit_tiny", shape, config={"depth": 1}).parts


def test_cgroup_limits_are_read(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job\n")
    job = tmp_path / "fs" / "job"
    job.mkdir(parents=True)
    (job / "memory.max").write_text(str(4 << 30))
    (job / "memory.current").write_text(str(3 << 30))
    (job / "memory.stat").write_text(f"anon 1\ninactive_file {256 << 20}\n")
    available, source = memory._cgroup_available(root=tmp_path / "fs", proc_cgroup=proc)
    assert available == (1 << 30) + (256 << 20) and "cgroup limit 4.0 GiB" in source
    (job / "memory.max").write_text("max\n")
    assert memory._cgroup_available(root=tmp_path / "fs", proc_cgroup=proc) is None
    proc.write_text("4:memory:/job\n")  # cgroup v1
    v1 = tmp_path / "fs" / "memory" / "job"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(str(2 << 30))
    (v1 / "memory.usage_in_bytes").write_text(str(1 << 30))
    assert memory._cgroup_available(root=tmp_path / "fs", proc_cgroup=proc)[0] == 1 << 30


def test_check_memory_message_and_force():
    estimate = MemoryEstimate({"input": 3 << 30, "activations": 5 << 30}, what="forward of m")
    with pytest.raises(InsufficientMemoryError) as info:
        check_memory(estimate, available=2 << 30, source="test limit")
    text = str(info.value)
    assert "forward of m needs about 8.0 GiB (input 3.0 GiB, activations 5.0 GiB)" in text
    assert "more than the 2.0 GiB available here (test limit)" in text and "--force" in text
    check_memory(estimate, available=2 << 30, source="test limit", force=True)  # --force: no refusal
    check_memory(estimate, available=9 << 30, source="test limit")


def _too_big_side(batch=1):
    """An image side whose float32 input alone is twice the memory available here."""
    available, _ = available_memory()
    assert available, "no memory figure on this machine"
    return int(math.sqrt(2 * available / (4 * 3 * batch))) + 1


@pytest.fixture(scope="module")
def dynamic_file(tmp_path_factory):
    return export_onnx(build_model("elfatt_vit_tiny", config={"depth": 1}),
                       tmp_path_factory.mktemp("mem") / "m.onnx", (1, 3, 48, 80))


@pytest.mark.parametrize("command", ["validate", "forward", "bench torch", "bench onnxruntime", "export"])
def test_a_run_that_would_not_fit_is_refused_before_allocating(command, dynamic_file, tmp_path, capsys, monkeypatch):
    side = _too_big_side()
    shape = f"1x3x{side}x{side}"
    argv = {
        "validate": ["validate", str(dynamic_file), "--shapes", shape, "--samples", "1"],
        "forward": ["forward", "--model", "elfatt_vit_tiny", "--input-shape", shape],
        "bench torch": ["bench", "--backend", "torch", "--model", "elfatt_vit_tiny", "--input-shape", shape,
                        "--device", "cpu"],
        "bench onnxruntime": ["bench", "--backend", "onnxruntime", "--onnx", str(dynamic_file), "--input-shape", shape],
        # static: a dynamic export's traced side stops at 16384
        "export": ["export", "--model", "elfatt_vit_tiny", "--input-shape", shape, "--no-dynamic",
                   "-o", str(tmp_path / "x.onnx")],
    }[command]
    allocations = []
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: allocations.append(a) or real_randn(*a, **k))
    start = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 3, err
    assert f"{side}x{side}" in err and "needs about" in err and "available here" in err and "--force" in err
    assert not allocations  # refused before drawing the input
    assert elapsed < 3.0, elapsed  # well under a second on an idle machine; generous for a loaded one
    assert not (tmp_path / "x.onnx").exists()
