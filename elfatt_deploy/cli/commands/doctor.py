"""``elfatt-deploy doctor``: what this machine has for each backend, and whether the plugin really loads."""

from __future__ import annotations

import sys

from ... import jsonio

NAME = "doctor"
HELP = ("report CUDA, TensorRT, ONNX Runtime, OpenVINO, PyTorch, GPU and plugin status, and which backends are ready; "
        "with --backend, exit 3 when that backend lacks something")

BACKEND_NEEDS = {
    "tensorrt": ("TensorRT", "GPU", "plugin"),
    "onnxruntime": ("ONNX Runtime", "ONNX"),
    "openvino": ("OpenVINO", "ONNX"),
    "torch": ("PyTorch",),
}


def add_arguments(parser) -> None:
    parser.add_argument("--backend", choices=sorted(BACKEND_NEEDS), default=None,
                        help="the backend you mean to use: exit 3 when it lacks something (default: report every "
                             "backend and exit 0; --plugin implies tensorrt)")
    parser.add_argument("--plugin", help="plugin library to check (default search as in `build`; implies --backend "
                                         "tensorrt)")
    parser.add_argument("--engine", help="also check an engine: its sidecar and whether it can run here (with "
                                         "--backend tensorrt, a part of the verdict)")
    parser.add_argument("--no-plugin", action="store_true", help="tensorrt: plugin-free engines only; the plugin is not needed")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON (- : on stdout alone, the table on stderr)")


def _version(module_name):
    import importlib

    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or OSError from a broken native library
        return None, f"not installed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return module, str(getattr(module, "__version__", "unknown"))


def _cuda_driver_version():
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return f"{version.value // 1000}.{(version.value % 1000) // 10}"


def collect(args) -> list[dict]:
    """Rows of {component, status (ok/missing/warn/info), detail}."""
    import platform
    import sys

    from ...engine.archs import arch_verdict, library_archs
    from ...engine.environment import gpu_info, jetson_release

    rows = []

    def add(component, status, detail):
        detail = str(detail)
        row = {"component": component, "status": status, "detail": detail}
        if "\n" in detail or len(detail) > 160:  # long messages go below the table, in full
            row["detail"] = detail.splitlines()[0][:100] + " ... (in full below)"
            row["more"] = detail
        rows.append(row)

    add("Python", "ok", f"{platform.python_version()} ({sys.executable})")
    from ..._version import OP_VERSION, __version__

    add("elfatt-deploy", "ok", f"{__version__} (op contract v{OP_VERSION})")
    driver = _cuda_driver_version()
    add("CUDA driver", "ok" if driver else "missing", f"CUDA {driver}" if driver else "not installed (no libcuda.so.1)")
    torch, torch_version = _version("torch")
    if torch is None:
        add("PyTorch", "missing", torch_version)
    else:
        cuda = torch.version.cuda or "none (CPU build)"
        add("PyTorch", "ok", f"{torch_version}, CUDA runtime {cuda}, cuda available: {torch.cuda.is_available()}")
    gpu = gpu_info()
    add("GPU", "ok" if gpu else "missing",
        f"{gpu['name']}, compute capability {gpu['compute_capability']} (sm_{gpu['compute_capability'].replace('.', '')})"
        if gpu else "no CUDA GPU visible")
    jetson = jetson_release()
    if jetson:
        add("Jetson", "info", f"L4T {jetson['l4t_release']}, JetPack {jetson['jetpack']}")
    trt, trt_version = _version("tensorrt")
    add("TensorRT", "ok" if trt else "missing", trt_version)
    ort, ort_version = _version("onnxruntime")
    if ort is None:
        add("ONNX Runtime", "missing", ort_version)
    else:
        add("ONNX Runtime", "ok", f"{ort_version}, providers: {', '.join(ort.get_available_providers())}")
    _openvino_row(add)
    _cpu_row(add)
    for label, name in (("ONNX", "onnx"), ("Polygraphy", "polygraphy")):
        module, version = _version(name)
        add(label, "ok" if module else "missing", version)

    _plugin_rows(args, add, trt, gpu, library_archs, arch_verdict)
    if getattr(args, "engine", None):
        from ..._version import OP_VERSION as plugin_version

        loaded = any(r["component"] == "plugin" and r["status"] == "ok" for r in rows)
        _engine_rows(args, add, plugin_version if loaded else None)
    return rows


def _probe_library(path) -> dict:
    """Loads one plugin library in a fresh Python process (registration is process-wide, and the two libraries
    register the same creator, so each is checked on its own); returns load_plugin's result or {"error": ...}."""
    import json
    import subprocess
    import sys

    code = ("import json, sys\n"
            "from elfatt_deploy.engine.plugin import load_plugin\n"
            "from elfatt_deploy.engine.trt_api import get_logger\n"
            "import tensorrt as trt\n"
            "runtime = trt.Runtime(get_logger(trt))  # hands TensorRT the logger before loading\n"
            "try:\n"
            "    print(json.dumps(load_plugin(sys.argv[1])))\n"
            "except Exception as exc:\n"
            "    print(json.dumps({'error': f'{type(exc).__name__}: {exc}'}))\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"could not run the load check ({exc})"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"the load check exited with {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"}
    return json.loads(lines[-1])


def _plugin_rows(args, add, trt, gpu, library_archs, arch_verdict):
    from pathlib import Path

    from ...engine.plugin import (
        PLUGIN_LIBRARY_NAME,
        VC_LIBRARY_NAME,
        find_plugin_libraries,
        library_info,
    )

    if args.no_plugin:
        add("plugin", "info", "not checked (--no-plugin)")
        return
    try:
        candidates = find_plugin_libraries(args.plugin)
    except FileNotFoundError as exc:
        add("plugin", "missing", exc)
        return
    first = Path(candidates[0])
    # the pair: the library the search found, and the other build beside it
    other_name = VC_LIBRARY_NAME if first.name != VC_LIBRARY_NAME else PLUGIN_LIBRARY_NAME
    pair = [(first, "plugin")]
    if (first.parent / other_name).is_file():
        pair.append((first.parent / other_name, "plugin (other build)"))
    else:
        add("plugin (other build)", "info", f"no {other_name} beside {first} (cmake builds both)")
    for path, component in pair:
        info = library_info(path)
        what = (f"{info.style} build, TensorRT {info.tensorrt_major or '?'}, {info.machine or '?'}" if info.style
                else info.error)
        status_if_bad = "missing" if component == "plugin" else "warn"
        if trt is None:
            add(component, status_if_bad if component == "plugin" else "info",
                f"found {path} ({what}), but not loaded: TensorRT is not installed")
            continue
        result = _probe_library(path)
        if "error" in result:
            add(component, status_if_bad, f"{path} ({what}): {result['error']}")
        else:
            add(component, "ok", f"{result['path']} ({what}): creator ElfattAttention v{result['version']} registered "
                                 f"({result['how']}) in a fresh process")
    if len(candidates) > 1:
        add("plugin candidates", "info", "also found, tried in this order if the first fails: "
            + ", ".join(str(c) for c in candidates[1:]))
    archs = library_archs(first)
    if "error" in archs:
        add("plugin archs", "warn", archs["error"])
    elif gpu is None:
        add("plugin archs", "info", f"SASS {archs['sass']}, PTX {archs['ptx']} (no GPU to compare with)")
    else:
        ok, message = arch_verdict(set(archs["sass"]), set(archs["ptx"]), gpu["compute_capability"])
        add("plugin archs", "ok" if ok else "missing", message)


def _openvino_row(add) -> None:
    """OpenVINO's version and the devices it finds (what `--backend openvino --device` accepts)."""
    from ...runtime.openvino_runner import INSTALL_HINT

    ov, version = _version("openvino")
    if ov is None:
        add("OpenVINO", "missing", f"{version}; install with {INSTALL_HINT}")
        return
    try:
        devices = ", ".join(ov.Core().available_devices) or "none"
    except Exception as exc:  # a broken plugin library
        add("OpenVINO", "warn", f"{version}, but its devices cannot be listed ({type(exc).__name__}: {exc})")
        return
    add("OpenVINO", "ok", f"{version}, devices: {devices}")


def _cpu_row(add) -> None:
    """The CPU, and whether its int8 kernels in ONNX Runtime / OpenVINO saturate (x86 without VNNI)."""
    import platform

    from ...validation import tolerances

    name = tolerances.cpu_model() or platform.processor() or platform.machine()
    if tolerances.x86_without_vnni():
        add("CPU", "warn", f"{name}: x86 without VNNI (no avx512_vnni / avx_vnni / amx_int8 flag): ONNX Runtime's and "
            f"OpenVINO's int8 kernels saturate 16-bit pair sums here, so int8-qdq files with 8-bit weights drift "
            f"from the Q/DQ semantics on the CPU backends (validate allows "
            f"{tolerances.CPU_INT8_WITHOUT_VNNI_RTOL_L2:.1e} for them and says why); for CPU deployment quantize "
            f"with --reduce-range (7-bit weights); TensorRT engines are not affected")
    else:
        add("CPU", "ok", f"{name} ({platform.machine()})")


def _missing(backend: str, args, status: dict) -> list[str]:
    needs = [n for n in BACKEND_NEEDS[backend] if not (n == "plugin" and args.no_plugin)]
    if backend == "tensorrt" and not args.no_plugin:
        needs.append("plugin archs")
    if backend == "tensorrt" and getattr(args, "engine", None):
        needs += ["engine", "engine compat"]
    return [n for n in needs if status.get(n) == "missing"]


def _engine_rows(args, add, plugin_version):
    from ...engine.compat import check_compatibility
    from ...engine.engine_file import EngineFileError, load_engine, sidecar_path
    from ...engine.environment import current_environment

    try:
        engine = load_engine(args.engine)
    except (FileNotFoundError, EngineFileError) as exc:
        add("engine", "missing", exc)
        return
    kind = {"sidecar": f"TensorRT plan with sidecar {sidecar_path(engine.path).name} (plan hash matches)",
            "none": "TensorRT plan without a sidecar", "legacy header": "old elfatt-deploy header format"}[engine.source]
    add("engine", "ok" if engine.checkable else "warn",
        f"{engine.path}: {kind}" + ("".join(f"; {w}" for w in engine.warnings) if engine.warnings else ""))
    if not engine.checkable:
        add("engine compat", "warn", "not checked: no metadata")
        return
    meta = engine.metadata
    issues = check_compatibility(meta, current_environment(plugin_version))
    summary = (f"built with TensorRT {meta.get('tensorrt_version')} for {(meta.get('gpu') or {}).get('name', '?')} "
               f"(sm_{str((meta.get('gpu') or {}).get('compute_capability', '?')).replace('.', '')}), precision "
               f"{meta.get('precision')}, plugin {'used' if (meta.get('plugin') or {}).get('used') else 'not used'}")
    errors = [i for i in issues if i.severity == "error"]
    detail = summary + "".join(f"; {i.severity}: {i.message}" for i in issues)
    add("engine compat", "missing" if errors else ("warn" if issues else "ok"), detail)


def run(args) -> int:
    """``--json -``: the JSON report on stdout alone (the table goes to stderr), for ``| jq`` and the like."""
    import contextlib

    if args.json == "-":
        args.json = None
        with contextlib.redirect_stdout(sys.stderr):
            code, report = _run(args)
        sys.stdout.write(jsonio.dumps(report, indent=2) + "\n")
        sys.stdout.flush()
        return code
    return _run(args)[0]


def _run(args):
    from pathlib import Path

    from ...atomic import atomic_write_text, check_output_path, check_outputs_spare_inputs
    from ...engine.engine_file import sidecar_path
    from ...errors import EXIT_ENVIRONMENT, EXIT_OK
    from ..table import format_table

    if args.json:
        check_output_path(args.json, what="--json", example_name="doctor.json")
        engine_given = getattr(args, "engine", None)
        check_outputs_spare_inputs({"--json": args.json}, {
            "the engine": engine_given, "the engine's sidecar": sidecar_path(engine_given) if engine_given else None,
            "the plugin": getattr(args, "plugin", None)})
    if args.no_plugin and args.plugin:
        from ...errors import InputError

        raise InputError("--plugin and --no-plugin contradict each other: give one of them (--no-plugin checks "
                         "what plugin-free engines need)")
    engine = getattr(args, "engine", None)
    if engine:
        # a missing file, an ONNX file, a checkpoint, the plugin library, text: bad input (exit 2), not a row
        from ...engine.not_a_plan import check_engine_argument

        check_engine_argument(engine)
    asked = args.backend or ("tensorrt" if args.plugin else None)
    rows = collect(args)
    print(format_table(["component", "status", "detail"], [[r["component"], r["status"], r["detail"]] for r in rows]))
    for row in rows:
        if row.get("more"):
            print(f"\n{row['component']}: {row['more']}")
    status = {r["component"]: r["status"] for r in rows}
    backends = {b: _missing(b, args, status) for b in sorted(BACKEND_NEEDS)}
    print()
    for backend in ([asked] if asked else sorted(backends)):
        missing = backends[backend]
        if missing:
            print(f"backend {backend}: NOT ready; missing: {', '.join(missing)} (see the rows above)")
        else:
            print(f"backend {backend}: ready")
    missing = backends[asked] if asked else []
    report = {"backend": asked, "ready": not missing, "missing": missing,
              "backends": {b: {"ready": not m, "missing": m} for b, m in backends.items()}, "checks": rows}
    if args.json:
        atomic_write_text(args.json, jsonio.dumps(report, indent=2) + "\n")
    if asked and backends[asked]:
        return EXIT_ENVIRONMENT, report
    return EXIT_OK, report
