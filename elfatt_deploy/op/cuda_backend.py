"""CUDA kernels of ``elfatt::attention`` as a just-in-time PyTorch extension.

The extension is compiled from the same sources as the TensorRT plugin
(``plugins/kernels``) plus the binding in ``plugins/torch``, with
``torch.utils.cpp_extension.load`` (cached under ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``, rebuilt when a source changes).

- :func:`build_extension` builds (or loads the cached build) and returns the
  module, or raises :class:`CudaBackendError` saying why and how to fix it.
- :func:`is_available` says whether the kernels can run here; never raises.
- :func:`register_cuda_kernel` makes the kernels the "cuda" implementation of
  the op; :func:`maybe_register` does so once, lazily, and otherwise leaves the
  eager reference in place with one warning giving the reason.

CPU users never need nvcc: nothing here runs until a CUDA tensor reaches the op.
Autograd is unaffected: the op's backward recomputes the reference.

Environment: ``ELFATT_DISABLE_CUDA_KERNELS=1`` keeps the eager reference on CUDA;
``ELFATT_KERNEL_PATH=auto|tiled|generic|tensorcore`` picks the kernel implementation;
``ELFATT_BUILD_VERBOSE=1`` prints the compiler output of the first build.
"""

from __future__ import annotations

import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Optional

from ..errors import ToolkitError

EXTENSION_NAME = "elfatt_cuda_ext"
_PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
KERNEL_SOURCES = ("plan.cpp", "global_attention.cu", "local_attention.cu", "local_attention_tc.cu", "enqueue.cu")
BINDING_SOURCE = "elfatt_torch.cpp"
KERNEL_PATHS = {"default": -1, "auto": 0, "tiled": 1, "generic": 2, "tensorcore": 3}
#: Where the toolkit is looked for when neither CUDA_HOME/CUDA_PATH nor nvcc on PATH gives one.
DEFAULT_CUDA_HOME = Path("/usr/local/cuda")


class CudaBackendError(ToolkitError):
    """The CUDA extension cannot be built or used; the message says how to fix it."""


_lock = threading.RLock()
_module = None
_registered = False
_register_attempted = False


def plugins_dir() -> Path:
    return _PLUGINS_DIR


def source_files() -> list[Path]:
    """The binding and kernel sources the extension is compiled from."""
    return [_PLUGINS_DIR / "torch" / BINDING_SOURCE] + [_PLUGINS_DIR / "kernels" / "src" / s for s in KERNEL_SOURCES]


def find_cuda_home() -> Path:
    """The CUDA toolkit to build with: $CUDA_HOME / $CUDA_PATH if set, else nvcc on PATH, else /usr/local/cuda.

    Raises CudaBackendError when none has bin/nvcc.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value:
            home = Path(value)
            if not (home / "bin" / "nvcc").is_file():
                raise CudaBackendError(
                    f"{var}={value} has no bin/nvcc, so the elfatt CUDA kernels cannot be built. "
                    f"Set {var} to your CUDA toolkit (the folder that holds bin/nvcc, e.g. /usr/local/cuda) "
                    f"or unset it; the eager reference keeps working without the kernels."
                )
            return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        return Path(os.path.realpath(nvcc)).parent.parent
    default = DEFAULT_CUDA_HOME
    if (default / "bin" / "nvcc").is_file():
        return default
    raise CudaBackendError(
        f"nvcc was not found (no CUDA_HOME, no nvcc on PATH, no {default}/bin/nvcc), so the elfatt CUDA "
        "kernels cannot be built. Install the CUDA toolkit that matches your PyTorch build and set "
        "CUDA_HOME=/path/to/cuda; the eager reference keeps working without the kernels."
    )


def _check_prerequisites():
    """Returns (torch, cuda_home) or raises CudaBackendError with the fix."""
    cuda_home = find_cuda_home()
    missing = [str(p) for p in source_files() if not p.is_file()]
    if missing:
        raise CudaBackendError(
            f"the kernel sources are missing ({', '.join(missing)}); the CUDA extension is built from a source "
            "checkout of elfatt-deploy: install it with `pip install -e .` from the repository"
        )
    import torch

    if torch.version.cuda is None:
        raise CudaBackendError(
            f"this PyTorch ({torch.__version__}) is a CPU-only build (torch.version.cuda is None); install a CUDA "
            "build of PyTorch (https://pytorch.org/get-started/locally/) to use the elfatt CUDA kernels"
        )
    return torch, cuda_home


def build_extension(verbose: bool = False):
    """Builds (or loads from the cache) the CUDA extension and returns the module.

    Raises CudaBackendError saying why and how to fix it when nvcc / CUDA_HOME is
    missing, PyTorch has no CUDA, or the compilation fails.
    """
    global _module
    with _lock:
        if _module is not None:
            return _module
        torch, cuda_home = _check_prerequisites()
        from torch.utils import cpp_extension

        # cpp_extension reads CUDA_HOME once, when it is imported: make it use the toolkit found here.
        if getattr(cpp_extension, "CUDA_HOME", None) != str(cuda_home):
            cpp_extension.CUDA_HOME = str(cuda_home)
        include_dirs = [str(_PLUGINS_DIR / "kernels" / "include"), str(_PLUGINS_DIR / "kernels" / "src")]
        verbose = verbose or os.environ.get("ELFATT_BUILD_VERBOSE", "") not in ("", "0")
        try:
            module = cpp_extension.load(
                name=EXTENSION_NAME,
                sources=[str(p) for p in source_files()],
                extra_include_paths=include_dirs,
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3", "-lineinfo"],
                with_cuda=True,
                verbose=verbose,
            )
        except Exception as exc:  # the compiler's output is in the exception text / verbose log
            raise CudaBackendError(
                f"building the elfatt CUDA extension with nvcc from {cuda_home} failed: {exc}\n"
                "Run `elfatt-deploy build-ext --verbose` to see the full compiler output. Check that this CUDA "
                f"toolkit matches PyTorch's CUDA ({torch.version.cuda}) and supports your GPU (TORCH_CUDA_ARCH_LIST "
                "selects the architectures)."
            ) from exc
        _module = module
        return module


def is_available() -> bool:
    """True when a CUDA GPU is visible and the extension builds; never raises."""
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        build_extension()
        return True
    except Exception:
        return False


def _kernel_path() -> int:
    value = os.environ.get("ELFATT_KERNEL_PATH", "default").strip().lower() or "default"
    if value not in KERNEL_PATHS:
        raise ValueError(f"ELFATT_KERNEL_PATH={value!r} is not one of {', '.join(KERNEL_PATHS)}; unset it for the default")
    return KERNEL_PATHS[value]


def cuda_attention(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale, path=None):
    """The CUDA kernels on CUDA tensors, same arguments and checks as the op (path: see KERNEL_PATHS)."""
    from .library import check_op_inputs

    check_op_inputs(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)
    module = build_extension()
    kernel_path = _kernel_path() if path is None else KERNEL_PATHS[path] if isinstance(path, str) else int(path)
    return module.attention(
        qkv, lepe_weight, lepe_bias, int(global_heads), int(local_heads), int(window_h), int(window_w),
        float(scale), kernel_path,
    )


def _op_kernel(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    return cuda_attention(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)


def register_cuda_kernel() -> None:
    """Builds the extension and registers it as the "cuda" kernel of elfatt::attention.

    Raises CudaBackendError when the extension cannot be built.
    """
    global _registered
    with _lock:
        if _registered:
            return
        import torch

        from . import library  # noqa: F401  (defines elfatt::attention)

        build_extension()
        torch.library.register_kernel("elfatt::attention", "cuda", _op_kernel)
        _registered = True


def maybe_register() -> bool:
    """Registers the CUDA kernels once if they build; else warns once and keeps the eager reference.

    Returns whether the kernels are registered. Never raises for a build problem.
    """
    global _register_attempted
    with _lock:
        if _registered:
            return True
        if _register_attempted:
            return False
        _register_attempted = True
        if os.environ.get("ELFATT_DISABLE_CUDA_KERNELS", "") not in ("", "0"):
            return False
        try:
            import torch

            if not torch.cuda.is_available():
                return False
            register_cuda_kernel()
            return True
        except CudaBackendError as exc:
            warnings.warn(
                f"elfatt: CUDA kernels unavailable, using the eager reference on CUDA tensors: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
            return False


def registered() -> bool:
    return _registered


def _reset_for_tests(clear_module: bool = False) -> None:
    """Forgets the registration attempt (tests only; a registered kernel stays registered)."""
    global _register_attempted, _module
    with _lock:
        _register_attempted = False
        if clear_module:
            _module = None


def cached_build_dir() -> Optional[Path]:
    """Where cpp_extension keeps this extension's build (None when it cannot tell)."""
    try:
        from torch.utils import cpp_extension

        return Path(cpp_extension._get_build_directory(EXTENSION_NAME, verbose=False))
    except Exception:
        return None
