#!/usr/bin/env python3
"""ELFATT vs vanilla attention, exported to ONNX, in ONNX Runtime on CPU, beside the FLOP-ideal speedup.

    python bench/onnxruntime_cpu.py                                  # ViT-S 224/512/1024, CSWin-T 224/512
    python bench/onnxruntime_cpu.py --cases elfatt_vit_tiny:224,512 --repeats 3 --out out/bench
    python bench/onnxruntime_cpu.py --before-rev 3cc31c1 --profile    # + an older function body, + ORT profiles

For each model the registry's ELFATT model and its vanilla twin (same parameters,
``create_model(name, attention="vanilla")``) are exported once each as dynamic fp32
files, so one file serves every size. With ``--before-rev REV`` a third file runs
too: the same ELFATT export with the function body of ``elfatt_deploy/export/
onnx_function.py`` at git revision REV (main's body before a change), so the old and
the new body are measured side by side in one run.

Each (file, size) runs in its own subprocess: one warm-up run, then ``--repeats``
timed runs; the variants of a size take turns, ``--rounds`` times (interleaved, so
a change in machine load hits all of them alike, and in an order that rotates each
round, so that none always runs in the same place), and the latency is the median of
all timed runs. Peak memory is the growth of the worker's peak resident set size
(VmHWM) from just before the session is created to after the last run. The 1-minute
load average is recorded before and after every worker. ``--profile`` adds one
profiled worker per (file, size) (ORT's profiler, 2 runs after the warm-up) and
summarises kernel time by op type. The FLOP-ideal speedup (vanilla FLOPs / ELFATT
FLOPs) comes from ``elfatt_deploy.flops``. Prints tables and writes
onnxruntime_cpu.json (results, machine, versions, settings) and onnxruntime_cpu.png
(when matplotlib is installed) to ``--out``, atomically.
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

DEFAULT_CASES = "elfatt_vit_small:224,512,1024;elfatt_cswin_tiny:224,512"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def worker(onnx_path: str, size: int, repeats: int, threads: int, seed: int, profile_dir: str = "") -> dict:
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
    if profile_dir:
        profiled = ort.SessionOptions()
        profiled.intra_op_num_threads = threads
        profiled.inter_op_num_threads = 1
        profiled.enable_profiling = True
        profiled.profile_file_prefix = str(Path(profile_dir) / "ort_profile")
        session = ort.InferenceSession(onnx_path, profiled, providers=["CPUExecutionProvider"])
        session.run(None, {"image": image})  # warm-up, excluded below
        for _ in range(repeats):
            session.run(None, {"image": image})
        return {"profile": _summarise_profile(session.end_profiling(), repeats)}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"image": image})
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times,
            "peak_mem_mib": peak_rss_mib() - before}


def _summarise_profile(path: str, runs: int) -> dict:
    """Kernel time by op type per run (ms), the node count, and the share of the whole, from an ORT profile."""
    events = json.loads(Path(path).read_text())
    Path(path).unlink()
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    first_timed = run_starts[1] if len(run_starts) > runs else 0  # skip the warm-up run
    by_type: dict = {}
    nodes = set()
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < first_timed:
            continue
        op = e.get("args", {}).get("op_name", "?")
        by_type[op] = by_type.get(op, 0.0) + e["dur"] / 1e3 / runs
        nodes.add(e["name"])
    total = sum(by_type.values())
    ordered = sorted(by_type.items(), key=lambda kv: -kv[1])
    return {"kernel_ms": total, "nodes": len(nodes),
            "by_op_type": [{"op_type": op, "ms": ms, "share": ms / total if total else 0.0} for op, ms in ordered]}


def _run_worker(onnx_path: Path, size: int, args, profile_dir: str = "") -> dict:
    cmd = [sys.executable, __file__, "--worker", str(onnx_path), "--cases", f"x:{size}", "--repeats",
           str(2 if profile_dir else args.repeats), "--threads", str(args.threads), "--seed", str(args.seed)]
    if profile_dir:
        cmd += ["--profile-dir", profile_dir]
    load_before = _load()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {onnx_path.name} at {size}: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_1m"] = [load_before, _load()]
    return result


def _environment(args) -> dict:
    import onnx
    import onnxruntime
    import torch

    import elfatt_deploy

    return {"machine": platform.machine(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "torch": torch.__version__, "elfatt_deploy": elfatt_deploy.__version__,
            "settings": {"model": getattr(args, "model", None), "cases": getattr(args, "cases", None),
                         "sizes": getattr(args, "sizes", None), "batch": 1, "repeats": args.repeats,
                         "rounds": getattr(args, "rounds", 1), "before_rev": getattr(args, "before_rev", None),
                         "warmup": 1, "intra_op_threads": args.threads, "precision": "fp32",
                         "provider": "CPUExecutionProvider", "graph_optimization": "ORT default (all)",
                         "memory": "peak RSS (VmHWM) growth from session creation to the last run"}}


def _parse_cases(text: str) -> list:
    cases = []
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, sizes = part.partition(":")
        try:
            values = [int(s) for s in sizes.split(",") if s.strip()]
        except ValueError:
            values = []
        if not name.strip() or not values or min(values) < 32:
            raise ValueError(f"--cases part {part!r}: write MODEL:SIZE,SIZE (sizes >= 32), parts joined by ';'")
        cases.append((name.strip(), values))
    return cases


def _old_body_module(rev: str):
    """onnx_function.py as it was at git revision ``rev``, imported under a private name."""
    import importlib.util

    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:elfatt_deploy/export/onnx_function.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="elfatt-body-")) / "old_onnx_function.py"
    path.write_text(source)
    import elfatt_deploy.export  # noqa: F401  (the old module's relative imports resolve in today's package)

    spec = importlib.util.spec_from_file_location(f"elfatt_deploy.export._onnx_function_at_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "elfatt_deploy.export"
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _with_old_body(new_path: Path, old_path: Path, rev: str) -> None:
    """Writes new_path's model with the function body(s) of revision ``rev``: its ``attach_functions`` where it
    has one (one overload per channel layout), else its single ``build_function(opset)``."""
    import onnx

    from elfatt_deploy.export.onnx_function import DOMAIN

    old = _old_body_module(rev)
    model = onnx.load(str(new_path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if hasattr(old, "attach_functions"):
        old.attach_functions(model, opset)
    else:
        keep = [f for f in model.functions if f.domain != DOMAIN]
        del model.functions[:]
        model.functions.extend(keep + [old.build_function(opset)])
        for node in model.graph.node:
            node.overload = ""
    onnx.save(model, str(old_path))


def _flop_ideal(name: str, size: int) -> dict:
    from elfatt_deploy.flops import model_flops
    from elfatt_deploy.models import create_model

    flops = {kind: model_flops(create_model(name, attention=kind), (1, 3, size, size))["total"]
             for kind in ("elfatt", "vanilla")}
    return {"gflops": {k: v / 1e9 for k, v in flops.items()}, "ideal_speedup": flops["vanilla"] / flops["elfatt"]}


def _plot(results: list, path: Path, title: str, variants: list) -> bool:
    sizes = [r["size"] for r in results]
    markers = {"elfatt": "o", "elfatt_before": "^", "vanilla": "s"}
    series = {kind: {"ms": [r[kind]["median_ms"] for r in results], "mib": [r[kind]["peak_mem_mib"] for r in results],
                     "marker": markers[kind]} for kind in variants}
    return plot_latency_memory(sizes, series, path, title)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help="MODEL:SIZE,SIZE;MODEL:SIZE (square inputs)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per worker")
    parser.add_argument("--rounds", type=int, default=2, help="workers per (file, size), interleaved")
    parser.add_argument("--before-rev", default="", help="git revision whose function body runs as 'elfatt_before'")
    parser.add_argument("--profile", action="store_true", help="add one ORT-profiled worker per (file, size)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per worker subprocess")
    parser.add_argument("--out", default="out/bench", help="directory for the JSON and PNG")
    parser.add_argument("--worker", metavar="ONNX", help=argparse.SUPPRESS)
    parser.add_argument("--profile-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        cases = _parse_cases(args.cases)
    except ValueError as exc:
        parser.error(str(exc))
    if args.worker:
        print(json.dumps(worker(args.worker, cases[0][1][0], args.repeats, args.threads, args.seed, args.profile_dir)))
        return 0
    if args.repeats < 1 or args.rounds < 1:
        parser.error("--repeats and --rounds must be >= 1")

    from elfatt_deploy.atomic import atomic_write_text
    from elfatt_deploy.cli.table import format_table
    from elfatt_deploy.export import export_onnx
    from elfatt_deploy.export.model_loading import build_model

    variants = ["elfatt"] + (["elfatt_before"] if args.before_rev else []) + ["vanilla"]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report = {"benchmark": "onnxruntime_cpu", "environment": _environment(args), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sizes in cases:
            files = {}
            for kind in ("elfatt", "vanilla"):
                model = build_model(name, config={"attention": kind}, seed=args.seed)
                files[kind] = export_onnx(model, Path(tmp) / f"{name}-{kind}.onnx", (1, 3, sizes[0], sizes[0]))
                print(f"exported {name} ({kind}) -> {files[kind].stat().st_size / 2**20:.0f} MiB", flush=True)
            if args.before_rev:
                files["elfatt_before"] = Path(tmp) / f"{name}-elfatt_before.onnx"
                _with_old_body(files["elfatt"], files["elfatt_before"], args.before_rev)
            results = []
            for size in sizes:
                row = {"size": size, "tokens": (-(-size // 16)) ** 2, **_flop_ideal(name, size)}
                runs = {kind: [] for kind in variants}
                for round_index in range(args.rounds):
                    # the order rotates each round, so that no variant always runs in the same place (two byte-identical
                    # files measured in turn differed by 3-8% by their place on a 2-CPU VM)
                    shift = round_index % len(variants)
                    for kind in variants[shift:] + variants[:shift]:
                        runs[kind].append(_run_worker(files[kind], size, args))
                        print(f"  {name} {size}: {kind} {runs[kind][-1]['median_ms']:.1f} ms "
                              f"(load {runs[kind][-1]['load_1m']})", flush=True)
                for kind in variants:
                    times = [t for r in runs[kind] for t in r["times_ms"]]
                    row[kind] = {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times,
                                 "peak_mem_mib": max(r["peak_mem_mib"] for r in runs[kind]),
                                 "load_1m": [r["load_1m"] for r in runs[kind]]}
                    if args.profile:
                        with tempfile.TemporaryDirectory() as profile_dir:
                            row[kind]["profile"] = _run_worker(files[kind], size, args, profile_dir)["profile"]
                row["speedup"] = row["vanilla"]["median_ms"] / row["elfatt"]["median_ms"]
                row["of_ideal"] = row["speedup"] / row["ideal_speedup"]
                if args.before_rev:
                    row["speedup_before"] = row["vanilla"]["median_ms"] / row["elfatt_before"]["median_ms"]
                row["memory_ratio"] = row["vanilla"]["peak_mem_mib"] / max(row["elfatt"]["peak_mem_mib"], 1e-9)
                results.append(row)
            report["models"][name] = results
            if _plot(results, out_dir / f"onnxruntime_cpu-{name}.png", f"{name}: ELFATT vs vanilla, ONNX Runtime CPU",
                     variants):
                print(f"wrote {out_dir / f'onnxruntime_cpu-{name}.png'}")
    report["wall_s"] = time.time() - started

    env = report["environment"]
    print(f"\nONNX Runtime {env['onnxruntime']} CPU ({env['cpu']}, {args.threads} threads), batch 1, fp32")
    headers = ["model", "input", "ELFATT ms"] + (["before ms"] if args.before_rev else []) + [
        "vanilla ms", "speedup"] + (["before"] if args.before_rev else []) + [
        "FLOP ideal", "of ideal", "ELFATT MiB", "vanilla MiB", "load 1m"]
    rows = []
    for name, results in report["models"].items():
        for r in results:
            loads = [x for kind in variants for pair in r[kind]["load_1m"] for x in pair]
            rows.append([name, f"{r['size']}x{r['size']}", f"{r['elfatt']['median_ms']:.1f}"]
                        + ([f"{r['elfatt_before']['median_ms']:.1f}"] if args.before_rev else [])
                        + [f"{r['vanilla']['median_ms']:.1f}", f"{r['speedup']:.2f}x"]
                        + ([f"{r['speedup_before']:.2f}x"] if args.before_rev else [])
                        + [f"{r['ideal_speedup']:.2f}x", f"{100 * r['of_ideal']:.0f}%",
                           f"{r['elfatt']['peak_mem_mib']:.0f}", f"{r['vanilla']['peak_mem_mib']:.0f}",
                           f"{min(loads):.0f}-{max(loads):.0f}"])
    print(format_table(headers, rows))
    if args.profile:
        for name, results in report["models"].items():
            for r in results:
                for kind in variants:
                    p = r[kind]["profile"]
                    top = ", ".join(f"{t['op_type']} {t['ms']:.1f} ({100 * t['share']:.0f}%)" for t in p["by_op_type"][:6])
                    print(f"profile {name} {r['size']} {kind}: {p['kernel_ms']:.1f} ms kernels, {p['nodes']} nodes: {top}")
    atomic_write_text(out_dir / "onnxruntime_cpu.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_dir / 'onnxruntime_cpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
