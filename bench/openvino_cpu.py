#!/usr/bin/env python3
"""ELFATT vs vanilla attention on CPU in OpenVINO and ONNX Runtime, measured side by side in one run.

    python bench/openvino_cpu.py                                  # elfatt_vit_small at 224, 512, 1024
    python bench/openvino_cpu.py --model elfatt_vit_tiny --sizes 224,512 --repeats 3 --out out/bench

Both models come from the registry with the same parameters (``build_model(name)``
and ``attention="vanilla"``, seed 0) and are exported once each as dynamic fp32
files. ONNX Runtime runs the files as exported (ELFATT through its ONNX function);
OpenVINO runs the ``--inline`` form of the ELFATT file (its frontend ignores ONNX
functions) through the toolkit's OpenVinoRunner: INFERENCE_PRECISION_HINT f32,
PERFORMANCE_HINT LATENCY, compiled for the input's static shape. Both get
``--threads`` threads (ORT intra-op, OpenVINO INFERENCE_NUM_THREADS).

For each size, four worker processes (runtime x model) load their session, warm up
once, and then run one inference at a time **in turn** (repeat 1 of each, then
repeat 2 of each, ...), so that load from other jobs on the machine hits all four
alike; the latency is the median of ``--repeats``. The peak memory is each worker's
growth of its peak resident set size (VmHWM) from just before the session is
created to after the last run. The outputs of the two runtimes are compared
(relative L2) as a check that both ran the same model. Prints a table and writes
openvino_cpu.json (every time, machine, versions, settings, load average before
and after) and openvino_cpu.png (with matplotlib) to ``--out``, atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
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

RUNTIMES = ("onnxruntime", "openvino")
KINDS = ("elfatt", "vanilla")


# -- the worker (one runtime, one model, one size; driven over stdin/stdout) ---------------------
def _session(runtime: str, onnx_path: str, threads: int):
    """A function image -> output array, for the runtime; the info the JSON records."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        return (lambda image: session.run(None, {"image": image})[0]), {"threads": threads}
    from elfatt_deploy.runtime.openvino_runner import OpenVinoRunner

    runner = OpenVinoRunner(onnx_path, num_threads=threads, log=lambda message: None)
    runner.activate()
    return (lambda image: runner.infer({"image": image}, check_inputs=False)["logits"]), runner.info


def worker(runtime: str, onnx_path: str, size: int, threads: int, seed: int) -> None:
    import numpy as np

    image = np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)
    before = peak_rss_mib()
    start = time.perf_counter()
    run, info = _session(runtime, onnx_path, threads)
    output = run(image)  # warm-up (OpenVINO compiles for this shape here)
    info = dict(info, setup_s=time.perf_counter() - start)
    print(json.dumps({"ready": True, "info": info}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        output = run(image)
        print(json.dumps({"ms": (time.perf_counter() - start) * 1e3}), flush=True)
    print(json.dumps({"peak_mem_mib": peak_rss_mib() - before, "output": output.reshape(-1).tolist()}), flush=True)


# -- the parent ------------------------------------------------------------------------------------
class Worker:
    def __init__(self, runtime: str, kind: str, onnx_path: Path, size: int, args):
        self.runtime, self.kind, self.timeout = runtime, kind, args.timeout
        cmd = [sys.executable, __file__, "--worker", runtime, str(onnx_path), "--sizes", str(size),
               "--threads", str(args.threads), "--seed", str(args.seed)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.times: list[float] = []

    def _reply(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            stderr = self.proc.stderr.read()[-2000:]
            why = "timed out" if not ready else f"exited with {self.proc.wait()}"
            raise RuntimeError(f"{self.runtime} worker ({self.kind}) {why}: {stderr.strip()}")
        return json.loads(line)

    def ready(self) -> dict:
        return self._reply()["info"]

    def run_once(self) -> None:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        self.times.append(self._reply()["ms"])

    def finish(self) -> dict:
        self.proc.stdin.write("done\n")
        self.proc.stdin.flush()
        result = self._reply()
        self.proc.wait(timeout=self.timeout)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _rel_l2(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def measure_size(files: dict, size: int, args) -> dict:
    """All four (runtime, kind) workers at one size, their repeats interleaved."""
    workers = [Worker(runtime, kind, files[(runtime, kind)], size, args) for kind in KINDS for runtime in RUNTIMES]
    try:
        infos = [w.ready() for w in workers]
        for _ in range(args.repeats):
            for w in workers:
                w.run_once()
        finals = [w.finish() for w in workers]
    finally:
        for w in workers:
            w.kill()
    row: dict = {"size": size, "tokens": (-(-size // 16)) ** 2}  # the models pad to whole 16-pixel patches
    outputs = {}
    for w, info, final in zip(workers, infos, finals):
        row.setdefault(w.runtime, {})[w.kind] = {
            "median_ms": statistics.median(w.times), "min_ms": min(w.times), "times_ms": w.times,
            "peak_mem_mib": final["peak_mem_mib"], "setup_s": info.pop("setup_s"), "info": info}
        outputs[(w.runtime, w.kind)] = final["output"]
    for runtime in RUNTIMES:
        r = row[runtime]
        r["speedup"] = r["vanilla"]["median_ms"] / r["elfatt"]["median_ms"]
        r["memory_ratio"] = r["vanilla"]["peak_mem_mib"] / max(r["elfatt"]["peak_mem_mib"], 1e-9)
    row["openvino_vs_onnxruntime"] = {kind: row["onnxruntime"][kind]["median_ms"] / row["openvino"][kind]["median_ms"]
                                      for kind in KINDS}
    row["output_rel_l2_openvino_vs_onnxruntime"] = {
        kind: _rel_l2(outputs[("openvino", kind)], outputs[("onnxruntime", kind)]) for kind in KINDS}
    return row


def _environment(args) -> dict:
    import onnx
    import onnxruntime
    import openvino
    import torch

    import elfatt_deploy

    return {"machine": platform.machine(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "openvino": openvino.get_version(), "onnx": onnx.__version__,
            "torch": torch.__version__, "elfatt_deploy": elfatt_deploy.__version__,
            "settings": {"model": args.model, "sizes": args.sizes, "batch": 1, "repeats": args.repeats,
                         "warmup": 1, "threads": args.threads, "precision": "fp32", "seed": args.seed,
                         "onnxruntime": "CPUExecutionProvider, default graph optimization, intra-op threads = threads, "
                                        "inter-op 1; the default ONNX file (ELFATT via its ONNX function)",
                         "openvino": "CPU, INFERENCE_PRECISION_HINT f32, PERFORMANCE_HINT LATENCY, INFERENCE_NUM_THREADS "
                                     "= threads, compiled for the static input shape; the --inline ELFATT file",
                         "order": "per size, the four (runtime, model) workers run one inference each in turn",
                         "memory": "peak RSS (VmHWM) growth of each worker from session creation to its last run"}}


def _plot(results: list, path: Path, title: str) -> bool:
    sizes = [r["size"] for r in results]
    series = {f"{runtime} {kind}": {"ms": [r[runtime][kind]["median_ms"] for r in results],
                                    "mib": [r[runtime][kind]["peak_mem_mib"] for r in results],
                                    "style": style, "marker": marker}
              for runtime, style in (("onnxruntime", "-"), ("openvino", "--"))
              for kind, marker in (("elfatt", "o"), ("vanilla", "s"))}
    return plot_latency_memory(sizes, series, path, title)


def _export(args, tmp: Path) -> dict:
    import onnx

    from elfatt_deploy.export import export_onnx
    from elfatt_deploy.export.inline import inline_elfatt_functions
    from elfatt_deploy.export.model_loading import build_model

    files = {}
    for kind in KINDS:
        model = build_model(args.model, config={"attention": kind}, seed=args.seed)
        path = export_onnx(model, tmp / f"{kind}.onnx", (1, 3, 224, 224))
        files[("onnxruntime", kind)] = path
        if kind == "elfatt":  # what `export --inline` writes, without tracing the model again
            inlined = tmp / f"{kind}-inline.onnx"
            inlined.write_bytes(inline_elfatt_functions(onnx.load(str(path))).SerializeToString())
            files[("openvino", kind)] = inlined
        else:
            files[("openvino", kind)] = path  # no elfatt nodes: the same file
        print(f"exported {args.model} ({kind}) -> {path.stat().st_size / 2**20:.0f} MiB", flush=True)
    return files


def _table(results: list) -> str:
    from elfatt_deploy.cli.table import format_table

    headers = ["input", "tokens", "ORT ELFATT ms", "ORT vanilla ms", "ORT speedup", "OV ELFATT ms", "OV vanilla ms",
               "OV speedup", "ORT/OV ELFATT", "ORT/OV vanilla", "ELFATT MiB ORT/OV", "vanilla MiB ORT/OV"]
    rows = []
    for r in results:
        ort, ov = r["onnxruntime"], r["openvino"]
        rows.append([f"{r['size']}x{r['size']}", r["tokens"], f"{ort['elfatt']['median_ms']:.1f}",
                     f"{ort['vanilla']['median_ms']:.1f}", f"{ort['speedup']:.2f}x", f"{ov['elfatt']['median_ms']:.1f}",
                     f"{ov['vanilla']['median_ms']:.1f}", f"{ov['speedup']:.2f}x",
                     f"{r['openvino_vs_onnxruntime']['elfatt']:.2f}x", f"{r['openvino_vs_onnxruntime']['vanilla']:.2f}x",
                     f"{ort['elfatt']['peak_mem_mib']:.0f}/{ov['elfatt']['peak_mem_mib']:.0f}",
                     f"{ort['vanilla']['peak_mem_mib']:.0f}/{ov['vanilla']['peak_mem_mib']:.0f}"])
    return format_table(headers, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="elfatt_vit_small")
    parser.add_argument("--sizes", default="224,512,1024", help="square input sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per (runtime, model, size), interleaved")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of each runtime")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=900, help="seconds a worker may take for one step")
    parser.add_argument("--out", default="out/bench", help="directory for the JSON and PNG")
    parser.add_argument("--worker", nargs=2, metavar=("RUNTIME", "ONNX"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r} must be integers separated by commas, e.g. 224,512,1024")
    if args.worker:
        worker(args.worker[0], args.worker[1], sizes[0], args.threads, args.seed)
        return 0
    if args.repeats < 1 or args.threads < 1 or not sizes or min(sizes) < 32:
        parser.error("--repeats and --threads must be >= 1 and every size >= 32")
    from elfatt_deploy.atomic import atomic_write_text, check_output_path
    from elfatt_deploy.runtime.openvino_runner import import_openvino

    import_openvino()  # says which extra to install before anything is exported
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_output_path(out_dir / "openvino_cpu.json", what="--out")
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        files = _export(args, Path(tmp))
        results = []
        for size in sizes:
            row = measure_size(files, size, args)
            results.append(row)
            print(f"  {size}: " + ", ".join(f"{rt} {k} {row[rt][k]['median_ms']:.1f} ms" for rt in RUNTIMES
                                            for k in KINDS), flush=True)
    env = _environment(args)
    env["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    env["wall_s"] = time.time() - started
    print(f"\n{args.model}, fp32, batch 1, {args.threads} threads, {env['cpu']}: ONNX Runtime {env['onnxruntime']} "
          f"CPU vs OpenVINO {env['openvino'].split('-')[0]} CPU; load average before {load_before[0]:.1f}, after "
          f"{env['load_average']['after'][0]:.1f}; {env['wall_s']:.0f} s")
    print(_table(results))
    worst = max(v for r in results for v in r["output_rel_l2_openvino_vs_onnxruntime"].values())
    print(f"OpenVINO vs ONNX Runtime outputs: worst relative L2 {worst:.1e}")
    report = {"benchmark": "openvino_cpu", "model": args.model, "environment": env, "results": results}
    atomic_write_text(out_dir / "openvino_cpu.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_dir / 'openvino_cpu.json'}")
    if _plot(results, out_dir / "openvino_cpu.png", f"{args.model}: ELFATT vs vanilla, ONNX Runtime and OpenVINO CPU"):
        print(f"wrote {out_dir / 'openvino_cpu.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
