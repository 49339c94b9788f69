"""load_checkpoint: .pt/.pth (weights_only) and .safetensors, with named mismatches."""

import pickle

import pytest
import torch

from elfatt_deploy import create_model, load_checkpoint


def tiny(**kw):
    return create_model("elfatt_vit_tiny", depth=2, **kw).eval()


def same_output(a, b):
    x = torch.randn(1, 3, 48, 64)
    with torch.inference_mode():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_torch_round_trip(tmp_path, suffix):
    src, dst = tiny(), tiny()
    assert not same_output(src, dst)
    torch.save(src.state_dict(), tmp_path / f"w{suffix}")
    result = load_checkpoint(dst, tmp_path / f"w{suffix}")
    assert result.ok and same_output(src, dst)


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    src, dst = tiny(), tiny()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    assert load_checkpoint(dst, tmp_path / "w.safetensors").ok
    assert same_output(src, dst)


def test_nested_and_ddp_prefixed_state_dicts(tmp_path):
    src, dst = tiny(), tiny()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "c.pth")
    assert load_checkpoint(dst, tmp_path / "c.pth").ok and same_output(src, dst)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = tiny().state_dict()
    state.pop("head.weight")
    state["extra.thing"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"missing keys 1 \('head.weight'\), unexpected keys 1 \('extra.thing'\)"):
        load_checkpoint(tiny(), tmp_path / "w.pt")
    with pytest.warns(UserWarning, match="head.weight"):
        result = load_checkpoint(tiny(), tmp_path / "w.pt", strict=False)
    assert result.missing_keys == ["head.weight"] and result.unexpected_keys == ["extra.thing"]


def test_shape_mismatch_names_the_key(tmp_path):
    torch.save(tiny(num_classes=10).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"key 'head.weight' has shape \[10, 192\] but the model expects \[1000, 192\]; "
                                         r"the checkpoint's classifier has 10 classes: pass --num-classes 10"):
        load_checkpoint(tiny(), tmp_path / "w.pt", strict=False)


@pytest.mark.parametrize("prefix", ["model.", "backbone.", "_orig_mod.", "module.model."])
def test_a_prefix_every_key_has_is_stripped(tmp_path, prefix):
    src, dst = tiny(), tiny()
    torch.save({prefix + k: v for k, v in src.state_dict().items()}, tmp_path / "w.pt")
    assert load_checkpoint(dst, tmp_path / "w.pt").ok and same_output(src, dst)


def test_a_mismatch_message_is_short_and_names_the_prefix_to_strip(tmp_path):
    """A checkpoint whose keys sit under a prefix next to other keys: a few keys and the prefix, not the full list."""
    state = {f"encoder.{k}": v for k, v in tiny().state_dict().items()}
    state["decoder.weight"] = torch.zeros(1)  # so the prefix is not common to every key
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ValueError) as info:
        load_checkpoint(tiny(), tmp_path / "w.pt")
    message = str(info.value)
    assert len(message) < 1200, len(message)
    count = len(tiny().state_dict())
    assert f"missing keys {count} (" in message and f"and {count - 5} more" in message
    assert f"{count} unexpected keys are model keys under the prefix 'encoder.'" in message
    assert "strict=False" not in message.split("(In Python")[0]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(ValueError, match="weights_only=True|not a readable PyTorch checkpoint"):
        load_checkpoint(tiny(), tmp_path / "evil.pt")
    assert "pwned" not in capsys.readouterr().out


def test_training_checkpoint_with_python_objects_gets_one_line(tmp_path):
    """A training checkpoint with an argparse.Namespace beside the weights: one line that names the object and
    says how to re-save the weights; no ANSI escapes, no torch.load essay. The file's code never runs."""
    import argparse

    torch.save({"state_dict": tiny().state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "train.pt")
    with pytest.raises(ValueError) as info:
        load_checkpoint(tiny(), tmp_path / "train.pt")
    message = str(info.value)
    assert "argparse.Namespace" in message and "weights_only=False" in message and "state_dict" in message
    assert "\n" not in message and "\x1b" not in message, message
    assert len(message.replace(str(tmp_path / "train.pt"), "P")) < 400, message


@pytest.mark.parametrize("content, hint", [
    (b"xxxxx", "it holds text, starting 'xxxxx'"),
    (b"hello\nworld\n", "it holds text, starting 'hello' (torch.load: KeyError "),
    (b"PK\x03\x04garbage", "a zip archive that is not a torch.save file"),
    (b"", "the file is empty"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n", "a Git LFS pointer; run git lfs pull"),
], ids=["text", "text-keyerror", "broken-zip", "empty", "lfs-pointer"])
def test_file_that_is_no_checkpoint_says_so(tmp_path, content, hint):
    (tmp_path / "junk.pt").write_bytes(content)
    with pytest.raises(ValueError, match="is not a readable PyTorch checkpoint") as info:
        load_checkpoint(tiny(), tmp_path / "junk.pt")
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)
    assert hint in str(info.value), str(info.value)


def test_onnx_file_given_as_checkpoint_is_named(tmp_path):
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"it looks like an ONNX model\?"):
        load_checkpoint(tiny(), tmp_path / "model.pt")


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tiny(), tmp_path / "none.pt")
    (tmp_path / "w.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable .safetensors file"):
        load_checkpoint(tiny(), tmp_path / "w.safetensors")
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match="suffix '.ckpt'"):
        load_checkpoint(tiny(), tmp_path / "w.ckpt")
