"""``elfatt-deploy build-ext``: build (or rebuild) the PyTorch CUDA extension of the op."""

from __future__ import annotations

import os
import shutil

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

    from ...errors import MissingDependencyError
    from ...op.library import dtype_name
    from ...op.reference import elfatt_attention_reference
    from ...validation.tolerances import op_rtol_l2

    if not torch.cuda.is_available():
        raise MissingDependencyError("--check needs a CUDA GPU and none is visible (torch.cuda.is_available() is "
                                     "False); build without --check, or run it on the GPU machine")
    gen = torch.Generator(device="cuda").manual_seed(0)
    failed = False
    # (qkv dtype, LePE dtype): float32 LePE with float16 qkv is what autocast hands the op.
    for dtype, lepe_dtype in ((torch.float32, torch.float32), (torch.float16, torch.float16),
                              (torch.float16, torch.float32)):
        qkv = torch.randn(2, 9, 13, 3 * 64, device="cuda", generator=gen).to(dtype)
        weight = (0.3 * torch.randn(64, 1, 3, 3, device="cuda", generator=gen)).to(lepe_dtype)
        bias = (0.1 * torch.randn(64, device="cuda", generator=gen)).to(lepe_dtype)
        out = module.attention(qkv, weight, bias, 1, 1, 7, 7, 0.0, -1).double()
        ref = elfatt_attention_reference(qkv.double(), weight.double(), bias.double(), 1, 1, 7, 7, 0.0)
        rel = float((out - ref).norm() / ref.norm().clamp_min(1e-30))
        tol = op_rtol_l2(dtype_name(dtype))
        failed |= not rel <= tol
        status = "ok" if rel <= tol else "FAIL"
        print(f"check qkv {dtype_name(dtype):>8}, LePE {dtype_name(lepe_dtype):>8}: rel-L2 {rel:.2e} "
              f"(limit {tol:.0e}) {status}")
    return 1 if failed else 0


def run(args) -> int:
    if args.arch:
        os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch
    from ...op import cuda_backend

    if args.force:
        cuda_backend._check_prerequisites()  # a machine that cannot rebuild keeps its cached build
        build_dir = cuda_backend.cached_build_dir()
        if build_dir is not None and build_dir.is_dir():
            shutil.rmtree(build_dir)
            print(f"removed cached build {build_dir}")
    # CudaBackendError (a ToolkitError) becomes `error: ...`, exit 3, in the CLI's main
    module = cuda_backend.build_extension(verbose=args.verbose)
    info = cuda_backend.build_info()
    archs = ", ".join(f"sm_{a.replace('.', '')}" for a in info["archs"]) if info.get("archs") else "torch's default list"
    print(f"built {cuda_backend.EXTENSION_NAME} (kernels v{module.version()}) for {archs} in {info['seconds']:.1f} s "
          f"(cached builds load in seconds): {module.__file__}")
    if args.check:
        return _smoke_check(module)
    return 0
