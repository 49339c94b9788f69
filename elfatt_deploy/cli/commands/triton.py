"""``elfatt-deploy triton``: a Triton Inference Server model repository for one or more engines."""

from __future__ import annotations

NAME = "triton"
HELP = "write a Triton model repository (config.pbtxt, plans, plugin, README with the tritonserver command) for engines"


def add_arguments(parser) -> None:
    parser.add_argument("engines", nargs="+", metavar="ENGINE",
                        help="engine(s) from `elfatt-deploy build` (with their .json sidecars); several = one per GPU "
                             "compute capability (e.g. Orin 8.7 and H100 9.0), written as cc_model_filenames")
    parser.add_argument("-o", "--output", required=True, metavar="REPO", help="model repository directory (created)")
    parser.add_argument("--name", required=True, help="model name (the directory REPO/NAME and Triton's model name)")
    parser.add_argument("--version", type=int, default=1, help="model version directory (default 1)")
    parser.add_argument("--instances", type=int, default=1, help="instance_group count (default 1)")
    parser.add_argument("--kind", default="KIND_GPU", help="instance_group kind: KIND_GPU (default) or KIND_AUTO")
    parser.add_argument("--dynamic-batching", action="store_true",
                        help="enable Triton's dynamic batcher (needs an engine with a dynamic batch dimension)")
    parser.add_argument("--max-queue-delay-us", type=int, default=None,
                        help="dynamic batcher max_queue_delay_microseconds (default 100; with --dynamic-batching)")
    parser.add_argument("--plugin", action="append", default=[], metavar="LIB",
                        help="libelfatt_trt_plugin.so to copy into the repository (default: the plugin search); "
                             "repeat for another CPU (x86_64 and aarch64 builds)")


def run(args) -> int:
    from pathlib import Path

    from ...errors import InputError
    from ...serving.triton import TritonOptions, write_repository

    if args.max_queue_delay_us is not None and not args.dynamic_batching:
        raise InputError(f"--max-queue-delay-us {args.max_queue_delay_us} configures Triton's dynamic batcher; add "
                         "--dynamic-batching, or drop it")

    written = write_repository(TritonOptions(
        engines=[Path(e) for e in args.engines], repository=Path(args.output), name=args.name, version=args.version,
        instances=args.instances, kind=args.kind, dynamic_batching=args.dynamic_batching,
        max_queue_delay_us=100 if args.max_queue_delay_us is None else args.max_queue_delay_us, plugins=[Path(p) for p in args.plugin],
    ))
    print(f"wrote {written['config']}")
    for path in written["plans"] + written["plugins"]:
        print(f"wrote {path}")
    print(f"wrote {written['readme']} (the tritonserver command)")
    return 0
