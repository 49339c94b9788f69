"""Deploy recipes (export/*.toml): every shipped recipe loads and says what its name says; bad keys are named."""

import argparse
import re
from pathlib import Path

import pytest

from elfatt_deploy.cli.commands import export as export_command
from elfatt_deploy.export.recipes import RECIPE_KEYS, load_recipe
from elfatt_deploy.models.registry import get_entry

RECIPES = sorted((Path(__file__).resolve().parents[1] / "export").glob("*.toml"))
NAME = re.compile(r"^(?P<model>[a-z0-9_]+)-(?P<precision>fp32|fp16)-(?P<kind>dynamic|static)-(?P<sizes>[0-9-]+)")


def test_one_recipe_per_family_and_precision():
    covered = {(get_entry(load_recipe(p).model).family, load_recipe(p).precision) for p in RECIPES}
    assert covered >= {(f, p) for f in ("vit", "cswin") for p in ("fp32", "fp16")}


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_matches_its_name(path):
    recipe = load_recipe(path)
    match = NAME.match(path.stem)
    assert match, f"{path.name} is not named model-precision-dynamic|static-sizes"
    assert recipe.model == match["model"] and recipe.precision == match["precision"]
    assert recipe.dynamic == (match["kind"] == "dynamic")
    sizes = [int(s) for s in match["sizes"].strip("-").split("-")]
    assert recipe.min_shape[2] == sizes[0] and recipe.max_shape[2] == sizes[-1]
    assert recipe.plugin_only == path.stem.endswith("plugin-only")
    assert recipe.inline == path.stem.endswith("-inline")


def _write(tmp_path, text) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


BASE = 'model = "elfatt_vit_tiny"\nmin_shape = "1x3x224x224"\nopt_shape = "1x3x256x256"\nmax_shape = "2x3x512x512"\n'


def test_unknown_key_is_named_with_the_valid_ones(tmp_path):
    with pytest.raises(ValueError) as info:
        load_recipe(_write(tmp_path, BASE + "precison = 'fp16'\n"))
    assert "unknown key(s) 'precison'" in str(info.value)
    assert "valid keys: " + ", ".join(RECIPE_KEYS) in str(info.value)


@pytest.mark.parametrize("extra, message", [
    ("opset = '18'\n", "opset = '18' must be an integer"),
    ("dynamic = 1\n", "dynamic = 1 must be true or false"),
    ("precision = 'int8'\n", "precision 'int8' is not one of fp32, fp16; an INT8 file is made from an fp32 or fp16 "
                             "export with `elfatt-deploy quantize`"),
    ("[model_config]\ndims = [32, 64]\n", "[model_config] 'dims' is not a setting of elfatt_vit_tiny; its settings: "
                                          "embed_dim, depth, num_heads"),
    ("opset = 13\n", "opset 13 must be an int from 18"),
    ("dynamic = false\n", "dynamic = false but min/opt/max shapes differ"),
])
def test_bad_values(tmp_path, extra, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_recipe(_write(tmp_path, BASE + extra))


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_recipe(tmp_path / "none.toml")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_recipe(_write(tmp_path, "model = \n"))
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        load_recipe(_write(tmp_path, BASE.replace("elfatt_vit_tiny", "vgg")))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        load_recipe(_write(tmp_path, BASE.replace("2x3x512x512", "2x3x128x512")))


def test_checkpoint_is_relative_to_the_recipe(tmp_path):
    recipe = load_recipe(_write(tmp_path, BASE + 'checkpoint = "weights/w.safetensors"\n'))
    assert recipe.checkpoint == str(tmp_path / "weights" / "w.safetensors")


def _export_settings(argv):
    parser = argparse.ArgumentParser()
    export_command.add_arguments(parser)
    return export_command._settings(parser.parse_args(argv + ["-o", "x.onnx"]))


def test_flags_override_the_recipe(tmp_path):
    path = _write(tmp_path, BASE + 'precision = "fp16"\n[model_config]\ndepth = 1\n')
    plain = _export_settings(["--recipe", str(path)])
    assert (plain.precision, plain.plugin_only, plain.opset, plain.model_config) == ("fp16", False, 18, {"depth": 1})
    over = _export_settings(["--recipe", str(path), "--precision", "fp32", "--plugin-only", "--opset", "20",
                             "--model", "elfatt_vit_small", "--input-shape", "1x3x640x320"])
    assert (over.model, over.precision, over.plugin_only, over.opset) == ("elfatt_vit_small", "fp32", True, 20)
    assert over.opt_shape == (1, 3, 640, 320)
    assert over.min_shape == (1, 3, 224, 224) and over.max_shape == (2, 3, 640, 512)  # widened to hold it
    static = _export_settings(["--recipe", str(path), "--no-dynamic", "--input-shape", "1x3x320x320"])
    assert not static.dynamic and static.min_shape == static.max_shape == (1, 3, 320, 320)


def test_flags_without_recipe():
    settings = _export_settings(["--model", "elfatt_cswin_tiny", "--precision", "fp16"])
    assert settings.model == "elfatt_cswin_tiny" and settings.opt_shape == (1, 3, 224, 224) and settings.dynamic
    with pytest.raises(ValueError, match="give --model NAME or --recipe FILE"):
        _export_settings([])


def test_a_dynamic_recipe_without_min_and_max_exports_and_build_asks_for_shapes(tmp_path):
    """The ONNX export needs only the traced shape; the profile is build's business, which then asks for --shapes."""
    from elfatt_deploy.engine.profiles import resolve_profile

    path = _write(tmp_path, BASE.replace('min_shape = "1x3x224x224"\n', "").replace('max_shape = "2x3x512x512"\n', ""))
    recipe = load_recipe(path)
    assert recipe.dynamic and recipe.opt_shape == (1, 3, 256, 256) and recipe.min_shape is recipe.max_shape is None
    settings = _export_settings(["--recipe", str(path), "--input-shape", "2x3x320x224"])
    assert settings.opt_shape == (2, 3, 320, 224) and settings.min_shape is settings.max_shape is None
    with pytest.raises(ValueError, match="give the optimization profile with --shapes"):
        resolve_profile("input", ["batch", 3, "height", "width"], recipe=recipe)
    assert resolve_profile("input", ["batch", 3, "height", "width"], recipe=recipe,
                           shapes="min:1x3x224x224,opt:1x3x256x256,max:2x3x512x512").max == (2, 3, 512, 512)
    one_sided = load_recipe(_write(tmp_path, BASE.replace('max_shape = "2x3x512x512"\n', "")))
    assert one_sided.min_shape == (1, 3, 224, 224) and one_sided.max_shape is None
    with pytest.raises(ValueError, match="min <= opt <= max"):  # what is there is still checked against opt
        load_recipe(_write(tmp_path, BASE.replace("1x3x224x224", "1x3x300x300").replace('max_shape = "2x3x512x512"\n', "")))


def test_a_recipe_without_opt_shape_takes_the_input_shape_flag(tmp_path):
    path = _write(tmp_path, BASE.replace('opt_shape = "1x3x256x256"\n', ""))
    with pytest.raises(ValueError, match=r"has no opt_shape .*\(export --input-shape, build --shapes\)"):
        load_recipe(path)
    settings = _export_settings(["--recipe", str(path), "--input-shape", "1x3x320x288"])
    assert settings.opt_shape == (1, 3, 320, 288)
    assert settings.min_shape == (1, 3, 224, 224) and settings.max_shape == (2, 3, 512, 512)
    static = load_recipe(_write(tmp_path, 'model = "elfatt_vit_tiny"\ndynamic = false\n'), opt_shape=(1, 3, 96, 64))
    assert static.min_shape == static.opt_shape == static.max_shape == (1, 3, 96, 64)


def test_build_with_such_a_recipe_takes_the_opt_shape_of_its_shapes_flag(tmp_path):
    """`build --recipe R --shapes min:...,opt:...,max:...` with a recipe without opt_shape: --shapes gives the
    profile, so its opt shape stands in for the recipe's (as export's --input-shape does)."""
    from test_engine_onnx_fixture import elfatt_model, save

    from elfatt_deploy.engine.builder import BuildOptions, prepare_build

    recipe = _write(tmp_path, BASE.replace('opt_shape = "1x3x256x256"\n', ""))
    onnx_path = save(elfatt_model(), tmp_path / "m.onnx")
    options = dict(onnx_path=onnx_path, output=tmp_path / "m.engine", recipe=str(recipe), use_plugin=False)
    plan = prepare_build(BuildOptions(**options, shapes="min:1x3x224x224,opt:1x3x288x320,max:2x3x512x512"))
    assert (plan.profile.min, plan.profile.opt, plan.profile.max) == ((1, 3, 224, 224), (1, 3, 288, 320), (2, 3, 512, 512))
    with pytest.raises(ValueError, match="has no opt_shape"):
        prepare_build(BuildOptions(**options))


def test_a_recipe_with_a_byte_order_mark_loads(tmp_path):
    """Some Windows editors start UTF-8 files with a BOM, which tomllib refuses as 'Invalid statement'."""
    path = tmp_path / "bom.toml"
    path.write_bytes("\ufeffmodel = \"elfatt_vit_tiny\"\nopt_shape = \"1x3x64x64\"\n".encode("utf-8"))
    assert load_recipe(path).model == "elfatt_vit_tiny"


@pytest.mark.parametrize("opt, message", [
    ("1x3x0x224", "opt shape 1x3x0x224 has a zero dimension"),
    ("1x3x224", "opt shape 1x3x224 must have 4 dimensions"),
])
def test_a_bad_opt_shape_alone_is_named_as_opt(tmp_path, opt, message):
    """A recipe with only opt_shape: its shape stands in for min and max, and the message names opt (not min,
    which the user never wrote)."""
    path = tmp_path / "r.toml"
    path.write_text(f'model = "elfatt_vit_tiny"\nopt_shape = "{opt}"\n')
    with pytest.raises(ValueError, match=re.escape(message)):
        load_recipe(path)
