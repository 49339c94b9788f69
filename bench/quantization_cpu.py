#!/usr/bin/env python3
"""INT8 (explicit Q/DQ, `elfatt-deploy quantize`) vs FP32 and FP16 in ONNX Runtime on CPU: accuracy and latency.

    python bench/quantization_cpu.py                                   # both reference models
    python bench/quantization_cpu.py --models elfatt_vit_micro --held-out 500 --sizes 224 --out out/quant

For each reference model (elfatt_deploy/reference_models, trained on the synthetic shapes task):
export FP32 and FP16 (dynamic), quantize the FP32 export and the FP16 export to INT8 on
``--calib-samples`` calibration images (split seed 2), then run PyTorch fp32 and each file on
``--held-out`` held-out images (split seed 1, the split the training reports its top-1 on):
top-1 accuracy of each, top-1 agreement with PyTorch fp32, relative L2 of the logits. Then the
latency of FP32 vs INT8 (over FP32) at each of ``--sizes`` (batch 1): one process, the
variants timed in turn within each repeat (side by side, so load changes hit both alike),
median of ``--repeats`` after a warm-up. Prints tables and writes quantization_cpu.json
(results, which layers stayed in float, machine, load average, versions, settings) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.onnxruntime_cpu import _environment  # noqa: E402  (machine and versions, as the other CPU bench)


def _export(model, path, precision):
    from elfatt_deploy.export.exporter import export_onnx

    return export_onnx(model, path, "1x3x112x112", precision=precision)


def _accuracy(name, files, held_out, args) -> list[dict]:
    from elfatt_deploy.export.model_loading import build_model
    from elfatt_deploy.preprocess import DEFAULT_NORMALIZATION
    from elfatt_deploy.reference_models import checkpoint_path
    from elfatt_deploy.runtime.onnxruntime_runner import make_onnxruntime_runner
    from elfatt_deploy.runtime.torch_runner import TorchRunner
    from elfatt_deploy.validation.images import run_image_parity

    model = build_model(name, checkpoint=str(checkpoint_path(name)))
    rows = []
    for variant, path in files.items():
        result = run_image_parity(TorchRunner(model, name="pytorch"), make_onnxruntime_runner(path, name=variant),
                                  input_name="image", output_name="logits", images=held_out, size=(112, 112),
                                  normalization=DEFAULT_NORMALIZATION, rtol_l2=1.0, batch=50)
        rows.append({"model": name, "variant": variant, "images": result.images,
                     "pytorch_top1": result.reference_accuracy, "top1": result.backend_accuracy,
                     "drop_points": 100 * (result.reference_accuracy - result.backend_accuracy),
                     "top1_agreement": result.agreement, "rel_l2": result.metrics.rel_l2_error,
                     "per_image_rel_l2_max": max(result.per_image_rel_l2)})
    return rows


def _latency(name, files, sizes, args) -> list[dict]:
    import numpy as np
    import onnxruntime as ort

    rows = []
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    sessions = {v: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for v, p in files.items()}
    for size in sizes:
        image = np.random.default_rng(args.seed).standard_normal((1, 3, size, size)).astype(np.float32)
        times = {v: [] for v in sessions}
        for session in sessions.values():
            session.run(None, {"image": image})  # warm-up
        load_before = os.getloadavg()
        for _ in range(args.repeats):
            for variant, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {"image": image})
                times[variant].append((time.perf_counter() - start) * 1e3)
        load_after = os.getloadavg()
        base = statistics.median(times["fp32"])
        for variant, t in times.items():
            rows.append({"model": name, "variant": variant, "size": size, "median_ms": statistics.median(t),
                         "min_ms": min(t), "speedup_vs_fp32": base / statistics.median(t), "times_ms": t,
                         "loadavg_1m_before": load_before[0], "loadavg_1m_after": load_after[0]})
    return rows


def _table(headers, rows) -> str:
    from elfatt_deploy.cli.table import format_table

    return format_table(headers, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="elfatt_vit_micro,elfatt_cswin_micro")
    parser.add_argument("--held-out", type=int, default=1000, help="held-out images (split seed 1), default 1000")
    parser.add_argument("--calib-samples", type=int, default=256, help="calibration images (split seed 2)")
    parser.add_argument("--method", default="max", choices=("max", "entropy", "percentile"))
    parser.add_argument("--sizes", default="224,512", help="latency input sizes, default 224,512")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results", help="output folder (default bench/results)")
    args = parser.parse_args(argv)

    import torch

    from elfatt_deploy.atomic import atomic_write_text
    from elfatt_deploy.data.image_folder import write_image_folder
    from elfatt_deploy.export.model_loading import build_model
    from elfatt_deploy.quantize.qdq import quantize_onnx
    from elfatt_deploy.reference_models import checkpoint_path

    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    started = time.time()
    accuracy, latency, layers = [], [], {}
    with tempfile.TemporaryDirectory(prefix="elfatt-quant-bench-") as tmp:
        tmp = Path(tmp)
        calib = write_image_folder(tmp / "calib", args.calib_samples, seed=2, size=112)
        held_out = write_image_folder(tmp / "held_out", args.held_out, seed=1, size=112)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            model = build_model(name, checkpoint=str(checkpoint_path(name)))
            files = {"fp32": _export(model, tmp / f"{name}-fp32.onnx", "fp32"),
                     "fp16": _export(model, tmp / f"{name}-fp16.onnx", "fp16")}
            for base in ("fp32", "fp16"):
                result = quantize_onnx(files[base], tmp / f"{name}-int8-{base}.onnx", calib.root,
                                       samples=args.calib_samples, method=args.method, progress=False)
                files[f"int8/{base}"] = result.output
                layers[f"{name} int8/{base}"] = {"quantized": len(result.quantized), "unquantized": result.unquantized,
                                                 "float_ops": result.float_ops, "calibration": result.calibration}
            accuracy += _accuracy(name, files, held_out, args)
            latency += _latency(name, {v: files[v] for v in ("fp32", "int8/fp32")}, sizes, args)

    print(f"accuracy on {args.held_out} held-out images (split seed 1), calibration {args.calib_samples} images "
          f"({args.method}), ONNX Runtime CPU vs PyTorch fp32")
    print(_table(["model", "variant", "top-1", "PyTorch top-1", "drop (points)", "agreement", "rel L2 logits"],
                 [[r["model"], r["variant"], f"{r['top1']:.4f}", f"{r['pytorch_top1']:.4f}", f"{r['drop_points']:+.2f}",
                   f"{r['top1_agreement']:.4f}", f"{r['rel_l2']:.2e}"] for r in accuracy]))
    print(f"\nlatency, batch 1, {args.threads} threads, median of {args.repeats} (variants interleaved)")
    print(_table(["model", "size", "variant", "median ms", "min ms", "speed-up vs fp32", "load 1m"],
                 [[r["model"], r["size"], r["variant"], f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}",
                   f"{r['speedup_vs_fp32']:.2f}x", f"{r['loadavg_1m_before']:.1f}"] for r in latency]))
    env = _environment(argparse.Namespace(model=args.models, sizes=args.sizes, repeats=args.repeats, threads=args.threads))
    env["settings"].update({"held_out": args.held_out, "calib_samples": args.calib_samples, "method": args.method,
                            "precision": "fp32, fp16, int8-qdq over fp32 and over fp16"})
    report = {"accuracy": accuracy, "latency": latency, "layers": layers, "environment": env,
              "wall_s": round(time.time() - started, 1)}
    path = out_dir / "quantization_cpu.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
