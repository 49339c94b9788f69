import pytest

from elfatt_deploy.engine.profiles import Profile, check_profile_against_input, make_profile, parse_profile_spec, resolve_profile


def test_parse_full_spec_any_order(rng):
    b = int(rng.integers(2, 9))
    p = parse_profile_spec(f"max:{b}x3x512x512, min:1x3x224x224,opt:{b}x3x224x256")
    assert p == Profile((1, 3, 224, 224), (b, 3, 224, 256), (b, 3, 512, 512))
    assert not p.is_static and p.contains((b, 3, 300, 300)) and not p.contains((b + 1, 3, 300, 300))
    assert Profile.from_dict(p.to_dict()) == p


def test_single_shape_is_static():
    p = parse_profile_spec("2x3x200x264")
    assert p.is_static and p.opt == (2, 3, 200, 264) and p.describe() == "2x3x200x264"


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("min:1x3x224x224,opt:1x3x224x224", "lacks max"),
    ("min:1x3x224x224,min:1x3x224x224,opt:1x3x224x224,max:1x3x224x224", "twice"),
    ("low:1x3x224x224", "not min:SHAPE"),
    ("min:1x3x224,opt:1x3x224x224,max:1x3x224x224", "4 dimensions"),
    ("min:1x4x224x224,opt:1x4x224x224,max:1x4x224x224", "4 channels"),
    ("min:1x3x224x224,opt:1x3x100x224,max:1x3x512x512", "dimension H must satisfy min <= opt <= max"),
    ("min:1x3x224x224,opt:1x3x224x224,max:1x3x224xabc", "'abc'"),
    ("0x3x224x224", "zero dimension"),
])
def test_bad_specs(text, match):
    with pytest.raises(ValueError, match=match):
        parse_profile_spec(text)


def test_against_onnx_input():
    p = make_profile("1x3x224x224", "2x3x224x224", "4x3x224x224")
    check_profile_against_input(p, "images", ("batch", 3, 224, 224))
    with pytest.raises(ValueError, match="static H=256"):
        check_profile_against_input(p, "images", ("batch", 3, 256, 224))
    with pytest.raises(ValueError, match="rank 3"):
        check_profile_against_input(p, "images", ("batch", 3, 224))
    with pytest.raises(ValueError, match="1 channels"):
        check_profile_against_input(p, "images", ("batch", 1, "h", "w"))


class _Recipe:
    min_shape, opt_shape, max_shape = (1, 3, 224, 224), "1x3x320x320", [2, 3, 448, 448]


def test_resolve_order():
    dyn = ("batch", 3, "height", "width")
    assert resolve_profile("x", dyn, shapes="1x3x64x64").is_static
    assert resolve_profile("x", dyn, recipe=_Recipe()).max == (2, 3, 448, 448)
    assert resolve_profile("x", (1, 3, 224, 224)) == Profile(*[(1, 3, 224, 224)] * 3)
    with pytest.raises(ValueError, match="dynamic dimensions.*--shapes"):
        resolve_profile("x", dyn)
    with pytest.raises(ValueError, match="static N=1"):
        resolve_profile("x", (1, 3, "h", "w"), shapes="min:1x3x64x64,opt:2x3x64x64,max:2x3x64x64")
