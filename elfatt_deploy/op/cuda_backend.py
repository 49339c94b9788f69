"""CUDA kernels of ``elfatt::attention`` as a just-in-time PyTorch extension.

The extension is compiled from the same sources as the TensorRT plugin (the
``elfatt_kernels`` library of ``plugins/CMakeLists.txt``) plus the binding in
``plugins/torch``, with ``torch.utils.cpp_extension.load`` (cached under
``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``, rebuilt when a source, the
architecture list or a flag changes), for the architectures of
``TORCH_CUDA_ARCH_LIST`` or else of the GPUs of this machine.

- :func:`build_extension` builds (or loads the cached build) and returns the
  module, or raises :class:`CudaBackendError` saying why and how to fix it.
- :func:`is_available` says whether the kernels can run here; never raises.
- :func:`register_cuda_kernel` makes the kernels the "cuda" implementation of
  the op; :func:`maybe_register` does so once, lazily, and otherwise leaves the
  eager reference in place with one warning giving the reason.
- :func:`kernel_inputs` is the op's dispatch rule on CUDA tensors: float64 goes to
  the eager reference; LePE parameters in qkv's dtype or in float32 reach the
  kernels as they are (fp32 parameters under fp16/bf16 autocast are neither rounded
  nor copied); other LePE dtypes become float32, which is what the reference
  computes with.

CPU users never need nvcc: nothing here runs until a CUDA tensor reaches the op.
Autograd is unaffected: the op's backward recomputes the reference.

Environment: ``ELFATT_DISABLE_CUDA_KERNELS=1`` keeps the eager reference on CUDA;
``ELFATT_KERNEL_PATH=auto|tiled|generic|tensorcore|fused`` picks the kernel implementation;
``ELFATT_BUILD_VERBOSE=1`` prints the compiler output of the first build.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Optional

from ..errors import ToolkitError

EXTENSION_NAME = "elfatt_cuda_ext"
_PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
#: The CMake file whose ``elfatt_kernels`` library (the TensorRT plugin's kernels) lists the sources.
KERNELS_CMAKE = _PLUGINS_DIR / "CMakeLists.txt"
BINDING_SOURCE = "elfatt_torch.cpp"
#: Kernel path names -> elfatt::KernelPath (elfatt_kernels_ext.h); -1 = the library default.
KERNEL_PATHS = {"default": -1, "auto": 0, "tiled": 1, "generic": 2, "tensorcore": 3, "fused": 4}
#: Where the toolkit is looked for when neither CUDA_HOME/CUDA_PATH nor nvcc on PATH gives one.
DEFAULT_CUDA_HOME = Path("/usr/local/cuda")


class CudaBackendError(ToolkitError):
    """The CUDA extension cannot be built or used; the message says how to fix it."""


_lock = threading.RLock()
_module = None
_build_info: dict = {}
_registered = False
_register_attempted = False


def plugins_dir() -> Path:
    return _PLUGINS_DIR


def kernel_sources(cmake_file: Path = KERNELS_CMAKE) -> list[Path]:
    """The sources of the ``elfatt_kernels`` library in plugins/CMakeLists.txt: what the plugin links.

    Raises CudaBackendError when the file or the library's source list cannot be read.
    """
    try:
        text = cmake_file.read_text()
    except OSError as exc:
        raise CudaBackendError(
            f"cannot read {cmake_file} ({exc}): the CUDA extension is built from a source checkout of "
            "elfatt-deploy; install it with `pip install -e .` from the repository"
        ) from None
    match = re.search(r"add_library\(\s*elfatt_kernels\s+(?:STATIC|SHARED|OBJECT)?([^)]*)\)", text)
    sources = re.findall(r"\S+\.(?:cu|cpp)\b", match.group(1)) if match else []
    if not sources:
        raise CudaBackendError(f"{cmake_file} has no add_library(elfatt_kernels ...) with .cu/.cpp sources")
    return [cmake_file.parent / s for s in sources]


def source_files() -> list[Path]:
    """The binding and kernel sources the extension is compiled from."""
    return [_PLUGINS_DIR / "torch" / BINDING_SOURCE] + kernel_sources()


def cuda_arch_flags(arch_list: Optional[str] = None, capabilities=None) -> tuple[list[str], list[str]]:
    """nvcc -gencode flags and the architectures they name ("9.0", ...) for one build.

    ``arch_list``: a TORCH_CUDA_ARCH_LIST value ("8.7;9.0+PTX", spaces or semicolons); None reads the
    variable, and where it is unset too, ``capabilities`` ((major, minor) pairs; None = the visible
    GPUs). Naming the architectures in the flags puts them in the build's cache key, so a cached
    build for other GPUs is never reused. Returns ([], []) where torch should choose (named
    architectures such as "Ampere", or no GPU and no list). Raises CudaBackendError for a malformed list.
    """
    if arch_list is None:
        arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST") or None
    if arch_list is None:
        if capabilities is None:
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            capabilities = [torch.cuda.get_device_capability(i) for i in range(count)]
        entries = sorted({f"{major}.{minor}" for major, minor in capabilities})
    else:
        entries = [e for e in re.split(r"[;\s]+", arch_list.strip()) if e]
        numeric = [re.fullmatch(r"\d+\.\d+[a-z]?(\+PTX)?", e) is not None for e in entries]
        if not entries or not all(numeric):
            if entries and all(ok or re.fullmatch(r"[A-Za-z][A-Za-z+]*", e) for ok, e in zip(numeric, entries)):
                return [], []  # named architectures ("Ampere", "Hopper+PTX"): torch translates those itself
            raise CudaBackendError(
                f"TORCH_CUDA_ARCH_LIST={arch_list!r} is not a list of compute capabilities; write it as "
                "e.g. \"8.7\" (Orin), \"9.0\" (H100/H200) or \"8.0;8.7;9.0+PTX\""
            )
    flags, archs = [], []
    for entry in entries:
        base = entry.removesuffix("+PTX")
        number = base.replace(".", "")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if entry.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
        archs.append(base)
    return flags, archs


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
    missing, PyTorch has no CUDA, or the compilation fails. :func:`build_info` then
    says which architectures it was built for and how long building or loading took.
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
        arch_flags, archs = cuda_arch_flags()
        start, start_wall = time.monotonic(), time.time()
        try:
            module = cpp_extension.load(
                name=EXTENSION_NAME,
                sources=[str(p) for p in source_files()],
                extra_include_paths=include_dirs,
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3", "-lineinfo", *arch_flags],
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
        _build_info.clear()
        library = getattr(module, "__file__", None)
        built = library is not None and Path(library).stat().st_mtime >= start_wall - 1.0
        _build_info.update(archs=archs or None, arch_flags=arch_flags, seconds=time.monotonic() - start,
                           built=built, cuda_home=str(cuda_home), library=library)
        _module = module
        return module


def build_info() -> dict:
    """How the loaded extension was built: ``archs`` (None: torch's choice), ``arch_flags``,
    ``seconds`` (building, or loading the cached build), ``built`` (compiled now, not loaded from the
    cache), ``cuda_home``, ``library``. Empty before a build."""
    return dict(_build_info)


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


def resolve_kernel_path(path=None) -> int:
    """elfatt::KernelPath of ``path``: None = $ELFATT_KERNEL_PATH (else the default), a name or a number
    of KERNEL_PATHS. Raises ValueError naming the value otherwise."""
    if path is None:
        return _kernel_path()
    if isinstance(path, str):
        if path not in KERNEL_PATHS:
            raise ValueError(f"kernel path {path!r} is not one of {', '.join(KERNEL_PATHS)}")
        return KERNEL_PATHS[path]
    if isinstance(path, bool) or not isinstance(path, int) or path not in KERNEL_PATHS.values():
        raise ValueError(f"kernel path {path!r} is not one of {', '.join(KERNEL_PATHS)} "
                         f"(numbers {sorted(KERNEL_PATHS.values())})")
    return path


def kernel_inputs(qkv, lepe_weight, lepe_bias):
    """The op's dispatch rule on CUDA: the (qkv, lepe_weight, lepe_bias) to hand to the kernels, or None
    when the kernels do not take qkv's dtype (float64: the eager reference computes it).

    The kernels take LePE parameters of qkv's dtype or of float32, both alike (elfatt_torch.cpp): those
    pass unchanged, so fp32 parameters under fp16/bf16 autocast are used as they are. Any other
    combination (float64 parameters, a float16 weight with a bfloat16 qkv, mixed weight and bias)
    becomes float32: a copy of C x 10 numbers, and exactly the values the eager reference computes
    with (it widens them to its float32 accumulation type).
    """
    import torch

    if qkv.dtype not in _kernel_dtypes():
        return None
    given = [t for t in (lepe_weight, lepe_bias) if t is not None]
    dtypes = {t.dtype for t in given}
    if len(dtypes) > 1 or (dtypes and dtypes.pop() not in (qkv.dtype, torch.float32)):
        lepe_weight, lepe_bias = (None if t is None else t.float() for t in (lepe_weight, lepe_bias))
    return qkv, lepe_weight, lepe_bias


def _kernel_dtypes():
    import torch

    return (torch.float32, torch.float16, torch.bfloat16)


def cuda_attention(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale, path=None):
    """The CUDA kernels on CUDA tensors, same arguments and checks as the op (path: see KERNEL_PATHS).

    Raises ValueError for a dtype the kernels do not take (float64: use the op, which sends it to
    the eager reference) and CudaBackendError when the extension cannot be built.
    """
    from .library import check_op_inputs, dtype_name

    check_op_inputs(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)
    kernel_path = resolve_kernel_path(path)
    inputs = kernel_inputs(qkv, lepe_weight, lepe_bias)
    if inputs is None:
        raise ValueError(f"qkv dtype {dtype_name(qkv.dtype)} is not taken by the CUDA kernels (float32, float16, "
                         "bfloat16); elfatt_deploy.elfatt_attention runs it in the eager reference")
    module = build_extension()
    return module.attention(
        *inputs, int(global_heads), int(local_heads), int(window_h), int(window_w), float(scale), kernel_path,
    )


def _op_kernel(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    """The "cuda" kernel of elfatt::attention: the CUDA kernels, or the eager reference for float64."""
    if kernel_inputs(qkv, lepe_weight, lepe_bias) is None:
        from .library import attention_reference

        return attention_reference(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)
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
        # torch.library.impl, not register_kernel: the latter wraps the kernel in torch._disable_dynamo, which
        # imports torch._dynamo on the first call (the op is opaque to torch.compile either way: it has a fake)
        torch.library.impl("elfatt::attention", "cuda", _op_kernel)
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
