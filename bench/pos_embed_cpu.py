#!/usr/bin/env python3
"""What the position-embedding resample costs per inference in ONNX Runtime CPU: Resize vs MatMuls vs folded.

    python bench/pos_embed_cpu.py                       # ViT-S table (384 x 14 x 14) at 224, 512, 1024
    python bench/pos_embed_cpu.py --channels 192 --sizes 224,512 --repeats 50 --out out/bench

Three small ONNX files compute ``tokens + pos(h, w)`` for tokens ``[1, h, w, C]``
(h, w = size / 16), each the way a ViT export does it:

- ``resize``: the bicubic ``Resize`` the exporter wrote for ``F.interpolate`` (the
  form before models/resample.py), dynamic h and w;
- ``matmul``: models/resample.py's two interpolation-matrix products, dynamic
  (what a dynamic export runs now);
- ``folded``: the table already resampled, an initializer (what a static export
  runs now, export/fold.py): only the Add is left.

The three run in one process in turn (repeat 1 of each, then repeat 2, ...), so
load from other jobs hits them alike; the median of ``--repeats`` per variant and
size (and the minimum, steadier on a loaded machine). All three include the
Add of the tokens (what ``folded`` times alone). Outputs are compared with float64 ``F.interpolate``. Prints
a table and writes pos_embed_cpu.json (every time, machine, versions, load
average before and after) and pos_embed_cpu.png (median and minimum per variant
against the size, when matplotlib is installed) to ``--out``, atomically.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_common import cpu_model  # noqa: E402  (bench/, beside this file)

VARIANTS = ("resize", "matmul", "folded")
PATCH = 16


def _modules(table):
    import torch
    import torch.nn.functional as F

    from elfatt_deploy.models.resample import resize_bicubic_channels_last

    class Resize(torch.nn.Module):  # the form before: F.interpolate -> ONNX Resize
        def __init__(self):
            super().__init__()
            self.pos_embed = torch.nn.Parameter(table.clone())

        def forward(self, tokens):
            pos = F.interpolate(self.pos_embed, size=(tokens.shape[1], tokens.shape[2]), mode="bicubic",
                                align_corners=False)
            return tokens + pos.permute(0, 2, 3, 1)

    class MatMul(Resize):
        def forward(self, tokens):
            return tokens + resize_bicubic_channels_last(self.pos_embed, tokens.shape[1], tokens.shape[2])

    return Resize().eval(), MatMul().eval()


def _export(module, example, dynamic: bool) -> bytes:
    import contextlib
    import logging

    import torch

    from elfatt_deploy.export.fold import fold_constant_nodes

    dim = torch.export.Dim
    shapes = {"tokens": {1: dim("h", min=2, max=1024), 2: dim("w", min=2, max=1024)}} if dynamic else None
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision chatter
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=["tokens"], output_names=["out"],
                                    dynamic_shapes=shapes, opset_version=18, optimize=True, verbose=False)
    proto = program.model_proto
    fold_constant_nodes(proto)
    return proto.SerializeToString()


def _files(channels: int, grid: int, sizes, seed: int):
    """variant -> size -> serialized model; the table; node counts."""
    import numpy as np
    import onnx
    import torch

    table = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, channels, grid, grid)) * 0.02).float()
    resize, matmul = _modules(table)
    example = torch.zeros(1, 20, 18, channels)  # traced off the table size (torch.export specializes equal sizes)
    dynamic = {"resize": _export(resize, example, True), "matmul": _export(matmul, example, True)}
    files = {"resize": {}, "matmul": {}, "folded": {}}
    for size in sizes:
        n = size // PATCH
        files["resize"][size] = dynamic["resize"]
        files["matmul"][size] = dynamic["matmul"]
        files["folded"][size] = _export(matmul, torch.zeros(1, n, n, channels), False)  # static: the table folds
    nodes = {v: {size: [n.op_type for n in onnx.load_from_string(files[v][size]).graph.node] for size in sizes}
             for v in VARIANTS}
    return files, table, nodes


def measure(args) -> list[dict]:
    import numpy as np
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    files, table, nodes = _files(args.channels, args.grid, args.sizes, args.seed)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    rows = []
    for size in args.sizes:
        n = size // PATCH
        tokens = np.random.default_rng(args.seed + size).standard_normal((1, n, n, args.channels)).astype(np.float32)
        expected = (torch.from_numpy(tokens).double() + F.interpolate(
            table.double(), size=(n, n), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)).numpy()
        sessions = {v: ort.InferenceSession(files[v][size], options, providers=["CPUExecutionProvider"])
                    for v in VARIANTS}
        times = {v: [] for v in VARIANTS}
        errors = {}
        for v, session in sessions.items():  # warm-up, and the check that all three compute the same
            out = session.run(None, {"tokens": tokens})[0]
            errors[v] = float(np.linalg.norm(out - expected) / np.linalg.norm(expected))
        for _ in range(args.repeats):
            for v, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {"tokens": tokens})
                times[v].append((time.perf_counter() - start) * 1e3)
        medians = {v: statistics.median(t) for v, t in times.items()}
        rows.append({
            "size": size, "tokens": [n, n], "times_ms": times, "median_ms": medians,
            "min_ms": {v: min(t) for v, t in times.items()},
            "rel_l2_vs_float64_interpolate": errors,
            "main_graph_nodes": {v: len(nodes[v][size]) for v in VARIANTS},
            "resize_nodes": {v: nodes[v][size].count("Resize") for v in VARIANTS},
        })
        print(f"  {size}: " + ", ".join(f"{v} {medians[v]:.3f} ms" for v in VARIANTS), flush=True)
    return rows


def _table(rows) -> str:
    lines = ["| input | tokens | Resize ms (median / min) | MatMuls ms | folded ms | Resize / MatMuls (median) | "
             "main-graph nodes (Resize / MatMuls / folded) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        m, low, k = r["median_ms"], r["min_ms"], r["main_graph_nodes"]
        cells = " | ".join(f"{m[v]:.3f} / {low[v]:.3f}" for v in VARIANTS)
        lines.append(f"| {r['size']}x{r['size']} | {r['tokens'][0]}x{r['tokens'][1]} | {cells} | "
                     f"{m['resize'] / m['matmul']:.1f}x | {k['resize']} / {k['matmul']} / {k['folded']} |")
    return "\n".join(lines)


def _plot(rows, path: Path, title: str) -> bool:
    """Median (line) and minimum (dotted) ms per variant against the input size, log scale; atomic."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)")
        return False
    from elfatt_deploy.atomic import atomic_output

    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for variant, marker in zip(VARIANTS, "os^"):
        line, = ax.plot(sizes, [r["median_ms"][variant] for r in rows], "-", marker=marker, label=f"{variant} (median)")
        ax.plot(sizes, [r["min_ms"][variant] for r in rows], ":", marker=marker, color=line.get_color(), alpha=0.6,
                label=f"{variant} (min)")
    ax.set_xlabel("input size (pixels, square)")
    ax.set_ylabel("ms per inference (tokens + pos)")
    ax.set_xticks(sizes)
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=384, help="table channels (ViT-S: 384)")
    parser.add_argument("--grid", type=int, default=14, help="table side (224 / 16 = 14)")
    parser.add_argument("--sizes", default="224,512,1024", help="square input sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/bench", help="directory for the JSON and PNG")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r} must be integers separated by commas, e.g. 224,512,1024")
    if args.repeats < 1 or args.threads < 1 or args.channels < 1 or args.grid < 2 or not args.sizes \
            or min(args.sizes) < 2 * PATCH:
        parser.error("--repeats, --threads, --channels must be >= 1, --grid >= 2 and every size >= 32")
    from elfatt_deploy.atomic import atomic_write_text, check_output_path

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_output_path(out_dir / "pos_embed_cpu.json", what="--out")
    load_before = os.getloadavg()
    started = time.time()
    rows = measure(args)
    import onnx
    import onnxruntime
    import torch

    env = {"machine": platform.machine(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
           "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
           "torch": torch.__version__, "threads": args.threads, "repeats": args.repeats, "channels": args.channels,
           "grid": args.grid, "seed": args.seed,
           "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
           "wall_s": time.time() - started}
    print(f"\npos_embed {args.channels}x{args.grid}x{args.grid}, fp32, {args.threads} threads, {env['cpu']}, "
          f"ONNX Runtime {env['onnxruntime']} CPU; median of {args.repeats}, interleaved; load average before "
          f"{load_before[0]:.1f}, after {env['load_average']['after'][0]:.1f}; {env['wall_s']:.0f} s")
    print(_table(rows))
    worst = {v: max(r["rel_l2_vs_float64_interpolate"][v] for r in rows) for v in VARIANTS}
    print("relative L2 vs float64 F.interpolate, worst: " + ", ".join(f"{v} {e:.1e}" for v, e in worst.items()))
    report = {"benchmark": "pos_embed_cpu", "environment": env, "results": rows}
    atomic_write_text(out_dir / "pos_embed_cpu.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_dir / 'pos_embed_cpu.json'}")
    title = (f"pos-embed resample {args.channels}x{args.grid}x{args.grid}: ONNX Runtime {env['onnxruntime']} CPU, "
             f"{args.threads} threads")
    if _plot(rows, out_dir / "pos_embed_cpu.png", title):
        print(f"wrote {out_dir / 'pos_embed_cpu.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
