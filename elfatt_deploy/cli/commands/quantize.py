"""``elfatt-deploy quantize``: an exported ONNX file -> explicit Q/DQ INT8, calibrated on a folder of images."""

from __future__ import annotations

from ... import jsonio

NAME = "quantize"
HELP = ("INT8 post-training quantization: explicit Q/DQ on MatMul/Gemm/Conv, calibrated on your images "
        "(the file still runs in ONNX Runtime; `build` makes a strongly typed INT8 engine of it)")


def add_arguments(parser) -> None:
    parser.add_argument("onnx", help="an fp32 or fp16 export from `elfatt-deploy export` (not --plugin-only)")
    parser.add_argument("-o", "--output", required=True, help="quantized .onnx to write (atomically)")
    parser.add_argument("--calib", required=True, metavar="DIR",
                        help="calibration images: DIR/<class>/*.png (ImageFolder) or DIR/*.png")
    parser.add_argument("--calib-samples", type=int, metavar="N",
                        help="images to calibrate on, spread evenly over the folder (default: all, at most 512); "
                             "an error when the folder has fewer")
    parser.add_argument("--method", choices=("max", "entropy", "percentile"), default="max",
                        help="activation range: max (min/max, default), entropy (KL divergence), percentile")
    parser.add_argument("--percentile", type=float, default=None, help="for --method percentile (default 99.999)")
    parser.add_argument("--reduce-range", action="store_true",
                        help="7-bit weights, for x86 CPUs without VNNI (ONNX Runtime / OpenVINO int8 kernels there "
                             "saturate 16-bit pair sums; docs/quantization.md); not needed for TensorRT")
    parser.add_argument("--input-shape", help="N x 3 x H x W the images are resized to (default: the file's static "
                                              "shape, else its traced shape)")
    parser.add_argument("--exclude", default="", metavar="NODES",
                        help="comma-separated MatMul/Gemm/Conv node names to keep in float, named after their "
                             "modules: /head/Gemm,/blocks.0/attn/qkv/MatMul")
    parser.add_argument("--report", help="write a JSON summary here (atomically)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import time

    from ...atomic import atomic_write_text, check_output_path, check_outputs_spare_inputs
    from ...quantize.qdq import quantize_onnx

    if args.report:
        check_output_path(args.report, what="--report", example_name="report.json")
    check_outputs_spare_inputs({"--report": args.report}, {"the ONNX file": args.onnx})  # (-o: quantize_onnx)
    check_outputs_spare_inputs({"-o": args.output, "--report": args.report}, {})
    if args.percentile is not None and args.method != "percentile":
        from ...errors import InputError

        raise InputError(f"--percentile {args.percentile} applies with --method percentile only (this run uses "
                         f"--method {args.method}); add --method percentile, or drop it")
    percentile = 99.999 if args.percentile is None else args.percentile
    start = time.perf_counter()
    exclude = [e.strip() for e in args.exclude.split(",") if e.strip()]
    if args.exclude.strip() and not exclude:  # ',' or ' , ': the user meant to name nodes and named none
        from ...errors import InputError

        raise InputError(f"--exclude {args.exclude!r} names no node; give comma-separated node names, "
                         "e.g. --exclude /head/Gemm, or drop it")
    result = quantize_onnx(args.onnx, args.output, args.calib, samples=args.calib_samples, method=args.method,
                           input_shape=args.input_shape, exclude=exclude, percentile=percentile, reduce_range=args.reduce_range,
                           progress=not args.no_progress, verbose=bool(getattr(args, "verbose", False)))
    elapsed = time.perf_counter() - start
    cal = result.calibration
    print(f"wrote {result.output} in {elapsed:.1f} s: int8-qdq over {result.base_precision}, opset {result.opset}, "
          f"{len(result.quantized)} MatMul/Gemm/Conv nodes quantized (INT8 per-channel weights{', 7-bit (--reduce-range)' if args.reduce_range else ''}, "
          "per-tensor activations)")
    print(f"calibration: {cal['images']} images at {cal['input_size']} from {cal['folder']} ({args.method}), "
          f"{cal['skipped']} skipped, sha256 {cal['sha256'][:16]}...")
    if result.unquantized:
        print("left in float: " + ", ".join(f"{n} ({why})" for n, why in result.unquantized.items()))
    print(f"not quantized (by design, {result.base_precision} as exported): "
          + ", ".join(f"{k} x{v}" for k, v in result.float_ops.items()))
    if args.report:
        atomic_write_text(args.report, jsonio.dumps(result.to_dict(), indent=2) + "\n")
        print(f"report: {args.report}")
    return 0
