"""``elfatt-deploy deepstream``: a DeepStream Gst-nvinfer config for an engine."""

from __future__ import annotations

NAME = "deepstream"
HELP = "write a DeepStream nvinfer [property] config (engine, plugin, preprocessing) for an engine"


def input_size(text: str):
    """HxW for --input-size; a bad value is argparse's usage error with our message (not `invalid _size value`)."""
    import argparse

    from ...shapes import parse_shape

    try:
        return parse_shape(text, rank=2, what="--input-size")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser) -> None:
    parser.add_argument("engine", help="engine from `elfatt-deploy build` (with its .json sidecar)")
    parser.add_argument("-o", "--output", required=True, help="config file to write, e.g. config_infer_elfatt.txt")
    parser.add_argument("--onnx", help="ONNX for nvinfer's rebuilds (default: the engine's source ONNX; a plugin-only "
                                       "copy is written beside the config when it has the elfatt function)")
    parser.add_argument("--plugin", help="libelfatt_trt_plugin.so for custom-lib-path (default: the plugin search)")
    parser.add_argument("--batch-size", type=int, help="nvinfer batch-size (default: the profile's opt batch)")
    parser.add_argument("--input-size", type=input_size, metavar="HxW", help="infer-dims height x width (default: the profile's opt)")
    parser.add_argument("--network-type", default="other", choices=["other", "classifier"],
                        help="other (default): the output as tensor meta; classifier: nvinfer's class labels, for an "
                             "engine whose output is probabilities (export --softmax), with --labels")
    parser.add_argument("--labels", help="class names for --network-type classifier, one per line or one line "
                                         "separated by ';' (nvinfer's form is written beside the config when needed)")
    parser.add_argument("--classifier-threshold", type=float, default=None,
                        help="classifier-threshold: the least probability a class is reported at (default 0.0; "
                             "with --network-type classifier)")
    parser.add_argument("--gpu-id", type=int, default=0, help="gpu-id (default 0)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite a different file where the plugin-only ONNX copy or the labels file goes")


def run(args) -> int:
    from pathlib import Path

    from ...atomic import check_output_path, check_outputs_spare_inputs
    from ...engine.engine_file import engine_record, sidecar_path
    from ...serving.deepstream import DeepStreamOptions, write_config

    output = check_output_path(args.output, what="-o", example_name="config_infer.txt")
    check_outputs_spare_inputs({"-o": args.output}, {  # (write_config refuses the engine and --labels itself)
        "the engine's sidecar": sidecar_path(args.engine),
        "the engine's source ONNX": engine_record(args.engine).source_onnx_path, "the --onnx file": args.onnx,
        "the plugin": args.plugin})
    written = write_config(DeepStreamOptions(
        engine=Path(args.engine), output=output, onnx=Path(args.onnx) if args.onnx else None,
        plugin=Path(args.plugin) if args.plugin else None, batch_size=args.batch_size,
        input_size=tuple(args.input_size) if args.input_size else None, network_type=args.network_type,
        labels=Path(args.labels) if args.labels else None, classifier_threshold=args.classifier_threshold,
        gpu_id=args.gpu_id, force=args.force,
    ))
    import sys

    for note in written["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {written['config']}")
    for path in written["written"]:
        print(f"wrote {path}")
    if written["onnx"] is not None:
        print(f"  onnx-file: {written['onnx']}")
    if written["labels"] is not None:
        print(f"  labelfile-path: {written['labels']}")
    if written["plugin"] is not None:
        print(f"  custom-lib-path: {written['plugin']}")
    return 0
