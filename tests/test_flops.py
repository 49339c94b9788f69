"""The FLOP count behind the benchmarks' ideal speedup (elfatt_deploy/flops.py)."""

import pytest

from elfatt_deploy.flops import attention_core_flops, model_flops
from elfatt_deploy.models import create_model


def test_attention_core_formulas_by_hand():
    # 9 x 10 grid, C = 48, 3 heads (d = 16), 1 global; local windows 4 x 4 on a 12 x 12 padded grid
    n, c = 90, 48
    lepe = 18 * n * c
    assert attention_core_flops("vanilla", 2, 9, 10, c, 3, 1, 4, 4) == 2 * (4 * n * n * c + lepe)
    assert attention_core_flops("elfatt", 2, 9, 10, c, 3, 1, 4, 4) == 2 * (4 * n * 16 * 16 + 4 * 144 * 16 * 32 + lepe)
    assert attention_core_flops("elfatt", 1, 9, 10, c, 3, 1, 0, 0, lepe=False) == 4 * n * 16 * 16 + 4 * n * n * 32
    with pytest.raises(ValueError, match="kind='flash'"):
        attention_core_flops("flash", 1, 2, 2, 8, 1, 1, 0, 0)


def test_models_differ_only_in_the_attention_core():
    shape = (1, 3, 96, 128)
    elfatt = model_flops(create_model("elfatt_vit_tiny"), shape)
    vanilla = model_flops(create_model("elfatt_vit_tiny", attention="vanilla"), shape)
    assert elfatt["linear_conv"] == vanilla["linear_conv"] > 0
    assert elfatt["total"] == elfatt["linear_conv"] + elfatt["attention_core"]
    tokens, dim, depth = 6 * 8, 192, 12  # ViT-T/16: 48 tokens, 12 layers
    assert vanilla["attention_core"] == depth * (4 * tokens**2 * dim + 18 * tokens * dim)


def test_vit_small_ideal_speedup_grows_with_tokens():
    ideal = [model_flops(create_model("elfatt_vit_small", attention="vanilla"), (1, 3, s, s))["total"]
             / model_flops(create_model("elfatt_vit_small"), (1, 3, s, s))["total"] for s in (224, 1024)]
    assert 1.0 < ideal[0] < 1.1 and 2.5 < ideal[1] < 2.9
