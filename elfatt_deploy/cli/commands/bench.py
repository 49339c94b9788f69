"""``elfatt-deploy bench``: latency (p50/p90/p99), throughput and memory of one backend."""

from __future__ import annotations

from ... import jsonio

NAME = "bench"
HELP = "measure latency percentiles, throughput and GPU memory of a model on tensorrt, onnxruntime, openvino or torch"

BACKENDS = ("tensorrt", "onnxruntime", "openvino", "torch")
#: The flags that belong to some backends only (cli/options.check_backend_flags refuses them with another).
BACKEND_FLAGS = {"--providers": ("onnxruntime",), "--device": ("torch", "openvino"),
                 "--inference-precision": ("openvino",), "--engine": ("tensorrt",), "--plugin": ("tensorrt",),
                 "--cuda-graph": ("tensorrt",), "--checkpoint": ("torch",), "--attention": ("torch",),
                 "--dtype": ("torch",), "--onnx": ("onnxruntime", "openvino")}


def add_arguments(parser) -> None:
    from ...runtime.openvino_runner import INFERENCE_PRECISIONS
    from ..options import add_force, add_num_classes, add_progress

    parser.add_argument("--backend", required=True, choices=BACKENDS,
                        help="what runs the model: tensorrt (--engine), onnxruntime (--onnx) or torch (--model)")
    parser.add_argument("--engine", help="engine file (tensorrt backend)")
    parser.add_argument("--onnx", help="ONNX file (onnxruntime and openvino backends)")
    parser.add_argument("--model", help="model name (torch backend; a label for the others)")
    parser.add_argument("--attention", choices=("elfatt", "vanilla"), default=None,
                        help="torch backend: ELFATT attention or its vanilla softmax-attention twin (default elfatt)")
    parser.add_argument("--checkpoint", help="weights for the torch backend")
    add_num_classes(parser)
    parser.add_argument("--input-shape", required=True, help="N x 3 x H x W, e.g. 1x3x224x224")
    parser.add_argument("--iterations", type=int, default=100, help="timed iterations (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up iterations (default 10)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON (atomically)")
    parser.add_argument("--plugin", help="libelfatt_trt_plugin.so (tensorrt backend; default search as in `build`)")
    parser.add_argument("--cuda-graph", action="store_true", help="tensorrt: replay a CUDA graph")
    parser.add_argument("--providers", help="onnxruntime providers, comma-separated (default: CPU)")
    parser.add_argument("--device", default=None, help="torch: cpu, cuda, cuda:N (default cuda when available, else "
                                                       "cpu); openvino: CPU (default), GPU, NPU, AUTO")
    parser.add_argument("--inference-precision", choices=INFERENCE_PRECISIONS, default=None,
                        help="openvino: INFERENCE_PRECISION_HINT (default f32, the file's arithmetic)")
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                        help="torch backend dtype (default float32)")
    add_force(parser)
    add_progress(parser)


#: The most timed or warm-up runs bench takes.
MAX_ITERATIONS = 10_000_000


def _check_args(args):
    from pathlib import Path

    from ...atomic import check_output_path, check_outputs_spare_inputs
    from ...engine.engine_file import sidecar_path
    from ...shapes import check_image_shape, parse_shape
    from ..options import check_backend_flags

    check_backend_flags(args, BACKEND_FLAGS)
    args.attention = args.attention or "elfatt"
    args.dtype = args.dtype or "float32"
    args.inference_precision = args.inference_precision or ("f32" if args.backend == "openvino" else None)
    if args.iterations < 1:
        raise ValueError(f"--iterations {args.iterations} must be >= 1")
    if args.warmup < 0:
        raise ValueError(f"--warmup {args.warmup} must be >= 0")
    for flag, value in (("--iterations", args.iterations), ("--warmup", args.warmup)):
        if value > MAX_ITERATIONS:  # the timings are kept in memory, one float each
            raise ValueError(f"{flag} {value} is more than {MAX_ITERATIONS:,} runs; give fewer (the percentiles settle "
                             "within a few thousand)")
    shape = check_image_shape(parse_shape(args.input_shape, what="--input-shape"))
    needed = {"tensorrt": "engine", "onnxruntime": "onnx", "openvino": "onnx", "torch": "model"}[args.backend]
    if not getattr(args, needed):
        raise ValueError(f"--backend {args.backend} needs --{needed}")
    for flag in ("engine", "checkpoint"):
        value = getattr(args, flag)
        if value and flag in (needed, "checkpoint") and not Path(value).is_file():
            if Path(value).is_dir():
                raise ValueError(f"--{flag} {value} is a directory; give the file in it")
            raise FileNotFoundError(f"--{flag} {value} does not exist")
    if args.backend == "tensorrt":
        from ...engine.not_a_plan import check_engine_argument

        check_engine_argument(args.engine)  # before the TensorRT check: a wrong file is named on any machine
    if args.json:
        check_output_path(args.json, what="--json", example_name="bench.json")
        check_outputs_spare_inputs({"--json": args.json}, {
            "the ONNX file": args.onnx, "the engine": args.engine,
            "the engine's sidecar": sidecar_path(args.engine) if args.engine else None,
            "the checkpoint": args.checkpoint, "the plugin": args.plugin})
    return shape


def _model_label(args):
    """The model the results are labelled with: the file's own (ONNX metadata, engine sidecar) unless --model names
    it too; a --model that names another model is refused (it would label the numbers with the wrong model)."""
    if args.backend == "torch":
        return args.model
    recorded = None
    if args.backend in ("onnxruntime", "openvino"):
        recorded = args._onnx_file.metadata.get("model_name")
    elif args.engine:
        from ...engine.engine_file import engine_record

        recorded = engine_record(args.engine).model_name  # the sidecar alone (the runner reads and checks the plan)
    if args.model and recorded and args.model != recorded:
        source = args.onnx if args.backend != "tensorrt" else args.engine
        raise ValueError(f"--model {args.model} labels the results, but {source} is an export of {recorded}; drop "
                         f"--model (the file's name is used) or give --model {recorded}")
    return args.model or recorded


def _memory_check(args, shape) -> None:
    """Host memory of the torch (CPU) and onnxruntime (CPU) runs; GPU runs are checked by their runtimes."""
    from ...memory import check_memory, estimate_forward
    from ...shapes import format_shape
    from ..options import config_overrides

    if args.backend == "torch":
        device = args.device or "cpu"
        try:
            import torch

            if args.device is None and torch.cuda.is_available():
                device = "cuda"
        except ImportError:
            pass
        if not device.startswith("cpu"):
            return
        dtype_bytes = {"float32": 4, "float16": 2, "bfloat16": 2}[args.dtype]
        estimate = estimate_forward(args.model, shape, config=config_overrides(args), attention=args.attention,
                                    dtype_bytes=dtype_bytes,
                                    what=f"bench of {args.model} ({args.attention}) at {format_shape(shape)}")
    elif args.backend in ("onnxruntime", "openvino") and args._onnx_file.metadata.get("model_name"):
        if "cuda" in (args.providers or "").lower() or "tensorrt" in (args.providers or "").lower():
            return
        if args.backend == "openvino" and (args.device or "CPU").upper() != "CPU":
            return
        meta = args._onnx_file.metadata
        estimate = estimate_forward(meta["model_name"], shape, config=args._onnx_file.model_config(),
                                    what=f"bench of {args.onnx} at {format_shape(shape)}")
    else:
        return
    check_memory(estimate, force=args.force)


def _torch_case(args, shape):
    import torch

    from ...checkpoint import load_checkpoint
    from ...models import create_model
    from ..devices import torch_device

    from ..options import config_overrides

    device = torch_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype)
    model = create_model(args.model, attention=args.attention, **config_overrides(args)).eval()
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    model = model.to(device=device, dtype=dtype)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)

    def fn():
        with torch.inference_mode():
            return model(x)

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return fn, sync, {"device": str(device), "dtype": args.dtype}, (lambda: None)


def _onnxruntime_case(args, shape):
    import numpy as np

    try:
        from ...runtime.backends import make_runner
    except ImportError as exc:
        raise ValueError(f"the onnxruntime backend needs elfatt_deploy.runtime.backends ({exc})") from None
    from polygraphy.datatype import DataType

    from ..options import parse_providers

    providers = parse_providers(args.providers)
    runner = make_runner("onnxruntime", onnx_path=args.onnx, providers=providers)
    runner.activate()
    meta = runner.get_input_metadata(use_numpy_dtypes=False)
    rng = np.random.default_rng(0)
    feed = {}
    for name, (dtype, _) in meta.items():
        feed[name] = rng.standard_normal(shape).astype(DataType.to_dtype(DataType.from_dtype(dtype), "numpy"))
    if len(feed) != 1:
        runner.deactivate()
        raise ValueError(f"{args.onnx} has {len(feed)} inputs; bench feeds one image input")
    return (lambda: runner.infer(feed, check_inputs=False)), None, {"providers": providers or "default"}, runner.deactivate


def _openvino_case(args, shape):
    import numpy as np
    from polygraphy.datatype import DataType

    from ...runtime.backends import make_runner

    runner = make_runner("openvino", onnx_path=args.onnx, device=args.device,
                         inference_precision=args.inference_precision)
    runner.activate()
    try:
        meta = runner.get_input_metadata(use_numpy_dtypes=False)
        if len(meta) != 1:
            raise ValueError(f"{args.onnx} has {len(meta)} inputs; bench feeds one image input")
        (name, (dtype, _)), = meta.items()
        feed = {name: np.random.default_rng(0).standard_normal(shape).astype(DataType.to_dtype(dtype, "numpy"))}
        runner.infer(feed)  # compiles for this shape and checks it before timing
    except BaseException:
        runner.deactivate()
        raise
    info = dict(runner.info, compile_s=max(runner.compile_seconds.values()),
                num_streams=str(runner.compiled_property("NUM_STREAMS", (tuple(shape),))),
                inference_num_threads=str(runner.compiled_property("INFERENCE_NUM_THREADS", (tuple(shape),))))
    return (lambda: runner.infer(feed, check_inputs=False)), None, info, runner.deactivate


def _tensorrt_case(args, shape):
    import torch

    from ...runtime.backends import make_runner

    # make_runner says in a ValueError (a clean CLI error) when TensorRT is missing
    runner = make_runner("tensorrt", engine_path=args.engine, plugin=args.plugin, cuda_graph=args.cuda_graph)
    runner.activate()
    try:
        if len(runner.input_names) != 1:
            raise ValueError(f"{args.engine} has {len(runner.input_names)} inputs; bench feeds one image input")
        name = runner.input_names[0]
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device=runner.device, dtype=runner.dtypes[name])
        feed = {name: x}
        runner.run(feed)  # checks the shape against the profile before timing
    except BaseException:
        runner.deactivate()
        raise
    info = {"tensorrt_version": runner.metadata.get("tensorrt_version"), "precision": runner.metadata.get("precision"),
            "plugin": (runner.metadata.get("plugin") or {}).get("used"), "cuda_graph": runner.cuda_graph}
    return (lambda: runner.run(feed, copy_outputs=False)), torch.cuda.synchronize, info, runner.deactivate


def run(args) -> int:
    import datetime
    import sys

    from ..._version import __version__
    from ...atomic import atomic_write_text
    from ...engine.environment import gpu_info
    from ...runtime.bench import gpu_memory, latency_stats, measure
    from ...runtime.jetson import clock_warning, power_state
    from ...shapes import format_shape
    from ..table import format_table

    shape = _check_args(args)
    if args.backend in ("onnxruntime", "openvino"):
        from ...runtime.onnx_file import inspect_onnx_file

        args._onnx_file = inspect_onnx_file(args.onnx, what="--onnx")
        args._onnx_file.check_runnable_on(args.backend)
        args._onnx_file.check_shape(shape, what="--input-shape")
    args.model = _model_label(args)
    _memory_check(args, shape)
    case = {"torch": _torch_case, "onnxruntime": _onnxruntime_case, "openvino": _openvino_case,
            "tensorrt": _tensorrt_case}[args.backend]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    fn, sync, info, close = case(args, shape)
    jetson = power_state()
    warning = clock_warning(jetson)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        times = measure(fn, iterations=args.iterations, warmup=args.warmup, sync=sync,
                        progress=args.progress is not False, desc=f"bench {args.backend}")
        on_gpu = args.backend in ("torch", "tensorrt") or "cuda" in (args.providers or "").lower()
        memory = gpu_memory(torch) if on_gpu else {}
    finally:
        close()
    stats = latency_stats(times, batch=shape[0])
    result = {
        "backend": args.backend,
        "model": args.model,
        "engine": args.engine,
        "onnx": args.onnx,
        "input_shape": list(shape),
        "warmup": args.warmup,
        "latency": stats.to_dict(),
        "backend_info": info,
        "memory": memory,
        "gpu": gpu_info(),
        "jetson": jetson,
        "toolkit_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    label = args.model or args.engine or args.onnx
    print(format_table(
        ["backend", "model", "input", "p50 ms", "p90 ms", "p99 ms", "mean ms", "img/s"],
        [[args.backend, label, format_shape(shape), f"{stats.p50_ms:.3f}", f"{stats.p90_ms:.3f}", f"{stats.p99_ms:.3f}",
          f"{stats.mean_ms:.3f}", f"{stats.throughput_per_s:.1f}"]],
    ))
    if memory and memory.get("process_used_mb") is not None:
        print(f"GPU memory: {memory['process_used_mb']:.0f} MiB used by this process")
    if memory and memory.get("torch_max_allocated_mb") is not None:
        print(f"GPU memory: {memory['torch_max_allocated_mb']:.1f} MiB peak torch allocations")
    if args.json:
        atomic_write_text(args.json, jsonio.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    return 0
