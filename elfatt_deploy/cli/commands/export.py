"""``elfatt-deploy export``: a model to ONNX with one elfatt::ElfattAttention node per attention layer."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a model to ONNX (one ElfattAttention node per attention layer, runnable in ONNX Runtime as is)"


def add_arguments(parser) -> None:
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
    parser.add_argument("--opset", type=int, help="default-domain ONNX opset, 18-21 (default 18)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random weights when no checkpoint is given "
                                                               "(default 0; validate uses the same)")
    parser.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")


def _settings(args):
    """Recipe (if any) overridden by the flags that were given."""
    from ...export.recipes import Recipe, load_recipe
    from ...shapes import parse_shape

    shape = parse_shape(args.input_shape, rank=4, what="--input-shape") if args.input_shape else None
    overrides = dict(model=args.model, checkpoint=args.checkpoint, precision=args.precision, opset=args.opset,
                     plugin_only=args.plugin_only, inline=args.inline, dynamic=args.dynamic, opt_shape=shape)
    if args.recipe:
        recipe = load_recipe(args.recipe)
        if shape is not None:
            overrides.update(min_shape=tuple(min(a, b) for a, b in zip(recipe.min_shape, shape)),
                             max_shape=tuple(max(a, b) for a, b in zip(recipe.max_shape, shape)))
            if overrides.get("dynamic") is False or (overrides.get("dynamic") is None and not recipe.dynamic):
                overrides.update(min_shape=shape, max_shape=shape)
        return recipe.with_overrides(**overrides)
    if not args.model:
        raise ValueError("give --model NAME or --recipe FILE")
    shape = shape or (1, 3, 224, 224)
    recipe = Recipe(model=args.model, min_shape=shape, opt_shape=shape, max_shape=shape)
    overrides.pop("opt_shape")
    return recipe.with_overrides(**overrides)


def run(args) -> int:
    import time

    from ...atomic import check_output_path
    from ...export.exporter import elfatt_layers, export_onnx
    from ...export.model_loading import DEFAULT_SEED, build_model
    from ...shapes import format_shape

    check_output_path(args.output, what="-o", suffix=".onnx")
    recipe = _settings(args)
    seed = DEFAULT_SEED if args.seed is None else args.seed
    model = build_model(recipe.model, checkpoint=recipe.checkpoint, config=recipe.model_config, seed=seed)
    start = time.perf_counter()
    path = export_onnx(model, args.output, recipe.opt_shape, dynamic=recipe.dynamic, precision=recipe.precision,
                       plugin_only=recipe.plugin_only, opset=recipe.opset, inline=recipe.inline)
    elapsed = time.perf_counter() - start
    weights = recipe.checkpoint or f"random weights (seed {seed}; pass --checkpoint for trained ones)"
    kind = "dynamic batch/height/width" if recipe.dynamic else f"static {format_shape(recipe.opt_shape)}"
    layers = len(elfatt_layers(model))
    if recipe.plugin_only:
        body = f"{layers} ElfattAttention nodes, no function body (plugin only)"
    elif recipe.inline:
        body = f"{layers} attention layers inlined into standard ops (no custom nodes)"
    else:
        body = f"{layers} ElfattAttention nodes with the function body"
    print(f"wrote {path} in {elapsed:.1f} s: {recipe.model}, {recipe.precision}, {kind}, opset {recipe.opset}, "
          f"{body}; weights: {weights}")
    return 0
