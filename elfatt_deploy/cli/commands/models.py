"""``elfatt-deploy models``: the registered models with parameters and windows."""

from __future__ import annotations

NAME = "models"
HELP = "list the registered ELFATT models (parameters, heads, default windows)"


def add_arguments(parser) -> None:
    parser.add_argument("--attention", choices=("elfatt", "vanilla"), default="elfatt",
                        help="count the ELFATT models or their vanilla-attention twins")


def run(args) -> int:
    from ...models import create_model, get_entry, list_models
    from ..table import format_table

    rows = []
    for name in list_models():
        entry = get_entry(name)
        model = create_model(name, attention=args.attention)
        params = sum(p.numel() for p in model.parameters())
        layers = [m for m in model.modules() if hasattr(m, "attrs")]
        if args.attention == "vanilla":  # softmax over all tokens: every head is global, no local blocks
            counts = sorted({m.attrs.global_heads + m.attrs.local_heads for m in layers})
            heads = ["/".join(map(str, counts)) + " softmax"]
            blocks = "none (all tokens)"
        else:
            heads = sorted({f"{m.attrs.global_heads}g+{m.attrs.local_heads}l" for m in layers},
                           key=lambda s: int(s.split("g")[0]))
            blocks = entry.window_summary()
        rows.append([name, entry.family, f"{params / 1e6:.2f}M", len(layers), ",".join(heads),
                     blocks, f"{entry.default_input_size}x{entry.default_input_size}"])
    print(format_table(["model", "family", "params", "attn layers", "heads", "local blocks", "input"], rows))
    if args.attention == "elfatt":
        print("heads: g = global linear heads, l = local block heads (softmax inside each window or stripe)")
    return 0
