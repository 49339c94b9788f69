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
        attns = [m.attrs for m in model.modules() if hasattr(m, "attrs")]
        heads = sorted({f"{a.global_heads}g+{a.local_heads}l" for a in attns}, key=lambda s: int(s.split("g")[0]))
        rows.append([name, entry.family, f"{params / 1e6:.2f}M", len(attns), ",".join(heads),
                     entry.window_summary(), f"{entry.default_input_size}x{entry.default_input_size}"])
    print(format_table(["model", "family", "params", "attn layers", "heads", "local blocks", "input"], rows))
    return 0
