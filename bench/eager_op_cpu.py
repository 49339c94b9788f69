#!/usr/bin/env python3
"""The op alone in PyTorch eager on CPU: ELFATT (elfatt_attention) beside vanilla attention (SDPA) at the same width.

    python bench/eager_op_cpu.py                          # ViT-S layer (C=384, 3+3 heads, 7x7), grids 64x64, 128x128
    python bench/eager_op_cpu.py --grids 32,64 --repeats 3 --out out/bench

For each square token grid: fp32, batch 1, one warm-up call, median of --repeats
calls, the variants taking turns. GFLOP/s uses elfatt_deploy.flops (the same count
as the ONNX benchmark's ideal: attention core + LePE); bandwidth is the op's
compulsory traffic (qkv read once, output written once) over its time, beside the
machine's copy bandwidth measured in the same run (a 256 MiB tensor copy). The
first-call cost (import torch + elfatt_deploy, then the first and second call of
elfatt_attention) is measured in a fresh subprocess. The 1-minute load average is
recorded. Prints a table and writes eager_op_cpu.json to --out, atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIRST_CALL = """
import json, sys, time
t0 = time.perf_counter()
import torch
import elfatt_deploy as ed
t1 = time.perf_counter()
qkv = torch.randn(1, 14, 14, 3 * 384); w = torch.randn(384, 1, 3, 3); b = torch.randn(384)
t2 = time.perf_counter()
ed.elfatt_attention(qkv, w, b, global_heads=3, local_heads=3, window=(7, 7))
t3 = time.perf_counter()
ed.elfatt_attention(qkv, w, b, global_heads=3, local_heads=3, window=(7, 7))
t4 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "first_call_s": t3 - t2, "second_call_ms": (t4 - t3) * 1e3,
                  "imports_torch_dynamo": "torch._dynamo" in sys.modules}))
"""


def _time(fn, repeats: int) -> list:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", default="64,128", help="square token grids")
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6, help="total heads (half global, half local)")
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="out/bench")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from elfatt_deploy import elfatt_attention
    from elfatt_deploy.atomic import atomic_write_text
    from elfatt_deploy.cli.table import format_table
    from elfatt_deploy.flops import attention_core_flops

    torch.set_num_threads(args.threads)
    first = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    first_call = json.loads(first.stdout.strip().splitlines()[-1]) if first.returncode == 0 else {"error": first.stderr[-500:]}

    big = torch.empty(64 * 2**20)  # 256 MiB
    dst = torch.empty_like(big)
    copy_ms = statistics.median(_time(lambda: dst.copy_(big), args.repeats))
    copy_gbs = 2 * big.numel() * 4 / copy_ms / 1e6

    c, heads, gh = args.channels, args.heads, args.heads // 2
    d = c // heads
    rows, results = [], []
    for grid in [int(g) for g in args.grids.split(",")]:
        gen = torch.Generator().manual_seed(grid)
        qkv = torch.randn(1, grid, grid, 3 * c, generator=gen)
        w, b = torch.randn(c, 1, 3, 3, generator=gen) * 0.3, torch.randn(c, generator=gen) * 0.1
        q, k, v = qkv.reshape(1, grid * grid, 3, heads, d).permute(2, 0, 3, 1, 4)

        def run_elfatt():
            with torch.no_grad():
                elfatt_attention(qkv, w, b, global_heads=gh, local_heads=heads - gh, window=(args.window, args.window))

        def run_sdpa():
            with torch.no_grad():
                out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, grid, grid, c)
                vv = qkv[..., 2 * c:].permute(0, 3, 1, 2)
                out + F.conv2d(vv, w, b, padding=1, groups=c).permute(0, 2, 3, 1)

        times = {"elfatt": [], "sdpa": []}
        load = [round(os.getloadavg()[0], 2)]
        for _ in range(2):  # interleaved
            for kind, fn in (("elfatt", run_elfatt), ("sdpa", run_sdpa)):
                times[kind] += _time(fn, max(1, args.repeats // 2 + 1))
        load.append(round(os.getloadavg()[0], 2))
        bytes_moved = 4 * grid * grid * 4 * c  # qkv (3C) read + out (C) written, fp32
        row = {"grid": grid, "tokens": grid * grid, "load_1m": load}
        for kind, flops_kind in (("elfatt", "elfatt"), ("sdpa", "vanilla")):
            ms = statistics.median(times[kind])
            flops = attention_core_flops(flops_kind, 1, grid, grid, c, heads, gh, args.window, args.window)
            row[kind] = {"median_ms": ms, "times_ms": times[kind], "gflop": flops / 1e9, "gflops": flops / ms / 1e6,
                         "gbs": bytes_moved / ms / 1e6, "of_copy_bandwidth": bytes_moved / ms / 1e6 / copy_gbs}
        row["speedup"] = row["sdpa"]["median_ms"] / row["elfatt"]["median_ms"]
        results.append(row)
        rows.append([f"{grid}x{grid}", f"{row['elfatt']['median_ms']:.1f}", f"{row['elfatt']['gflops']:.1f}",
                     f"{row['elfatt']['gbs']:.2f} ({100 * row['elfatt']['of_copy_bandwidth']:.1f}%)",
                     f"{row['sdpa']['median_ms']:.1f}", f"{row['sdpa']['gflops']:.1f}",
                     f"{row['sdpa']['gbs']:.2f}", f"{row['speedup']:.2f}x", f"{load[0]:.0f}-{load[1]:.0f}"])
    print(f"ViT-S layer C={c}, {gh}+{heads - gh} heads, {args.window}x{args.window} windows, fp32, B=1, "
          f"{args.threads} threads; copy bandwidth {copy_gbs:.1f} GB/s")
    print(format_table(["grid", "ELFATT ms", "GFLOP/s", "GB/s (of copy)", "SDPA ms", "SDPA GFLOP/s", "SDPA GB/s",
                        "ELFATT speedup", "load 1m"], rows))
    print(f"first call: {first_call}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "eager_op_cpu", "torch": torch.__version__, "threads": args.threads,
              "settings": vars(args), "copy_gbs": copy_gbs, "first_call": first_call, "results": results}
    atomic_write_text(out / "eager_op_cpu.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'eager_op_cpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
