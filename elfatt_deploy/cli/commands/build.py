"""``elfatt-deploy build``: ONNX -> TensorRT engine (with the ElfattAttention plugin or without)."""

from __future__ import annotations

NAME = "build"
HELP = "build a strongly typed TensorRT engine from an exported ONNX file (needs TensorRT and a GPU)"


def add_arguments(parser) -> None:
    parser.add_argument("onnx", help="ONNX file from `elfatt-deploy export`")
    parser.add_argument("-o", "--output", required=True,
                        help="engine to write: the plain TensorRT plan (trtexec, Triton and DeepStream load it as is), "
                             "with its metadata in OUTPUT.json beside it")
    parser.add_argument("--plugin", help="plugin library, libelfatt_trt_plugin.so or libelfatt_trt_plugin_vc.so "
                                         "(default: $ELFATT_PLUGIN_PATH, plugins/build/**, system path)")
    parser.add_argument("--no-plugin", action="store_true",
                        help="build a plugin-free engine from the ONNX function body (a control for parity and speed)")
    parser.add_argument("--shapes", help="optimization profile, min:1x3x224x224,opt:1x3x224x224,max:4x3x448x448 (or one static shape)")
    parser.add_argument("--recipe", help="export recipe TOML whose min/opt/max shapes give the profile")
    parser.add_argument("--workspace", type=int, metavar="MB", help="builder workspace limit in MiB (default: TensorRT's, all device memory)")
    parser.add_argument("--timing-cache", metavar="FILE", help="timing cache to read (if present) and update")
    parser.add_argument("--tf32", action="store_true",
                        help="let FP32 matrix multiplies and convolutions run on tensor cores in TF32 (10-bit mantissas): "
                             "faster on Ampere and later GPUs, but the engine then differs from PyTorch by a few 1e-3 "
                             "relative L2 (CPU emulation: bench/tf32_emulation_cpu.py; validate allows 1e-2 for it). "
                             "Off by default, as in Polygraphy; trtexec turns it on unless --noTF32")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="TensorRT's verbose log, and the libraries' logs on stderr as on every command")


def options_from_args(args):
    from pathlib import Path

    from ...engine.builder import BuildOptions

    return BuildOptions(
        onnx_path=Path(args.onnx),
        output=Path(args.output),
        plugin=args.plugin,
        use_plugin=not args.no_plugin,
        shapes=args.shapes,
        recipe=args.recipe,
        workspace_mb=args.workspace,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        progress=not args.no_progress,
        verbose=args.verbose,
        tf32=args.tf32,
    )


def run(args) -> int:
    from ...engine.builder import build_engine
    from ...engine.engine_file import sidecar_path

    # EngineBuildError / PluginLoadError (ToolkitErrors) become `error: ...`, exit 3, in the CLI's main
    options = options_from_args(args)
    meta = build_engine(options)
    prof = meta["profiles"][0]
    plugin = meta["plugin"]
    print(f"wrote {options.output} (and {sidecar_path(options.output).name}): TensorRT {meta['tensorrt_version']}, {meta['gpu']['name']}, precision "
          f"{meta['precision']}{' (TF32 allowed)' if meta.get('tf32') else ''}, plugin {'v' + plugin['version'] if plugin['used'] else 'not used'}, input "
          f"{meta['input']['name']} min {prof['min']} opt {prof['opt']} max {prof['max']}")
    return 0
