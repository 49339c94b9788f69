"""``elfatt-deploy validate``: a deployed model against PyTorch on the same random inputs.

The PyTorch side is rebuilt from what the file records (export/metadata.py): the model,
its configuration, and the weights (checkpoint path + sha256, or the seed of random
weights). ``--seed`` draws the inputs; ``--weight-seed`` / ``--checkpoint`` override the
weights. Everything that can be checked before running is checked first: the file, the
shapes against a static input, the checkpoint's hash, the output path, the memory.
"""

from __future__ import annotations

from ... import jsonio

NAME = "validate"
HELP = ("compare an exported model (ONNX Runtime, OpenVINO) or engine (TensorRT) with PyTorch; exit 1 when a tolerance "
        "is exceeded")

DEFAULT_SHAPES = "1x3x224x224,2x3x200x264"
#: A failure this many times above the tolerance is not rounding: say what usually causes it.
GROSS_FAILURE_FACTOR = 1e3


#: The flags that belong to one backend (cli/options.check_backend_flags refuses them with another).
BACKEND_FLAGS = {"--providers": ("onnxruntime",), "--device": ("openvino",), "--inference-precision": ("openvino",),
                 "--engine": ("tensorrt",), "--plugin": ("tensorrt",)}


def add_arguments(parser) -> None:
    from ..options import add_force, add_num_classes, add_progress, non_negative_int

    parser.add_argument("onnx", nargs="?", help="the exported .onnx file (its metadata gives model, precision and "
                                                "weights)")
    parser.add_argument("--model", help="model name (default: from the ONNX metadata)")
    parser.add_argument("--checkpoint", help="the weights the file was exported with (default: the checkpoint the "
                                             "file records, checked by its sha256; needed when it has moved)")
    parser.add_argument("--weight-seed", type=non_negative_int, default=None,
                        help="seed of random weights (default: the seed the file records; 0 for files that record "
                             "none)")
    add_num_classes(parser)
    from ...runtime.backends import BACKENDS
    from ...runtime.openvino_runner import INFERENCE_PRECISIONS

    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                        help="what runs the deployed model (default onnxruntime)")
    parser.add_argument("--providers", help="ONNX Runtime execution providers in priority order, e.g. cuda,cpu "
                                            "(default cpu)")
    parser.add_argument("--device", help="OpenVINO device for --backend openvino: CPU (default), GPU, NPU, AUTO")
    parser.add_argument("--inference-precision", choices=INFERENCE_PRECISIONS, default=None,
                        help="OpenVINO's INFERENCE_PRECISION_HINT for --backend openvino (default f32; OpenVINO "
                             "would otherwise compute in bf16 on CPUs with bf16 units and in f16 on GPUs)")
    parser.add_argument("--engine", help="TensorRT engine file (for --backend tensorrt)")
    parser.add_argument("--plugin", help="ElfattAttention TensorRT plugin library (for --backend tensorrt; "
                                         "found automatically when omitted)")
    parser.add_argument("--shapes", default=None,
                        help=f"input shapes N x 3 x H x W, comma-separated (default {DEFAULT_SHAPES}; a static "
                             "file: its own shape)")
    parser.add_argument("--samples", type=int, default=None, help="random inputs per shape (default 2)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--images", metavar="DIR", help="compare on these images instead of random inputs: "
                        "DIR/<class>/*.png (ImageFolder: accuracy too) or DIR/*.png; top-1 agreement, accuracy, errors")
    parser.add_argument("--input-shape", help="with --images: N x 3 x H x W the images are resized to and batched by "
                                              "(default: the file's static shape, else its traced shape, batch 16)")
    parser.add_argument("--min-agreement", type=float, default=None,
                        help="with --images: minimum top-1 agreement with PyTorch (default 0.99)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8-qdq"),
                        help="precision of the deployed model, for the default tolerance (default: for tensorrt the "
                             "engine's sidecar, else the ONNX metadata)")
    parser.add_argument("--rtol-l2", type=float, help="max relative L2 error (default: onnxruntime fp32 1e-5, "
                                                      "fp16 5e-3; openvino fp32 1e-5, fp16 2e-3, at least 3e-2 "
                                                      "with --inference-precision bf16 and 5e-3 with f16; tensorrt "
                                                      "fp32 1e-4 (1e-2 for an engine that may use TF32), fp16 5e-3; "
                                                      "int8-qdq 5e-2 on all three)")
    parser.add_argument("--report", help="write a JSON report here (atomically)")
    add_force(parser)
    add_progress(parser)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Polygraphy's per-inference log and the libraries' warnings (on stderr)")


def _shapes(args, onnx_file):
    from ...shapes import check_image_shape, parse_shape_list

    explicit = args.shapes is not None
    shapes = [check_image_shape(s, what="--shapes entry")
              for s in parse_shape_list(args.shapes if explicit else DEFAULT_SHAPES, rank=4, what="--shapes")]
    note = None
    if onnx_file is None:
        return shapes, note
    if not explicit:
        fitted = onnx_file.fit_shapes(shapes)
        if fitted != shapes:
            from ...shapes import format_shape

            note = (f"{onnx_file.path} has a static input; validating at {', '.join(map(format_shape, fitted))} "
                    "(give --shapes to choose)")
        shapes = fitted
    for shape in shapes:
        onnx_file.check_shape(shape, what="--shapes entry" if explicit else "shape")
    return shapes, note


def resolve_weights(args, recorded, onnx_path) -> tuple[dict, str]:
    """(provenance of the weights to build, where that choice comes from), or InputError/FileNotFoundError.

    Rebuilds what the file records by default; ``--checkpoint`` must have the recorded sha256;
    ``--weight-seed`` replaces a recorded seed (it is how to compare against other weights on purpose).
    """
    from pathlib import Path

    from ...errors import InputError
    from ...export.model_loading import DEFAULT_SEED, describe_weights, file_sha256, weights_provenance

    if args.checkpoint and args.weight_seed is not None:
        raise InputError("--checkpoint and --weight-seed contradict each other: give one of them")
    if args.checkpoint:
        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint {args.checkpoint!r} does not exist or is not a file")
        given = weights_provenance(checkpoint=args.checkpoint)
        if recorded and recorded.get("source") == "random":
            raise InputError(f"{onnx_path} was exported with random weights ({describe_weights(recorded)}), not from a "
                             f"checkpoint; drop --checkpoint (or validate the file exported from {args.checkpoint})")
        if recorded and recorded.get("sha256") and recorded["sha256"] != given["sha256"]:
            raise InputError(f"--checkpoint {args.checkpoint} has sha256 {given['sha256'][:16]}..., but {onnx_path} was "
                             f"exported from {recorded.get('path')} with sha256 {recorded['sha256'][:16]}...: these are "
                             "other weights. Pass the checkpoint the file was exported with, or re-export")
        return given, "--checkpoint" + (", sha256 as recorded in the file" if recorded else "")
    if args.weight_seed is not None:
        return weights_provenance(seed=args.weight_seed), "--weight-seed"
    if recorded and recorded.get("source") == "checkpoint":
        path = recorded.get("path", "")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{onnx_path} was exported from the checkpoint {path}, which is not there (moved, or "
                                    "exported on another machine); pass --checkpoint PATH to that file")
        actual = file_sha256(path)
        if actual != recorded.get("sha256"):
            raise InputError(f"the checkpoint {path} has changed since {onnx_path} was exported (sha256 now "
                             f"{actual[:16]}..., recorded {str(recorded.get('sha256'))[:16]}...); re-export, or pass "
                             "--checkpoint with the file that was exported")
        return dict(recorded), "as recorded in the file"
    if recorded:
        seed = recorded.get("seed", DEFAULT_SEED)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise InputError(f"{onnx_path} records the weight seed {seed!r} (elfatt.weights metadata), which is no "
                             "seed `export` writes (an integer from 0 to 2**63-1); pass --weight-seed N with the seed "
                             "it was exported with, or re-export")
        return dict(recorded), "as recorded in the file"
    return weights_provenance(seed=DEFAULT_SEED), ("the file records no weights: assuming the random weights of "
                                                   "`export` without --checkpoint; pass --checkpoint or --weight-seed "
                                                   "if it was made from others")


def _openvino_computed_precision(args, requested):
    """The precision OpenVINO's CPU plugin will compute in for --inference-precision ``requested`` (it falls back
    from f16 to bf16, or to f32, on CPUs without those units), with a note when that is not what was asked."""
    if args.backend != "openvino" or requested in (None, "f32") or str(args.device or "CPU").upper() != "CPU":
        return requested
    import sys

    from ...runtime.openvino_runner import cpu_inference_precision

    computed = cpu_inference_precision(requested)
    if computed != requested:
        print(f"note: OpenVINO's CPU plugin computes --inference-precision {requested} in {computed} on this CPU (it "
              f"has no {requested} arithmetic), so the limit for {computed} applies", file=sys.stderr)
    return computed


def _source_onnx_notes(args, record) -> list[str]:
    """A note when the ONNX given is not the one the engine was built from (its sidecar records the hash):
    validate takes the model, its configuration and weights from the ONNX, so a mismatch may fail parity
    for reasons that are not the engine's."""
    if record is None or not args.onnx or not record.source_onnx_sha256:
        return []
    from ...engine.engine_file import sha256_file

    try:
        if sha256_file(args.onnx) == record.source_onnx_sha256:
            return []
    except OSError:
        return []  # inspect_onnx_file names an unreadable ONNX
    return [f"{args.engine} was built from another ONNX than {args.onnx} (its SHA-256 differs from the sidecar's "
            f"source_onnx.sha256); the model, configuration and weights compared come from {args.onnx}: give the "
            "ONNX the engine was built from (the sidecar's source_onnx.path names it)"]


def _memory_check(args, name, config, shapes):
    from ...memory import check_memory, estimate_forward

    worst = None
    inputs = 0
    for shape in shapes:
        # the float32 inputs of every draw are held at once; the largest is drawn as float64 first
        estimate = estimate_forward(name, shape, config=config, input_copies=0, what=f"validate {name}")
        n = 1
        for d in shape:
            n *= d
        inputs += n * 4 * args.samples
        if worst is None or estimate.total > worst[0].total:
            worst = (estimate, n)
    estimate, largest = worst
    estimate.parts["input"] = inputs + largest * 8  # every draw (float32) + the largest's float64 draw
    estimate.parts["weights"] *= 2  # the PyTorch model and the backend's copy
    estimate.what = f"validate {name} at {', '.join('x'.join(map(str, s)) for s in shapes)} x {args.samples} samples"
    check_memory(estimate, force=args.force)


def _gross_failure_hint(result, rtol, weights_source, default_rtol=None) -> str:
    """The likely cause of an error far above the tolerance. Measured against the backend's default tolerance
    too, so that a tolerance tightened with --rtol-l2 does not make rounding look like a weights mismatch."""
    worst = max(result.worst(o).metrics.rel_l2_error for o in result.outputs())
    if worst != worst or worst == float("inf"):
        return ("hint: the error is not finite: one side's output holds NaN or inf (look for overflow in a "
                "float16 file, or NaN/inf in the weights); --report keeps the numbers")
    if worst < GROSS_FAILURE_FACTOR * max(rtol, default_rtol or 0.0):
        return ""
    if weights_source.startswith("the file records no weights"):
        cause = ("the file records no weights, so the PyTorch side assumed random weights (seed 0); pass the "
                 "--checkpoint or --weight-seed it was exported with")
    elif weights_source == "--weight-seed":
        cause = "--weight-seed gave the PyTorch side other weights than the file records; drop it to use those"
    else:
        cause = ("the weights match what the file records, so look for another model configuration (an edited "
                 "file, other --model/--num-classes) or a backend bug; --report keeps the numbers")
    return (f"hint: a relative L2 error of {worst:.2g} is {worst / rtol:.0e} times the tolerance: errors this large "
            f"are not rounding; they usually mean the two sides run different weights. Here: {cause}.")


def run(args) -> int:
    import sys

    from ...atomic import check_output_path, check_outputs_spare_inputs
    from ...engine.engine_file import sidecar_path
    from ...errors import InputError
    from ...export.model_loading import build_model, describe_weights, parse_provenance
    from ...models.registry import get_entry
    from ...runtime.backends import make_runner
    from ...runtime.onnx_file import inspect_onnx_file
    from ...models.probabilities import PROBABILITIES_OUTPUT, WithProbabilities
    from ...runtime.torch_runner import TorchRunner
    from ...validation.comparator import run_parity
    from ...validation.report import format_parity_tables, write_report
    from ...validation.tolerances import (
        default_rtol_l2,
        deployed_precision,
        onnxruntime_may_use_tf32,
        saturating_cpu_int8,
        tolerance_note,
    )
    from ..options import check_backend_flags, config_overrides, parse_providers, progress_bar

    if args.backend in ("onnxruntime", "openvino") and not args.onnx:
        raise InputError("give the .onnx file to validate (elfatt-deploy validate model.onnx ...)")
    check_backend_flags(args, BACKEND_FLAGS)
    if args.backend == "tensorrt" and not args.engine:
        raise InputError("--backend tensorrt needs --engine PATH (build one with `elfatt-deploy build`)")
    may_use_tf32, engine_record = False, None
    if args.backend == "tensorrt":
        from ...engine.engine_file import engine_record as read_engine_record
        from ...engine.not_a_plan import check_engine_argument

        check_engine_argument(args.engine)  # before the TensorRT check: a wrong file is named on any machine
        engine_record = read_engine_record(args.engine)
        may_use_tf32 = engine_record.tf32
    if args.samples is not None and args.samples < 1:
        raise InputError(f"--samples {args.samples} must be >= 1")
    if not args.images:
        given = [flag for flag, value in (("--input-shape", args.input_shape), ("--min-agreement", args.min_agreement))
                 if value is not None]
        if given:
            raise InputError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} with --images DIR only; "
                             "for random inputs give the "
                             "shapes with --shapes (e.g. --shapes 1x3x224x224,2x3x200x264)")
    else:
        given = [flag for flag, value in (("--shapes", args.shapes), ("--samples", args.samples)) if value is not None]
        if given:
            raise InputError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to random inputs only; "
                             "with --images DIR every image is compared once, resized to one batch shape: give "
                             "that with --input-shape (e.g. --input-shape 16x3x224x224)")
    if args.samples is None:
        args.samples = 2
    if args.images and args.min_agreement is not None and not 0 <= args.min_agreement <= 1:
        raise InputError(f"--min-agreement {args.min_agreement} must be in [0, 1], e.g. 0.99")
    if args.report:
        check_output_path(args.report, what="--report", example_name="report.json")
        check_outputs_spare_inputs({"--report": args.report}, {
            "the ONNX file": args.onnx, "the engine": args.engine,
            "the engine's sidecar": sidecar_path(args.engine) if args.engine else None,
            "the checkpoint": args.checkpoint, "the plugin": args.plugin})
    onnx_file = inspect_onnx_file(args.onnx) if args.onnx else None
    meta = onnx_file.metadata if onnx_file else {}
    if onnx_file is not None:
        onnx_file.check_runnable_on(args.backend)
    name = args.model or meta.get("model_name")
    if not name:
        raise InputError(f"{args.onnx or 'the engine'} has no elfatt metadata naming its model (not exported by "
                         "elfatt-deploy?); pass --model NAME (see `elfatt-deploy models`)")
    if meta.get("model_name") and args.model and args.model != meta["model_name"]:
        raise InputError(f"--model {args.model} differs from the model the file was exported from "
                         f"({meta['model_name']}); drop --model or validate the right file")
    get_entry(name)
    config = onnx_file.model_config() if onnx_file is not None and name == meta.get("model_name") else {}
    overrides = config_overrides(args)
    for key, value in overrides.items():
        if key in config and config[key] != value:
            raise InputError(f"--{key.replace('_', '-')} {value} differs from the file's {key} = {config[key]}; drop it")
    config.update(overrides)
    precision, precision_notes = deployed_precision(
        args.backend, args.precision, meta.get("precision"), engine_record.precision if engine_record else None)
    if (onnx_file is not None and onnx_file.quantize_linear_count and precision != "int8-qdq" and not args.precision
            and engine_record is None):
        precision_notes.append(
            f"{args.onnx} has {onnx_file.quantize_linear_count} QuantizeLinear nodes but records precision "
            f"{meta.get('precision') or 'none'} (quantized by another tool than `elfatt-deploy quantize`?); the "
            f"{precision} limit applies: pass --precision int8-qdq for the INT8 one")
    if args.rtol_l2 is not None:
        precision_notes = []  # the limit is the user's: which precision's default it would be does not matter
    for note in precision_notes + _source_onnx_notes(args, engine_record):
        print(f"note: {note}", file=sys.stderr)
    inference_precision = (args.inference_precision or "f32") if args.backend == "openvino" else None
    computed_precision = _openvino_computed_precision(args, inference_precision)  # the limit follows what runs
    providers = parse_providers(args.providers)
    if args.backend == "onnxruntime":
        may_use_tf32 = onnxruntime_may_use_tf32(providers)
    saturation = saturating_cpu_int8(args.backend, precision, meta, providers=providers,
                                     device=getattr(args, "device", None))
    rtol = default_rtol_l2(args.backend, precision, args.rtol_l2, inference_precision=computed_precision,
                           cpu_int8_saturation=saturation, tf32=may_use_tf32)
    rtol_note = tolerance_note(args.backend, precision, args.rtol_l2, inference_precision=computed_precision,
                               cpu_int8_saturation=saturation, tf32=may_use_tf32,
                               tf32_unknown_because=engine_record.why_unknown if engine_record is not None else None)
    tf32_limit = may_use_tf32 is not False and bool(rtol_note)
    if (saturation or tf32_limit) and args.rtol_l2 is None:
        print(f"note: tolerance {rtol:.1e}{rtol_note}", file=sys.stderr)
    if args.images:  # images are resized to one batch shape (_image_batch_shape), not drawn at --shapes
        batch, height, width = _image_batch_shape(args, meta)
        shapes, shape_note = [(batch, 3, height, width)], None
    else:
        shapes, shape_note = _shapes(args, onnx_file)
    weights, weights_source = resolve_weights(args, parse_provenance(meta.get("weights")), args.onnx or args.engine)
    _memory_check(args, name, config, shapes)

    backend = make_runner(args.backend, onnx_path=args.onnx, engine_path=args.engine, plugin=args.plugin,
                          providers=providers, device=args.device, inference_precision=inference_precision)
    # (make_runner says now, before any work, when TensorRT or OpenVINO is missing)
    if shape_note:
        print(f"note: {shape_note}", file=sys.stderr)
    if weights_source.startswith("the file records no weights"):
        print(f"note: {weights_source}", file=sys.stderr)
    with progress_bar(args, total=None, desc=f"building {name}") as bar:
        model = build_model(name, checkpoint=weights.get("path") if weights["source"] == "checkpoint" else None,
                            config=config, seed=int(weights.get("seed", 0)))
        bar.update(1)
    input_name = onnx_file.input.name if onnx_file else meta.get("input_name", "image")
    output_name = meta.get("output_name") or (onnx_file.outputs[0] if onnx_file else "logits")
    if onnx_file is not None and output_name not in onnx_file.outputs:
        if len(onnx_file.outputs) != 1:
            raise InputError(f"{args.onnx} has the outputs {onnx_file.outputs}; validate compares one model output")
        output_name = onnx_file.outputs[0]
    if output_name == PROBABILITIES_OUTPUT:  # exported with --softmax: the reference's softmax too
        model = WithProbabilities(model)
    reference = TorchRunner(model, [input_name], [output_name], name="pytorch")
    classifier = getattr(model, "num_classes", 1) != 0  # num_classes 0: the output is features, no top-1
    if args.images:
        return _run_images(args, reference, backend, meta, name, precision, rtol, input_name, output_name, providers,
                           describe_weights(weights), classifier=classifier, rtol_note=rtol_note, tf32=may_use_tf32)
    result = run_parity(reference, backend, input_name=input_name, shapes=shapes, samples=args.samples, seed=args.seed,
                        rtol_l2=rtol, verbose=args.verbose, classifier=classifier,
                        progress=lambda total: progress_bar(args, total=total, desc="validate", unit="run"))
    origin = weights_source if weights_source in ("--checkpoint", "--weight-seed") else weights_source.split(":")[0]
    print(f"{name} ({precision}) on {args.backend} vs PyTorch fp32; weights: {describe_weights(weights)} ({origin}); "
          f"inputs: seed {args.seed}")
    print(format_parity_tables(result))
    verdict = "PASS" if result.passed else "FAIL"
    print(f"{verdict}: worst relative L2 error "
          + ", ".join(f"{o} {result.worst(o).metrics.rel_l2_error:.3e}" for o in result.outputs())
          + f" (tolerance {rtol:.1e}{rtol_note})")
    if not result.passed:
        hint = _gross_failure_hint(result, rtol, weights_source,
                                   default_rtol_l2(args.backend, precision, None, inference_precision=computed_precision,
                                                   cpu_int8_saturation=saturation, tf32=may_use_tf32))
        if hint:
            print(hint)
    if args.report:
        write_report(args.report, result, {
            "onnx": args.onnx, "engine": args.engine, "plugin": args.plugin, "backend": args.backend,
            "providers": providers, "device": getattr(backend, "info", {}).get("device"),
            "openvino": getattr(backend, "info", None), "model": name, "model_config": config, "weights": weights,
            "checkpoint": weights.get("path"), "precision": precision,
            "shapes": [list(s) for s in shapes], "samples": args.samples, "seed": args.seed,
            "tf32": may_use_tf32, "tolerance_reason": rtol_note[2:] or None,
        })
        print(f"report: {args.report}")
    return 0 if result.passed else 1


def _run_images(args, reference, backend, meta, name, precision, rtol, input_name, output_name, providers,
                weights, classifier: bool = True, rtol_note: str = "", tf32=False) -> int:
    """``--images DIR``: both sides on the folder's images (validation/images.py). ``classifier=False``
    (num_classes 0): the features are compared, without top-1."""

    from ...atomic import atomic_write_text
    from ...errors import InputError
    from ...preprocess import normalization_from_props
    from ...validation.images import DEFAULT_MIN_AGREEMENT, format_image_report, run_image_parity
    from ...validation.report import environment

    batch, height, width = _image_batch_shape(args, meta)
    if not classifier and args.min_agreement is not None:
        raise InputError(f"--min-agreement {args.min_agreement}: {name} has no classifier head here (num_classes 0), so "
                         "its output is features and top-1 agreement does not apply; drop --min-agreement (the "
                         "relative L2 tolerance still applies)")
    min_agreement = DEFAULT_MIN_AGREEMENT if args.min_agreement is None else args.min_agreement
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"--min-agreement {min_agreement} must be in [0, 1], e.g. 0.99")
    fixed_batch = str(meta.get("dynamic", "true")).lower() != "true"
    result = run_image_parity(reference, backend, input_name=input_name, output_name=output_name, images=args.images,
                              fixed_batch=fixed_batch,
                              size=(height, width), normalization=normalization_from_props(meta),
                              rtol_l2=rtol, min_agreement=min_agreement, batch=batch, classifier=classifier)
    print(f"{name} ({precision}) on {args.backend} vs PyTorch fp32; weights: {weights}")
    print(format_image_report(result))
    verdict = "PASS" if result.passed else "FAIL"
    if classifier:
        print(f"{verdict}: top-1 agreement {result.agreement:.4f} (min {min_agreement:.2f}), "
              f"relative L2 error {result.metrics.rel_l2_error:.3e} (tolerance {rtol:.1e}{rtol_note})")
    else:
        print(f"{verdict}: relative L2 error of the features {result.metrics.rel_l2_error:.3e} (tolerance {rtol:.1e}"
              f"{rtol_note}); "
              "top-1 not compared (num_classes 0: no classifier head)")
    if args.report:
        report = {"passed": result.passed, "settings": {
            "onnx": args.onnx, "engine": args.engine, "backend": args.backend, "providers": providers, "model": name,
            "checkpoint": args.checkpoint, "precision": precision, "images": args.images, "batch": batch,
            "tf32": tf32, "tolerance_reason": rtol_note[2:] or None},
            "environment": environment(), **result.to_dict()}
        atomic_write_text(args.report, jsonio.dumps(report, indent=2) + "\n")
        print(f"report: {args.report}")
    return 0 if result.passed else 1


def _image_batch_shape(args, meta) -> tuple[int, int, int]:
    """(batch, height, width) for --images: --input-shape, else the file's static dims or traced shape."""
    from ...errors import InputError
    from ...shapes import check_image_shape, parse_shape

    traced = [int(d) for d in meta["input_shape"].split("x")] if meta.get("input_shape") else [1, 3, 224, 224]
    dynamic = str(meta.get("dynamic", "true")).lower() == "true"
    if args.input_shape:
        shape = check_image_shape(parse_shape(args.input_shape, rank=4, what="--input-shape"), what="--input-shape")
        if not dynamic and meta.get("input_shape") and list(shape) != traced:
            raise InputError(f"--input-shape {args.input_shape} does not fit the file's static input "
                             f"{'x'.join(map(str, traced))}; drop --input-shape, or export with --dynamic")
        n, _, h, w = shape
        return n, h, w
    return (16 if dynamic else traced[0]), traced[2], traced[3]
