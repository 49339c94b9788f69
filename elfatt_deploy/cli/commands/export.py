"""``elfatt-deploy export``: a model to ONNX with one elfatt::ElfattAttention node per attention layer."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a model to ONNX (one ElfattAttention node per attention layer, runnable in ONNX Runtime as is)"


def add_arguments(parser) -> None:
    from ..options import add_force, add_num_classes, add_progress, non_negative_int

    parser.add_argument("--recipe", help="deploy recipe TOML (export/*.toml); the flags below override it")
    parser.add_argument("--model", help="model name (see `elfatt-deploy models`)")
    parser.add_argument("--checkpoint", help="trained weights (.safetensors/.pt/.pth, loaded with weights_only)")
    parser.add_argument("--input-shape", help="traced N x 3 x H x W, e.g. 1x3x512x512 (default: the recipe's "
                                              "opt_shape, else 1x3x224x224)")
    parser.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=None,
                        help="dynamic batch, height and width (default: on)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), help="graph precision (default fp32)")
    parser.add_argument("--plugin-only", action=argparse.BooleanOptionalAction, default=None,
                        help="leave out the ONNX function body (for trtexec / Polygraphy with the TensorRT plugin)")
    parser.add_argument("--inline", action=argparse.BooleanOptionalAction, default=None,
                        help="inline the ElfattAttention function into standard ONNX ops: no custom nodes or domain "
                             "(for OpenVINO and other tools that ignore ONNX functions; TensorRT without the plugin)")
    parser.add_argument("--softmax", action=argparse.BooleanOptionalAction, default=None,
                        help="output class probabilities (softmax of the logits, float32, named 'probabilities') "
                             "instead of logits: what DeepStream's classifier mode (deepstream --network-type "
                             "classifier) and other consumers of probabilities read")
    parser.add_argument("--opset", type=int, help="default-domain ONNX opset, 18-21 (default 18)")
    parser.add_argument("--weight-seed", "--seed", dest="seed", type=non_negative_int, default=None,
                        help="seed of the random weights when no checkpoint is given (default 0); the file records "
                             "it, and validate rebuilds the same weights")
    add_num_classes(parser)
    parser.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    add_force(parser)
    add_progress(parser)


def _settings(args):
    """Recipe (if any) overridden by the flags that were given."""
    from ...export.recipes import Recipe, load_recipe
    from ...shapes import check_image_shape, parse_shape
    from ..options import config_overrides

    shape = (check_image_shape(parse_shape(args.input_shape, rank=4, what="--input-shape"), what="--input-shape")
             if args.input_shape else None)
    overrides = dict(model=args.model, checkpoint=args.checkpoint, precision=args.precision, opset=args.opset,
                     plugin_only=args.plugin_only, inline=args.inline, softmax=args.softmax, dynamic=args.dynamic,
                     opt_shape=shape)
    if args.recipe:
        recipe = load_recipe(args.recipe, opt_shape=shape)
        if config_overrides(args):
            overrides["model_config"] = {**recipe.model_config, **config_overrides(args)}
        if shape is not None:  # the profile widens to hold the traced shape (a missing min/max stays missing)
            if recipe.min_shape is not None:
                overrides["min_shape"] = tuple(min(a, b) for a, b in zip(recipe.min_shape, shape))
            if recipe.max_shape is not None:
                overrides["max_shape"] = tuple(max(a, b) for a, b in zip(recipe.max_shape, shape))
            if overrides.get("dynamic") is False or (overrides.get("dynamic") is None and not recipe.dynamic):
                overrides.update(min_shape=shape, max_shape=shape)
        return recipe.with_overrides(**overrides)
    if not args.model:
        raise ValueError("give --model NAME or --recipe FILE")
    shape = shape or (1, 3, 224, 224)
    recipe = Recipe(model=args.model, min_shape=shape, opt_shape=shape, max_shape=shape,
                    model_config=config_overrides(args))
    overrides.pop("opt_shape")
    return recipe.with_overrides(**overrides)


def _memory_check(args, recipe) -> None:
    """Export traces at the requested shape: the traced input (batch >= 2 when dynamic) and the weights, whose
    ONNX initializers and serialized bytes are two more copies."""
    from ...memory import check_memory, estimate_forward

    n, c, h, w = recipe.opt_shape
    traced = (max(n, 2) if recipe.dynamic else n, c, h, w)
    estimate = estimate_forward(recipe.model, traced, config=recipe.model_config,
                                what=f"export of {recipe.model} traced at {'x'.join(map(str, traced))}")
    estimate.parts["activations"] = 0  # torch.export traces with fake tensors: no activations are computed
    estimate.parts["weights"] *= 3
    check_memory(estimate, force=args.force)


def run(args) -> int:
    import time

    from ...atomic import check_output_path
    from ...export.exporter import check_traced_shape, elfatt_layers, export_onnx
    from ...export.model_loading import DEFAULT_SEED, build_model, describe_weights
    from ...shapes import format_shape
    from ..options import progress_bar

    check_output_path(args.output, what="-o", suffix=".onnx", example_name="model.onnx")
    recipe = _settings(args)
    if args.seed is not None and recipe.checkpoint:
        raise ValueError(f"--weight-seed {args.seed} and a checkpoint ({recipe.checkpoint}) contradict each other: "
                         "the seed is for random weights; give one of them")
    seed = DEFAULT_SEED if args.seed is None else args.seed
    check_traced_shape(recipe.opt_shape, recipe.dynamic, what="--input-shape" if args.input_shape else "traced shape")
    _memory_check(args, recipe)
    start = time.perf_counter()
    with progress_bar(args, total=6, desc="export") as bar:
        bar.set_postfix_str(f"building {recipe.model}")
        model = build_model(recipe.model, checkpoint=recipe.checkpoint, config=recipe.model_config, seed=seed)

        def stage(name):
            bar.update(1)
            bar.set_postfix_str(name)

        path = export_onnx(model, args.output, recipe.opt_shape, dynamic=recipe.dynamic, precision=recipe.precision,
                           plugin_only=recipe.plugin_only, opset=recipe.opset, inline=recipe.inline,
                           softmax=recipe.softmax, progress=stage)
        bar.update(1)
    elapsed = time.perf_counter() - start
    weights = describe_weights(model.weights_provenance)
    if not recipe.checkpoint:
        weights += " (pass --checkpoint for trained ones)"
    kind = "dynamic batch/height/width" if recipe.dynamic else f"static {format_shape(recipe.opt_shape)}"
    layers = len(elfatt_layers(model))
    if recipe.plugin_only:
        body = f"{layers} ElfattAttention nodes, no function body (plugin only)"
    elif recipe.inline:
        body = f"{layers} attention layers inlined into standard ops (no custom nodes)"
    else:
        body = f"{layers} ElfattAttention nodes with the function body"
    if recipe.softmax:
        body += ", output probabilities (softmax)"
    source = f" from recipe {recipe.path}" if recipe.path else ""
    print(f"wrote {path} in {elapsed:.1f} s{source}: {recipe.model}, {recipe.precision}, {kind}, opset {recipe.opset}, "
          f"{body}; weights: {weights}")
    return 0
