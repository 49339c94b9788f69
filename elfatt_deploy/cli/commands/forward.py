"""``elfatt-deploy forward``: one PyTorch forward pass of a model, with timing."""

from __future__ import annotations

NAME = "forward"
HELP = "run one PyTorch forward pass of a model on a random image and print the output"


def add_arguments(parser) -> None:
    from ..options import add_force, add_num_classes, non_negative_int

    parser.add_argument("--model", required=True, help="model name (see `elfatt-deploy models`)")
    parser.add_argument("--attention", choices=("elfatt", "vanilla"), default="elfatt",
                        help="ELFATT attention, or the vanilla softmax-attention twin (default elfatt)")
    parser.add_argument("--checkpoint", help="trained weights (.pt/.pth/.safetensors)")
    add_num_classes(parser)
    parser.add_argument("--input-shape", default="1x3x224x224", help="N x 3 x H x W (default 1x3x224x224)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1 ...)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the random input image (default 0; the weights are random unless --checkpoint)")
    add_force(parser)


def run(args) -> int:
    import time

    import torch

    from ...checkpoint import load_checkpoint
    from ...memory import check_memory, estimate_forward
    from ...models import create_model
    from ...shapes import check_image_shape, format_shape, parse_shape
    from ..devices import torch_device
    from ..options import config_overrides

    device = torch_device(args.device)
    shape = check_image_shape(parse_shape(args.input_shape, what="--input-shape"), what="--input-shape")
    config = config_overrides(args)
    if device.type == "cpu":
        check_memory(estimate_forward(args.model, shape, config=config, attention=args.attention,
                                      what=f"forward of {args.model} ({args.attention}) at {format_shape(shape)}"),
                     force=args.force)
    model = create_model(args.model, attention=args.attention, **config).eval()
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    model = model.to(device)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed)).to(device)
    with torch.inference_mode():
        start = time.perf_counter()
        y = model(x)
        elapsed = time.perf_counter() - start
    print(f"{args.model}: input {format_shape(shape)} -> output {format_shape(y.shape)} in {elapsed * 1e3:.1f} ms "
          f"on {args.device}; finite: {bool(torch.isfinite(y).all())}")
    return 0
