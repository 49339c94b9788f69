#!/usr/bin/env python3
"""ELFATT vs vanilla attention, exported to ONNX, in ONNX Runtime on CPU.

    python bench/onnxruntime_cpu.py                                  # elfatt_vit_small at 224, 512, 1024
    python bench/onnxruntime_cpu.py --model elfatt_vit_tiny --sizes 224,512 --repeats 3 --out out/bench

Both models come from the registry with the same parameters
(``create_model(name)`` and ``create_model(name, attention="vanilla")``) and are
exported once each as dynamic fp32 files, so one file serves every size. Each
(model, size) runs in its own subprocess: the latency is the median of
``--repeats`` runs after one warm-up run, and the peak memory is the growth of
the process's peak resident set size (VmHWM; ru_maxrss off Linux) from just before
the session is created to after the last run, i.e. weights, session and
activations. Prints a table and writes onnxruntime_cpu.json (results, machine,
versions, settings) and onnxruntime_cpu.png (when matplotlib is installed) to
``--out``, atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_common import cpu_model, peak_rss_mib, plot_latency_memory  # noqa: E402  (bench/, beside this file)


def worker(onnx_path: str, size: int, repeats: int, threads: int, seed: int) -> dict:
    """Runs in the subprocess: one session, one size."""
    import numpy as np
    import onnxruntime as ort

    image = np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)
    before = peak_rss_mib()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    session.run(None, {"image": image})  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"image": image})
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times,
            "peak_mem_mib": peak_rss_mib() - before}


def _measure(onnx_path: Path, size: int, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(onnx_path), "--sizes", str(size), "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--seed", str(args.seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {onnx_path.name} at {size}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _environment(args) -> dict:
    import onnx
    import onnxruntime
    import torch

    import elfatt_deploy

    return {"machine": platform.machine(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "torch": torch.__version__, "elfatt_deploy": elfatt_deploy.__version__,
            "settings": {"model": args.model, "sizes": args.sizes, "batch": 1, "repeats": args.repeats,
                         "warmup": 1, "intra_op_threads": args.threads, "precision": "fp32",
                         "provider": "CPUExecutionProvider", "graph_optimization": "ORT default (all)",
                         "memory": "peak RSS (VmHWM) growth from session creation to the last run"}}


def _plot(results: list, path: Path, title: str) -> bool:
    sizes = [r["size"] for r in results]
    series = {kind: {"ms": [r[kind]["median_ms"] for r in results], "mib": [r[kind]["peak_mem_mib"] for r in results],
                     "marker": marker} for kind, marker in (("elfatt", "o"), ("vanilla", "s"))}
    return plot_latency_memory(sizes, series, path, title)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="elfatt_vit_small")
    parser.add_argument("--sizes", default="224,512,1024", help="square input sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per (model, size) subprocess")
    parser.add_argument("--out", default="out/bench", help="directory for the JSON and PNG")
    parser.add_argument("--worker", metavar="ONNX", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.worker:
        print(json.dumps(worker(args.worker, sizes[0], args.repeats, args.threads, args.seed)))
        return 0
    if args.repeats < 1 or not sizes or min(sizes) < 32:
        parser.error("--repeats must be >= 1 and every size >= 32")

    from elfatt_deploy.cli.table import format_table
    from elfatt_deploy.export import export_onnx
    from elfatt_deploy.atomic import atomic_write_text
    from elfatt_deploy.export.model_loading import build_model

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for kind in ("elfatt", "vanilla"):
            model = build_model(args.model, config={"attention": kind}, seed=args.seed)
            files[kind] = export_onnx(model, Path(tmp) / f"{kind}.onnx", (1, 3, sizes[0], sizes[0]))
            print(f"exported {args.model} ({kind}) -> {files[kind].stat().st_size / 2**20:.0f} MiB", flush=True)
        results = []
        for size in sizes:
            row = {"size": size, "tokens": (-(-size // 16)) ** 2}  # the models pad the image to whole 16-pixel patches
            for kind in ("elfatt", "vanilla"):
                row[kind] = _measure(files[kind], size, args)
                print(f"  {size}: {kind} {row[kind]['median_ms']:.1f} ms, {row[kind]['peak_mem_mib']:.0f} MiB",
                      flush=True)
            row["speedup"] = row["vanilla"]["median_ms"] / row["elfatt"]["median_ms"]
            row["memory_ratio"] = row["vanilla"]["peak_mem_mib"] / max(row["elfatt"]["peak_mem_mib"], 1e-9)
            results.append(row)

    headers = ["input", "tokens", "ELFATT ms", "vanilla ms", "speedup", "ELFATT MiB", "vanilla MiB", "memory ratio"]
    table = format_table(headers, [
        [f"{r['size']}x{r['size']}", r["tokens"], f"{r['elfatt']['median_ms']:.1f}", f"{r['vanilla']['median_ms']:.1f}",
         f"{r['speedup']:.2f}x", f"{r['elfatt']['peak_mem_mib']:.0f}", f"{r['vanilla']['peak_mem_mib']:.0f}",
         f"{r['memory_ratio']:.2f}x"] for r in results])
    env = _environment(args)
    print(f"\n{args.model}, ONNX Runtime {env['onnxruntime']} CPU ({env['cpu']}, {args.threads} threads), batch 1, fp32")
    print(table)
    report = {"benchmark": "onnxruntime_cpu", "model": args.model, "environment": env, "results": results}
    atomic_write_text(out_dir / "onnxruntime_cpu.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_dir / 'onnxruntime_cpu.json'}")
    if _plot(results, out_dir / "onnxruntime_cpu.png", f"{args.model}: ELFATT vs vanilla, ONNX Runtime CPU"):
        print(f"wrote {out_dir / 'onnxruntime_cpu.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
