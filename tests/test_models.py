"""Models: forward at 224 and at sizes off the window grid, vanilla twins, configs."""

import pytest
import torch

from elfatt_deploy import create_model, list_models
from elfatt_deploy.nn import ElfattAttention

EXPECTED = {"elfatt_vit_tiny", "elfatt_vit_small", "elfatt_vit_base", "elfatt_cswin_tiny"}


def test_registry_lists_the_required_models():
    assert EXPECTED <= set(list_models())


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'vit_huge'.*elfatt_vit_small"):
        create_model("vit_huge")


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("size", [(224, 224), (200, 264)], ids=["224", "200x264"])
def test_forward_shapes_and_finite(name, size):
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.inference_mode():
        y = model(torch.randn(1, 3, *size))
    assert y.shape == (1, 1000)
    assert torch.isfinite(y).all()


def test_vit_heads_and_windows():
    model = create_model("elfatt_vit_small")
    attns = [m for m in model.modules() if isinstance(m, ElfattAttention)]
    assert len(attns) == 12
    assert {(a.attrs.global_heads, a.attrs.local_heads, a.window) for a in attns} == {(3, 3, (7, 7))}


def test_cswin_stripes_alternate_and_stage_maps():
    model = create_model("elfatt_cswin_tiny").eval()
    stage3 = [blk.attn for blk in model.stages[2]]
    assert len(stage3) == 21
    assert [a.window for a in stage3[:3]] == [(7, 0), (0, 7), (7, 0)]
    assert [blk.attn.window for blk in model.stages[1]] == [(2, 0), (0, 2)]
    assert all(a.attrs.global_heads >= 1 for a in model.modules() if isinstance(a, ElfattAttention))
    with torch.inference_mode():
        maps = model.forward_features(torch.randn(2, 3, 200, 264))
    assert [tuple(m.shape[:2]) for m in maps] == [(2, 64), (2, 128), (2, 256), (2, 512)]
    assert [tuple(m.shape[2:]) for m in maps] == [(50, 66), (25, 33), (13, 17), (7, 9)]


@pytest.mark.parametrize("name", ["elfatt_vit_tiny", "elfatt_cswin_tiny"])
def test_vanilla_twin_has_the_same_parameters(name):
    elfatt = create_model(name)
    vanilla = create_model(name, attention="vanilla")
    assert [(k, v.shape) for k, v in elfatt.state_dict().items()] == [(k, v.shape) for k, v in vanilla.state_dict().items()]
    vanilla.load_state_dict(elfatt.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        a, b = elfatt.eval()(x), vanilla.eval()(x)
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_layer_vanilla_matches_explicit_softmax_attention():
    torch.manual_seed(1)
    layer = ElfattAttention(32, 2, attention="vanilla", lepe=False).double()
    x = torch.randn(2, 3, 5, 32, dtype=torch.float64)
    qkv = layer.qkv(x).reshape(2, 15, 3, 2, 16).permute(2, 0, 3, 1, 4)
    attn = (qkv[0] @ qkv[1].transpose(-1, -2) / 4.0).softmax(-1) @ qkv[2]
    expected = layer.proj(attn.transpose(1, 2).reshape(2, 3, 5, 32))
    assert torch.allclose(layer(x), expected, atol=1e-12)


def test_model_config_is_recorded_and_overridable():
    model = create_model("elfatt_vit_tiny", depth=2, window=(4, 4), num_classes=10)
    assert model.model_config["depth"] == 2 and model.model_config["window"] == [4, 4]
    assert model.model_name == "elfatt_vit_tiny"
    assert len(model.blocks) == 2 and model.head.out_features == 10
    with pytest.raises(ValueError, match="'no_such_option' is not a setting of elfatt_vit_tiny; its settings: embed_dim"):
        create_model("elfatt_vit_tiny", no_such_option=1)


@pytest.mark.parametrize("kwargs,message", [
    (dict(dim=30, num_heads=4), "C=30 is not divisible"),
    (dict(dim=32, num_heads=2, global_heads=3), "global_heads=3"),
    (dict(dim=32, num_heads=2, window=(7,)), "must be a pair"),
    (dict(dim=32, num_heads=2, attention="flash"), "attention='flash'"),
])
def test_layer_rejects_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ElfattAttention(**kwargs)


def test_layer_trains(rng):
    layer = ElfattAttention(32, 2, window=(3, 3))
    x = torch.randn(2, 5, 7, 32)
    layer(x).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    assert layer.lepe.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["elfatt_vit_tiny", "elfatt_cswin_tiny"])
def test_any_image_size_from_1x1_works(name):
    """Images are zero-padded to whole patches (ViT) or stem strides (CSWin)."""
    model = create_model(name, num_classes=7).eval()
    with torch.inference_mode():
        for size in [(1, 1), (5, 3), (17, 33)]:
            y = model(torch.randn(1, 3, *size))
            assert y.shape == (1, 7) and torch.isfinite(y).all()


def test_padding_to_whole_patches_is_zero_padding():
    model = create_model("elfatt_vit_tiny", depth=1).eval()
    x = torch.randn(1, 3, 40, 50)
    padded = torch.nn.functional.pad(x, (0, 14, 0, 8))  # 48 x 64
    with torch.inference_mode():
        assert torch.equal(model.forward_features(x), model.forward_features(padded))


@pytest.mark.parametrize("name,setting,value,problem", [
    ("elfatt_vit_tiny", "depth", 0, "must be a positive integer"),
    ("elfatt_vit_tiny", "depth", -1, "must be a positive integer"),
    ("elfatt_vit_tiny", "depth", "1", "must be a positive integer"),
    ("elfatt_vit_tiny", "window", (-1, 7), "must be a pair .*"),
    ("elfatt_cswin_tiny", "depths", (1, 2, 0, 1), "must be a list of positive integers"),
])
def test_size_settings_that_cannot_be_are_refused_with_the_setting_named(name, setting, value, problem):
    """A depth of 0 used to build (and export) a model without attention layers, and validate passed it."""
    from elfatt_deploy.models.registry import create_model

    with pytest.raises(ValueError, match=f"{setting} = .* {problem} \\({name}'s default: "):
        create_model(name, **{setting: value})
