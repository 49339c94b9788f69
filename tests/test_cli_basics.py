"""The command line: models table, --version, clear errors."""

import subprocess
import sys

import pytest

from elfatt_deploy import __version__, create_model, list_models
from elfatt_deploy.cli import main


def test_models_table_lists_every_model_with_its_parameter_count(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        params = sum(p.numel() for p in create_model(name).parameters()) / 1e6
        line = next(l for l in out.splitlines() if l.startswith(name + " "))
        assert f"{params:.2f}M" in line


def test_version_flag():
    proc = subprocess.run([sys.executable, "-m", "elfatt_deploy", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout


@pytest.mark.parametrize("argv,message", [
    (["forward", "--model", "nope"], "unknown model 'nope'"),
    (["forward", "--model", "elfatt_vit_tiny", "--input-shape", "1x3x224"], "must have 4 dimensions"),
    (["forward", "--model", "elfatt_vit_tiny", "--input-shape", "1x4x224x224"], "has 4 channels"),
    (["forward", "--model", "elfatt_vit_tiny", "--input-shape", "1xax2x2"], "'a'"),
    (["forward", "--model", "elfatt_vit_tiny", "--device", "gpu"], "--device 'gpu' is not a torch device"),
    (["forward", "--model", "elfatt_vit_tiny", "--device", "meta"], "--device 'meta': the toolkit runs PyTorch on cpu"),
    (["doctor", "--no-plugin", "--plugin", "/nope.so"], "--plugin and --no-plugin contradict each other"),
    (["bench", "--backend", "tensorrt", "--engine", "/tmp", "--input-shape", "1x3x32x32"], "--engine /tmp is a directory"),
    (["export", "--recipe", "/tmp", "-o", "x.onnx"], "recipe '/tmp' is a directory"),
    (["bench", "--backend", "torch", "--model", "elfatt_vit_tiny", "--onnx", "m.onnx", "--input-shape", "1x3x32x32"],
     "--onnx m.onnx is for --backend onnxruntime or openvino"),
    (["forward", "--model", "elfatt_vit_tiny", "--device", "mps"], "--device 'mps': the toolkit runs PyTorch on cpu"),
    (["bench", "--backend", "torch", "--model", "elfatt_vit_tiny", "--device", "meta", "--input-shape", "1x3x32x32"],
     "--device 'meta': the toolkit runs PyTorch on cpu"),
])
def test_user_errors_exit_2_with_a_message(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cuda", "cuda:99"])
def test_missing_gpu_is_exit_3_and_a_missing_index_exit_2(capsys, device):
    """docs/cli.md: a missing GPU is the environment (exit 3); a GPU index this machine lacks is bad input (2)."""
    import torch

    code = main(["forward", "--model", "elfatt_vit_tiny", "--device", device])
    err = capsys.readouterr().err
    if not torch.cuda.is_available():
        assert code == 3 and "no CUDA GPU is usable here" in err and "--device cpu" in err, err
    elif device == "cuda:99":
        assert code == 2 and "--device cuda:99" in err, err
    else:
        assert code == 0, err


def test_forward_runs_a_model(capsys):
    assert main(["forward", "--model", "elfatt_vit_tiny", "--input-shape", "1x3x96x80"]) == 0
    assert "-> output 1x1000" in capsys.readouterr().out


def test_tool_failures_exit_3_with_the_message_and_no_traceback(capsys, monkeypatch):
    """Plugin, engine-build and CUDA-extension failures are ToolkitErrors: `error: ...`, exit 3, no traceback."""
    from elfatt_deploy.engine.builder import EngineBuildError
    from elfatt_deploy.engine.plugin import PluginLoadError
    from elfatt_deploy.errors import EXIT_ENVIRONMENT, ToolkitError
    from elfatt_deploy.op.cuda_backend import CudaBackendError
    import elfatt_deploy.cli.commands.models as models_cmd

    for error_type in (PluginLoadError, EngineBuildError, CudaBackendError):
        assert issubclass(error_type, ToolkitError)

        def failing_run(args, error_type=error_type):
            raise error_type(f"{error_type.__name__}: what to do")

        monkeypatch.setattr(models_cmd, "run", failing_run)
        assert main(["models"]) == EXIT_ENVIRONMENT == 3
        err = capsys.readouterr().err
        assert err.startswith(f"elfatt-deploy models: error: {error_type.__name__}: what to do")
        assert "Traceback" not in err


def test_unknown_kernel_path_is_refused(monkeypatch):
    from elfatt_deploy.op import cuda_backend

    monkeypatch.setenv("ELFATT_KERNEL_PATH", "tiledd")
    with pytest.raises(ValueError,
                       match="ELFATT_KERNEL_PATH='tiledd' is not one of default, auto, tiled, generic, tensorcore"):
        cuda_backend._kernel_path()
    monkeypatch.setenv("ELFATT_KERNEL_PATH", "Generic")
    assert cuda_backend._kernel_path() == cuda_backend.KERNEL_PATHS["generic"]


def test_a_seed_too_large_for_the_generators_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["forward", "--model", "elfatt_vit_tiny", "--seed", "99999999999999999999"])
    assert exit_info.value.code == 2
    assert "argument --seed: 99999999999999999999 is too large; give an integer below 2**63" in capsys.readouterr().err
