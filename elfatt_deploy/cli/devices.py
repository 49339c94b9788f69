"""The ``--device`` flag of the PyTorch commands: checked up front, so a typo or a missing GPU is a clean error."""

from __future__ import annotations


def torch_device(name: str):
    """``torch.device(name)``; ValueError (exit 2) when the name is malformed or names a GPU index this machine
    does not have, ToolkitError (exit 3, docs/cli.md: the environment lacks something) when no CUDA GPU is usable."""
    import torch

    from ..errors import ToolkitError

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not a torch device ({exc}); use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # meta computes nothing; mps, xpu ...: not what the toolkit targets
        raise ValueError(f"--device {name!r}: the toolkit runs PyTorch on cpu or cuda (cuda:N) only; use one of them")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ToolkitError(f"--device {name}: no CUDA GPU is usable here (torch {torch.__version__}, CUDA "
                             f"{torch.version.cuda or 'none: a CPU-only build'}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
