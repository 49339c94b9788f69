"""Model settings of the wrong type or size are refused with the setting named, before any module is built
(create_model and a recipe's [model_config]), instead of being kept silently, crashing deep in torch, or hanging."""

import math
import time

import pytest
import torch

from elfatt_deploy.export.recipes import load_recipe
from elfatt_deploy.models import create_model
from elfatt_deploy.models.registry import MAX_BLOCKS


def _recipe(tmp_path, line):
    path = tmp_path / "r.toml"
    path.write_text(f'model = "elfatt_vit_micro"\nopt_shape = "1x3x112x112"\n[model_config]\n{line}\n')
    return path


@pytest.mark.parametrize("value", ["no", "false", 0, 1, None])
def test_lepe_must_be_a_boolean(value):
    """lepe = "no" kept LePE (a non-empty string is true) without a word."""
    with pytest.raises(ValueError, match=r"lepe = .* must be true or false"):
        create_model("elfatt_vit_micro", lepe=value)


def test_lepe_string_in_a_recipe_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[model_config\] lepe = 'no' must be true or false"):
        load_recipe(_recipe(tmp_path, 'lepe = "no"'))
    assert create_model("elfatt_vit_micro", lepe=False).blocks[0].attn.lepe is None


@pytest.mark.parametrize("value", [-1.0, 0.0, 0, math.inf, -math.inf, math.nan, "4", True, None, [4.0], 1j])
def test_mlp_ratio_must_be_a_finite_positive_number(value):
    with pytest.raises(ValueError, match=r"mlp_ratio = .* must be a finite number > 0"):
        create_model("elfatt_vit_micro", mlp_ratio=value)


def test_mlp_ratio_that_leaves_no_hidden_unit_is_refused():
    with pytest.raises(ValueError, match=r"mlp_ratio = 0.001 gives MLPs of int\(96 \* 0.001\) = 0 hidden units"):
        create_model("elfatt_vit_micro", mlp_ratio=0.001)
    with pytest.raises(ValueError, match=r"int\(32 \* 0.01\) = 0 hidden units"):
        create_model("elfatt_cswin_micro", mlp_ratio=0.01)
    model = create_model("elfatt_vit_micro", mlp_ratio=2)  # an integer ratio is fine
    assert model.blocks[0].mlp.fc1.out_features == 192


def test_an_mlp_ratio_beyond_any_tensor_size_is_named():
    """1e300 crashed inside torch with a C++ stack dump (a size beyond int64)."""
    with pytest.raises(ValueError, match=r"mlp_ratio = 1e\+300 gives MLPs of more than 2\*\*31 hidden units"):
        create_model("elfatt_vit_micro", mlp_ratio=1e300)


@pytest.mark.parametrize("setting", ["mlp_ratio = 1e7", "embed_dim = 1000000"])
def test_weights_that_cannot_fit_are_an_environment_error(tmp_path, capsys, setting):
    """The allocator's refusal is exit 3 with one line (cli's out-of-memory mapping), not an internal error."""
    from elfatt_deploy.cli import main

    assert main(["export", "--recipe", str(_recipe(tmp_path, setting)), "-o", str(tmp_path / "m.onnx")]) == 3
    err = capsys.readouterr().err
    assert "out of memory" in err and "internal error" not in err and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("name,kwargs", [("elfatt_vit_micro", dict(depth=1_000_000)),
                                         ("elfatt_vit_micro", dict(depth=2 ** 40)),
                                         ("elfatt_cswin_micro", dict(depths=[1, 1, 10 ** 6, 1]))])
def test_depths_beyond_the_block_limit_are_refused_at_once(name, kwargs):
    """depth = 1000000 built blocks for an hour (2**40: forever)."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"more than the {MAX_BLOCKS} transformer blocks"):
        create_model(name, **kwargs)
    assert time.perf_counter() - start < 2


def test_depth_in_a_recipe_is_refused_at_load(tmp_path):
    with pytest.raises(ValueError, match=r"\[model_config\] depth = 1000000 is more than the 1000 transformer blocks"):
        load_recipe(_recipe(tmp_path, "depth = 1000000"))


@pytest.mark.parametrize("value", [1, 4, "3", 3.0])
def test_in_chans_other_than_3_is_refused(tmp_path, value):
    """export traced 3 channels into a 1-channel model: exit 4."""
    with pytest.raises(ValueError, match=r"in_chans = .* is not supported: .* 3-channel \(RGB\)"):
        create_model("elfatt_vit_micro", in_chans=value)
    with pytest.raises(ValueError, match=r"\[model_config\] in_chans = 1 is not supported"):
        load_recipe(_recipe(tmp_path, "in_chans = 1"))
    assert create_model("elfatt_vit_micro", in_chans=3).in_chans == 3


@pytest.mark.parametrize("value", [["a"], {"a": 1}, 3, None])
def test_a_model_name_that_is_no_string_is_named(value):
    with pytest.raises(ValueError, match=r"the model name must be a string, got .*; available: elfatt_cswin_micro"):
        create_model(value)


def test_cswin_global_heads_must_be_a_list_per_stage():
    with pytest.raises(ValueError, match=r"global_heads = 5 must be a list with one count of global heads per stage"):
        create_model("elfatt_cswin_micro", global_heads=5)
    with pytest.raises(ValueError, match="one count per stage"):
        create_model("elfatt_cswin_micro", global_heads=[1, 1])
    model = create_model("elfatt_cswin_micro", global_heads=[0, 1, 2, 4])
    assert model.stages[3][0].attn.attrs.global_heads == 4


@pytest.mark.parametrize("value", [True, "2", [1], -1, 1.0])
def test_vit_global_heads_must_be_a_count(value):
    with pytest.raises(ValueError, match=r"global_heads = .* must be an integer >= 0"):
        create_model("elfatt_vit_micro", global_heads=value)


@pytest.mark.parametrize("value", ["flash", 3, None])
def test_attention_kind_is_checked(value):
    with pytest.raises(ValueError, match=r"attention = .* must be one of 'elfatt', 'vanilla'"):
        create_model("elfatt_vit_micro", attention=value)


@pytest.mark.parametrize("value", [(4,), (4, 4, 4), (-1, 4), (4.0, 4), "44", (True, 4)])
def test_window_must_be_a_pair_of_non_negative_integers(value):
    with pytest.raises(ValueError, match=r"window = .* must be a pair \[window_h, window_w\] of integers >= 0.*"
                                         r"0 means the whole axis"):
        create_model("elfatt_vit_micro", window=value)


@pytest.mark.parametrize("window,size", [((0, 4), (112, 112)), ((0, 0), (112, 112)), ((0, 4), (160, 96)),
                                         ((3, 0), (160, 96))])
def test_a_window_of_0_is_the_whole_axis_as_the_op_defines(window, size):
    """docs/op-spec.md: window_h, window_w >= 0, 0 = the whole extent of that axis; the model config refused it."""
    torch.manual_seed(0)
    grid = (math.ceil(size[0] / 16), math.ceil(size[1] / 16))
    whole = tuple(g if w == 0 else w for w, g in zip(window, grid))
    model = create_model("elfatt_vit_micro", window=window).eval()
    same = create_model("elfatt_vit_micro", window=whole).eval()
    same.load_state_dict(model.state_dict())
    assert model.blocks[0].attn.window == window and model.model_config["window"] == list(window)
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        y = model(x)
        assert y.shape == (2, 10) and torch.isfinite(y).all()
        torch.testing.assert_close(y, same(x), rtol=1e-5, atol=1e-6)


def test_window_of_0_in_a_recipe_loads(tmp_path):
    assert load_recipe(_recipe(tmp_path, "window = [0, 0]")).model_config["window"] == [0, 0]


def test_stripes_of_0_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"stripes = .* must be a list of positive integers, one stripe width .*"
                                         r"a stripe of 0 would span the whole grid"):
        create_model("elfatt_cswin_micro", stripes=(1, 0, 4, 2))
