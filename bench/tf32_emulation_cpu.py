#!/usr/bin/env python3
"""How far a TensorRT engine that may use TF32 lands from PyTorch: TF32 emulated on a CPU.

    python bench/tf32_emulation_cpu.py                       # the reference models and ViT-T, ViT-S, CSWin-T
    python bench/tf32_emulation_cpu.py --models elfatt_vit_micro --batch 1 --out out/tf32
    python bench/tf32_emulation_cpu.py --precision fp16 --models elfatt_vit_micro,elfatt_cswin_micro

TensorRT sets BuilderFlag.TF32 unless it is cleared (`elfatt-deploy build` clears it unless --tf32;
trtexec keeps it unless --noTF32). Then FP32 matrix multiplies and convolutions may run on tensor
cores, their inputs rounded to TF32 (10 mantissa bits instead of 23), their sums in FP32 (the flag's
documentation in NvInfer.h). No GPU is needed to see what that does to a model's output: each model
runs in PyTorch float32 with every F.linear, F.conv2d, matmul / bmm / einsum and attention product
(scores and P.V) fed TF32-rounded inputs, and is compared with the float64 model on the same images.

Four variants: the rounding mode (``nearest``, round half away from zero as `cvt.rna.tf32.f32`; or
``truncate``, the 13 low mantissa bits dropped, the worse of the two that hardware may do) times whether
the ElfattAttention op's own products are TF32 too (``op tf32``: a --no-plugin engine, whose op TensorRT
builds from the ONNX function body) or exact (``op exact``: our plugin, whose FP32 kernels do not use
TF32). It estimates what TensorRT does, it does not bound it: TensorRT need not pick a TF32 tactic for every
layer (a depthwise LePE convolution rarely runs on tensor cores), but it also fuses layers and orders
its sums its own way.

``--precision fp16`` runs the FP16 export's model instead (export/fp16.py: FP16 body; LayerNorms, the
final norm, the head and the op's sums and products in FP32): TF32 then touches only its FP32 products
(the head, and the op's products with ``op tf32``), which is what an FP16 engine built with TF32 allowed
(trtexec without --noTF32) adds to FP16's own error. Compared with the float64 model as well.

Prints a table and writes tf32_emulation.json (every error, models, shapes, seed, machine, versions)
to ``--out`` atomically. validation/tolerances.py's TENSORRT_TF32_RTOL_L2 is set from these figures.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

#: How many low mantissa bits of a float32 TF32 drops (23 - 10).
DROPPED_BITS = 13
ROUNDINGS = ("nearest", "truncate")
DEFAULT_MODELS = ("elfatt_vit_micro", "elfatt_cswin_micro", "elfatt_vit_tiny", "elfatt_vit_small", "elfatt_vit_base",
                  "elfatt_cswin_tiny")


def round_to_tf32(x: torch.Tensor, rounding: str = "nearest") -> torch.Tensor:
    """``x`` (float32) with 10 mantissa bits: ``nearest`` rounds half away from zero, ``truncate`` toward zero.

    Other dtypes are returned as they are (TF32 applies to FP32 tensors only)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding {rounding!r} must be one of {', '.join(ROUNDINGS)}")
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        return x
    x = x.contiguous()
    bits = x.view(torch.int32)
    finite = torch.isfinite(x)
    if rounding == "nearest":  # sign-magnitude: adding half an ulp to the magnitude's bits rounds ties away
        bits = torch.where(finite, bits + (1 << (DROPPED_BITS - 1)), bits)
    rounded = (bits & ~((1 << DROPPED_BITS) - 1)).view(torch.float32)
    return torch.where(finite, rounded, x)  # inf stays inf; a NaN stays NaN whatever its payload bits


def _is_elfatt_op(func) -> bool:
    return str(func).startswith("elfatt.attention")


class TF32Emulation(TorchFunctionMode):
    """Within it, FP32 matrix products and convolutions see TF32-rounded inputs (module docstring)."""

    PRODUCTS = {F.linear, F.conv1d, F.conv2d, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
                torch.bmm, torch.Tensor.bmm, torch.mm, torch.Tensor.mm, torch.einsum}

    def __init__(self, rounding: str = "nearest", op_in_tf32: bool = False):
        super().__init__()
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding {rounding!r} must be one of {', '.join(ROUNDINGS)}")
        self.rounding, self.op_in_tf32 = rounding, op_in_tf32
        self.products = 0  # how many products were rounded (a check that the emulation took effect)

    def _round(self, value):
        return round_to_tf32(value, self.rounding)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.PRODUCTS:
            self.products += 1
            if func in (F.linear, F.conv1d, F.conv2d):  # input and weight; the bias is added in FP32
                args = tuple(self._round(a) if i < 2 else a for i, a in enumerate(args))
                for key in ("input", "weight"):
                    if key in kwargs:
                        kwargs[key] = self._round(kwargs[key])
            elif func is torch.einsum:
                args = (args[0], *(self._round(a) for a in args[1:]))
            else:
                args = tuple(self._round(a) for a in args)
            return func(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            return self._attention(*args, **kwargs)
        if self.op_in_tf32 and _is_elfatt_op(func):
            from elfatt_deploy.op.library import attention_reference

            inner = TF32Emulation(self.rounding, op_in_tf32=True)
            with inner:
                out = attention_reference(*args, **kwargs)
            self.products += inner.products
            return out
        return func(*args, **kwargs)

    def _attention(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        """Softmax attention as two products, each with TF32 inputs (scores and softmax in FP32)."""
        if dropout_p or is_causal:
            raise ValueError("the emulation covers inference attention only (no dropout, not causal)")
        self.products += 2
        scale = 1.0 / q.shape[-1] ** 0.5 if scale is None else scale
        scores = torch.matmul(self._round(q), self._round(k).transpose(-1, -2)) * scale
        if attn_mask is not None:
            scores = scores + attn_mask
        return torch.matmul(self._round(scores.softmax(dim=-1)), self._round(v))


def relative_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref).norm() / ref.norm())


def measure_errors(model, reference, x: torch.Tensor, precision: str = "fp32") -> dict:
    """Errors against the float64 ``reference`` of ``model`` on ``x``: without TF32 (keyed ``precision``) and
    the four TF32 variants."""
    errors = {}
    with torch.no_grad():
        ref = reference(x.double())
        errors[precision] = relative_l2(model(x), ref)
        for rounding in ROUNDINGS:
            for op_in_tf32 in (False, True):
                mode = TF32Emulation(rounding, op_in_tf32)
                with mode:
                    out = model(x)
                if mode.products == 0:
                    raise RuntimeError("no matrix product was seen; the emulation did not apply")
                errors[f"tf32 {rounding}, op {'tf32' if op_in_tf32 else 'exact'}"] = relative_l2(out, ref)
    return errors


PRECISIONS = ("fp32", "fp16")


def measure_model(name: str, shape, *, seed: int = 0, seeds: int = 1, checkpoint=None,
                  precision: str = "fp32") -> dict:
    """``measure_errors`` of one model on ``seeds`` random batches of ``shape`` (seeds seed, seed+1, ...); with
    several, ``rel_l2_vs_float64`` holds the worst of each variant and ``summary`` its mean, p99 and max.
    ``precision`` fp16: the FP16 export's model (export/fp16.py) against the float64 model."""
    import numpy as np

    from elfatt_deploy.export.fp16 import to_half_precision
    from elfatt_deploy.export.model_loading import build_model

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} must be one of {', '.join(PRECISIONS)}")
    model = build_model(name, checkpoint=checkpoint)
    reference = copy.deepcopy(model).double()
    if precision == "fp16":
        model = to_half_precision(model)
    draws = [measure_errors(model, reference, torch.randn(*shape, generator=torch.Generator().manual_seed(s)),
                            precision)
             for s in range(seed, seed + seeds)]
    summary = {}
    for key in draws[0]:
        values = np.array([d[key] for d in draws])
        summary[key] = {"mean": float(values.mean()), "p99": float(np.quantile(values, 0.99)),
                        "max": float(values.max()), "min": float(values.min())}
    return {"model": name, "precision": precision, "shape": list(shape), "seed": seed, "seeds": seeds,
            "weights": "reference checkpoint" if checkpoint else "random (seed 0)",
            "rel_l2_vs_float64": {k: v["max"] for k, v in summary.items()}, "summary": summary,
            "per_seed": draws if seeds > 1 else None}


def _model_input(name: str, batch: int, size: int = 0):
    from elfatt_deploy.models.registry import get_entry
    from elfatt_deploy.reference_models import REFERENCE_MODELS, checkpoint_path

    if name in REFERENCE_MODELS:
        size = size or REFERENCE_MODELS[name].image_size
        return (batch, 3, size, size), str(checkpoint_path(name))
    size = size or get_entry(name).default_input_size
    return (batch, 3, size, size), None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated registry names")
    parser.add_argument("--batch", type=int, default=2, help="images per model (default 2)")
    parser.add_argument("--size", type=int, default=0,
                        help="image side for every model (default: each model's, 112 for the reference models, else 224)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images")
    parser.add_argument("--seeds", type=int, default=1,
                        help="draw this many batches per model (seeds SEED, SEED+1, ...); the table shows the worst of "
                             "each variant, the JSON also mean, p99 and min (default 1)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32: the model in float32 (default); fp16: the FP16 export's model (FP32 head, "
                             "LayerNorms and op sums), whose FP32 products TF32 would round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    parser.add_argument("--out", default="out/tf32", help="directory for tf32_emulation.json")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch {args.batch} must be >= 1")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds} must be >= 1")
    if args.size < 0:
        parser.error(f"--size {args.size} must be a positive image side in pixels, e.g. 224 (or 0 for each model's)")
    from elfatt_deploy.atomic import atomic_write_text, check_output_path
    from elfatt_deploy.jsonio import dumps
    from elfatt_deploy.models.registry import get_entry
    from elfatt_deploy.validation.tolerances import DEFAULT_RTOL_L2, TENSORRT_TF32_RTOL_L2
    from tqdm import tqdm

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in models:
        try:
            get_entry(name)
        except (KeyError, ValueError) as exc:
            parser.error(f"--models: {exc}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = check_output_path(out_dir / "tf32_emulation.json", what="--out")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in tqdm(models, desc="tf32 emulation", unit="model"):
        shape, checkpoint = _model_input(name, args.batch, args.size)
        results.append(measure_model(name, shape, seed=args.seed, seeds=args.seeds, checkpoint=checkpoint,
                                     precision=args.precision))
    columns = list(results[0]["rel_l2_vs_float64"])
    if args.seeds > 1:
        print(f"worst of {args.seeds} draws per model (seeds {args.seed}..{args.seed + args.seeds - 1}); mean, p99 "
              "and min in the JSON")
    header = f"{'model':<20} {'shape':<16} " + " ".join(f"{c:>26}" for c in columns)
    print(header)
    print("-" * len(header))
    for r in results:
        cells = " ".join(f"{r['rel_l2_vs_float64'][c]:>26.2e}" for c in columns)
        print(f"{r['model']:<20} {'x'.join(map(str, r['shape'])):<16} {cells}")
    worst = max(v for r in results for k, v in r["rel_l2_vs_float64"].items() if k != args.precision)
    strict = DEFAULT_RTOL_L2[("tensorrt", "fp32")]
    if args.precision == "fp16":
        fp16_limit = DEFAULT_RTOL_L2[("tensorrt", "fp16")]
        plain = max(r["rel_l2_vs_float64"]["fp16"] for r in results)
        print(f"worst error with TF32 {worst:.2e}, without {plain:.2e}: validate's tensorrt fp16 limit "
              f"{fp16_limit:.0e} ({fp16_limit / worst:.1f}x), which fp16 engines keep whether or not TF32 was allowed")
    else:
        print(f"worst TF32 error {worst:.2e}: validate's TF32 limit {TENSORRT_TF32_RTOL_L2:.0e} "
              f"({TENSORRT_TF32_RTOL_L2 / worst:.1f}x); the strict fp32 limit is {strict:.0e}")
    record = {
        "what": f"relative L2 error of {args.precision} model outputs against float64, TF32 emulated "
                "(bench/tf32_emulation_cpu.py)",
        "results": results,
        "worst_tf32": worst,
        "limits": {"tensorrt_fp32": strict, "tensorrt_tf32": TENSORRT_TF32_RTOL_L2,
                   "tensorrt_fp16": DEFAULT_RTOL_L2[("tensorrt", "fp16")]},
        "settings": {"precision": args.precision, "batch": args.batch, "size": args.size or "each model's", "seed": args.seed,
                     "seeds": args.seeds, "threads": torch.get_num_threads()},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__},
    }
    atomic_write_text(json_path, dumps(record, indent=2) + "\n")
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
