"""``elfatt-deploy build-ext``: build (or rebuild) the PyTorch CUDA extension of the op."""

from __future__ import annotations

import os
import shutil
import sys

NAME = "build-ext"
HELP = "build the CUDA kernels of elfatt::attention as a PyTorch extension (JIT, cached)"


def add_arguments(parser) -> None:
    parser.add_argument("--verbose", "-v", action="store_true", help="print the compiler commands and output")
    parser.add_argument("--force", action="store_true", help="delete the cached build first and rebuild from scratch")
    parser.add_argument("--arch", metavar="LIST",
                        help='CUDA architectures, as TORCH_CUDA_ARCH_LIST (e.g. "8.7" for Orin, "8.0;9.0"); '
                             "default: the GPUs of this machine")
    parser.add_argument("--check", action="store_true",
                        help="after building, run a small case on the GPU and compare with the eager reference")


def _smoke_check(module) -> int:
    import torch

    from ...op.reference import elfatt_attention_reference

    if not torch.cuda.is_available():
        print("check skipped: no CUDA GPU visible", file=sys.stderr)
        return 0
    gen = torch.Generator(device="cuda").manual_seed(0)
    worst = 0.0
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        qkv = torch.randn(2, 9, 13, 3 * 64, device="cuda", generator=gen).to(dtype)
        weight = torch.randn(64, 1, 3, 3, device="cuda", generator=gen).to(dtype)
        bias = torch.randn(64, device="cuda", generator=gen).to(dtype)
        out = module.attention(qkv, weight, bias, 1, 1, 7, 7, 0.0, -1).double()
        ref = elfatt_attention_reference(qkv.double(), weight.double(), bias.double(), 1, 1, 7, 7, 0.0)
        rel = float((out - ref).norm() / ref.norm().clamp_min(1e-30))
        worst = max(worst, rel / tol)
        status = "ok" if rel <= tol else "FAIL"
        print(f"check {str(dtype).replace('torch.', ''):>8}: rel-L2 {rel:.2e} (limit {tol:.0e}) {status}")
    return 0 if worst <= 1.0 else 1


def run(args) -> int:
    if args.arch:
        os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch
    from ...op import cuda_backend

    if args.force:
        build_dir = cuda_backend.cached_build_dir()
        if build_dir is not None and build_dir.is_dir():
            shutil.rmtree(build_dir)
            print(f"removed cached build {build_dir}")
    # CudaBackendError (a ToolkitError) becomes `error: ...`, exit 3, in the CLI's main
    module = cuda_backend.build_extension(verbose=args.verbose)
    print(f"built {cuda_backend.EXTENSION_NAME} (kernels v{module.version()}): {module.__file__}")
    if args.check:
        return _smoke_check(module)
    return 0
