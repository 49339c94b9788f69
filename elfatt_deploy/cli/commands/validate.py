"""``elfatt-deploy validate``: a deployed model against PyTorch on the same random inputs."""

from __future__ import annotations

NAME = "validate"
HELP = ("compare an exported model (ONNX Runtime, OpenVINO) or engine (TensorRT) with PyTorch; exit 1 when a tolerance "
        "is exceeded")

DEFAULT_SHAPES = "1x3x224x224,2x3x200x264"


def add_arguments(parser) -> None:
    parser.add_argument("onnx", nargs="?", help="the exported .onnx file (its metadata gives model and precision)")
    parser.add_argument("--model", help="model name (default: from the ONNX metadata)")
    parser.add_argument("--checkpoint", help="the weights the file was exported with (default: the random weights "
                                             "of `export` without a checkpoint, seed --seed)")
    from ...runtime.backends import BACKENDS
    from ...runtime.openvino_runner import INFERENCE_PRECISIONS

    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
    parser.add_argument("--providers", help="ONNX Runtime execution providers in priority order, e.g. cuda,cpu "
                                            "(default cpu)")
    parser.add_argument("--device", help="OpenVINO device for --backend openvino: CPU (default), GPU, NPU, AUTO")
    parser.add_argument("--inference-precision", choices=INFERENCE_PRECISIONS, default="f32",
                        help="OpenVINO's INFERENCE_PRECISION_HINT for --backend openvino (default f32; OpenVINO "
                             "would otherwise compute in bf16 on CPUs with bf16 units and in f16 on GPUs)")
    parser.add_argument("--engine", help="TensorRT engine file (for --backend tensorrt)")
    parser.add_argument("--plugin", help="ElfattAttention TensorRT plugin library (for --backend tensorrt; "
                                         "found automatically when omitted)")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES,
                        help=f"input shapes N x 3 x H x W, comma-separated (default {DEFAULT_SHAPES})")
    parser.add_argument("--samples", type=int, default=2, help="random inputs per shape (default 2)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the inputs, and of the random weights when "
                                                               "no checkpoint is given (default 0)")
    parser.add_argument("--images", metavar="DIR", help="compare on these images instead of random inputs: "
                        "DIR/<class>/*.png (ImageFolder: accuracy too) or DIR/*.png; top-1 agreement, accuracy, errors")
    parser.add_argument("--input-shape", help="with --images: N x 3 x H x W the images are resized to and batched by "
                                              "(default: the file's static shape, else its traced shape, batch 16)")
    parser.add_argument("--min-agreement", type=float, default=None,
                        help="with --images: minimum top-1 agreement with PyTorch (default 0.99)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8-qdq"),
                        help="precision of the deployed model, for the default tolerance (default: ONNX metadata)")
    parser.add_argument("--rtol-l2", type=float, help="max relative L2 error (default: onnxruntime fp32 1e-5, "
                                                      "fp16 5e-3; openvino fp32 1e-5, fp16 2e-3; tensorrt fp32 "
                                                      "1e-4, fp16 5e-3)")
    parser.add_argument("--report", help="write a JSON report here (atomically)")
    parser.add_argument("--verbose", action="store_true", help="show Polygraphy's per-inference log")


def _metadata(args) -> dict:
    import json

    from ...export.metadata import read_metadata

    if not args.onnx:
        return {}
    from pathlib import Path

    path = Path(args.onnx)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {args.onnx!r} does not exist; export one with `elfatt-deploy export`")
    try:
        meta = read_metadata(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ValueError(f"{args.onnx!r} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if "model_config" in meta:
        meta["model_config"] = json.loads(meta["model_config"])
    return meta


def run(args) -> int:
    from ...atomic import check_output_path
    from ...export.model_loading import DEFAULT_SEED, build_model
    from ...models.registry import get_entry
    from ...runtime.backends import make_runner
    from ...runtime.torch_runner import TorchRunner
    from ...shapes import check_image_shape, parse_shape_list
    from ...validation.comparator import run_parity
    from ...validation.report import format_parity_tables, write_report
    from ...validation.tolerances import default_rtol_l2

    if args.backend in ("onnxruntime", "openvino") and not args.onnx:
        raise ValueError("give the .onnx file to validate (elfatt-deploy validate model.onnx ...)")
    if args.device and args.backend != "openvino":
        raise ValueError(f"--device {args.device} is for --backend openvino; --backend {args.backend} takes "
                         + ("--providers" if args.backend == "onnxruntime" else "the engine's GPU"))
    if args.backend == "tensorrt" and not args.engine:
        raise ValueError("--backend tensorrt needs --engine PATH (build one with `elfatt-deploy build`)")
    if args.samples < 1:
        raise ValueError(f"--samples {args.samples} must be >= 1")
    if args.report:
        check_output_path(args.report, what="--report")
    meta = _metadata(args)
    name = args.model or meta.get("model_name")
    if not name:
        raise ValueError("the ONNX file has no elfatt metadata naming its model; pass --model NAME")
    if meta.get("model_name") and args.model and args.model != meta["model_name"]:
        raise ValueError(f"--model {args.model} differs from the model the file was exported from "
                         f"({meta['model_name']}); drop --model or validate the right file")
    get_entry(name)
    precision = args.precision or meta.get("precision") or "fp32"
    rtol = default_rtol_l2(args.backend, precision, args.rtol_l2)
    shapes = [check_image_shape(s, what="--shapes entry") for s in parse_shape_list(args.shapes, rank=4, what="--shapes")]
    seed = DEFAULT_SEED if args.seed is None else args.seed
    config = meta.get("model_config") if name == meta.get("model_name") else None
    model = build_model(name, checkpoint=args.checkpoint, config=config, seed=seed)
    input_name = meta.get("input_name", "image")
    output_name = meta.get("output_name", "logits")
    reference = TorchRunner(model, [input_name], [output_name], name="pytorch")
    providers = [p for p in (args.providers or "").split(",") if p.strip()] or None
    backend = make_runner(args.backend, onnx_path=args.onnx, engine_path=args.engine, plugin=args.plugin,
                          providers=providers, device=args.device, inference_precision=args.inference_precision)
    weights = args.checkpoint or f"random weights, seed {seed}"
    if args.images:
        return _run_images(args, reference, backend, meta, name, precision, rtol, input_name, output_name, providers,
                           weights)
    result = run_parity(reference, backend, input_name=input_name, shapes=shapes, samples=args.samples, seed=seed,
                        rtol_l2=rtol, verbose=args.verbose)
    print(f"{name} ({precision}) on {args.backend} vs PyTorch fp32; weights: {weights}")
    print(format_parity_tables(result))
    verdict = "PASS" if result.passed else "FAIL"
    print(f"{verdict}: worst relative L2 error "
          + ", ".join(f"{o} {result.worst(o).metrics.rel_l2_error:.3e}" for o in result.outputs())
          + f" (tolerance {rtol:.1e})")
    if args.report:
        write_report(args.report, result, {
            "onnx": args.onnx, "engine": args.engine, "plugin": args.plugin, "backend": args.backend,
            "providers": providers, "device": getattr(backend, "info", {}).get("device"),
            "openvino": getattr(backend, "info", None), "model": name, "checkpoint": args.checkpoint, "precision": precision,
            "shapes": [list(s) for s in shapes], "samples": args.samples, "seed": seed,
        })
        print(f"report: {args.report}")
    return 0 if result.passed else 1


def _run_images(args, reference, backend, meta, name, precision, rtol, input_name, output_name, providers,
                weights) -> int:
    """``--images DIR``: both sides on the folder's images (validation/images.py)."""
    import json

    from ...atomic import atomic_write_text
    from ...preprocess import normalization_from_props
    from ...validation.images import DEFAULT_MIN_AGREEMENT, format_image_report, run_image_parity
    from ...validation.report import environment

    batch, height, width = _image_batch_shape(args, meta)
    min_agreement = DEFAULT_MIN_AGREEMENT if args.min_agreement is None else args.min_agreement
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"--min-agreement {min_agreement} must be in [0, 1], e.g. 0.99")
    result = run_image_parity(reference, backend, input_name=input_name, output_name=output_name, images=args.images,
                              size=(height, width), normalization=normalization_from_props(meta),
                              rtol_l2=rtol, min_agreement=min_agreement, batch=batch)
    print(f"{name} ({precision}) on {args.backend} vs PyTorch fp32; weights: {weights}")
    print(format_image_report(result))
    print(f"{'PASS' if result.passed else 'FAIL'}: top-1 agreement {result.agreement:.4f} (min {min_agreement:.2f}), "
          f"relative L2 error {result.metrics.rel_l2_error:.3e} (tolerance {rtol:.1e})")
    if args.report:
        report = {"passed": result.passed, "settings": {
            "onnx": args.onnx, "engine": args.engine, "backend": args.backend, "providers": providers, "model": name,
            "checkpoint": args.checkpoint, "precision": precision, "images": args.images, "batch": batch},
            "environment": environment(), **result.to_dict()}
        atomic_write_text(args.report, json.dumps(report, indent=2) + "\n")
        print(f"report: {args.report}")
    return 0 if result.passed else 1


def _image_batch_shape(args, meta) -> tuple[int, int, int]:
    """(batch, height, width) for --images: --input-shape, else the file's static dims or traced shape."""
    from ...shapes import check_image_shape, parse_shape

    if args.input_shape:
        n, _, h, w = check_image_shape(parse_shape(args.input_shape, rank=4, what="--input-shape"),
                                       what="--input-shape")
        return n, h, w
    traced = [int(d) for d in meta["input_shape"].split("x")] if meta.get("input_shape") else [1, 3, 224, 224]
    dynamic = str(meta.get("dynamic", "true")).lower() == "true"
    return (16 if dynamic else traced[0]), traced[2], traced[3]
