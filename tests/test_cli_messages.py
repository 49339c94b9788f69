"""The smaller things a new user meets (issue 14, item 7): --num-classes, the minimum traced size, prefixed
checkpoints, flag names in messages, help on every flag, library logs on stderr, progress on stderr."""

import re

import pytest
import torch
from safetensors.torch import save_file

from elfatt_deploy.cli import build_parser, main
from elfatt_deploy.models import create_model

ANSI = re.compile(r"\x1b\[")


def test_every_flag_of_every_command_has_help():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    missing = [f"{name} {action.option_strings or action.dest}" for name, sub in commands.items()
               for action in sub._actions  # noqa: SLF001
               if not action.help and action.dest != "help"]
    assert not missing, missing


@pytest.mark.parametrize("argv, flag", [
    (["validate", "x.onnx", "--seed", "-5"], "--seed"),
    (["validate", "x.onnx", "--weight-seed", "-1"], "--weight-seed"),
    (["export", "--model", "elfatt_vit_tiny", "--seed", "-5", "-o", "x.onnx"], "--weight-seed/--seed"),
    (["forward", "--model", "elfatt_vit_tiny", "--seed", "-5"], "--seed"),
    (["export", "--model", "elfatt_vit_tiny", "--num-classes", "ten", "-o", "x.onnx"], "--num-classes"),
])
def test_a_bad_seed_names_the_flag(capsys, argv, flag):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err


def test_a_checkpoint_with_another_class_count_says_to_pass_num_classes(tmp_path, capsys):
    save_file(create_model("elfatt_vit_tiny", num_classes=10).state_dict(), str(tmp_path / "w10.safetensors"))
    assert main(["forward", "--model", "elfatt_vit_tiny", "--checkpoint", str(tmp_path / "w10.safetensors"),
                 "--input-shape", "1x3x32x32"]) == 2
    assert "the checkpoint's classifier has 10 classes: pass --num-classes 10" in capsys.readouterr().err
    assert main(["forward", "--model", "elfatt_vit_tiny", "--checkpoint", str(tmp_path / "w10.safetensors"),
                 "--input-shape", "1x3x32x32", "--num-classes", "10"]) == 0
    assert "-> output 1x10" in capsys.readouterr().out


def test_a_prefixed_checkpoint_loads_and_a_foreign_one_gets_a_short_message(tmp_path, capsys):
    state = create_model("elfatt_vit_tiny").state_dict()
    torch.save({"model": {f"backbone.{k}": v for k, v in state.items()}}, tmp_path / "prefixed.pth")
    assert main(["forward", "--model", "elfatt_vit_tiny", "--checkpoint", str(tmp_path / "prefixed.pth"),
                 "--input-shape", "1x3x32x32"]) == 0
    capsys.readouterr()
    save_file({"encoder.weight": torch.zeros(3), **{f"net.{k}": v for k, v in state.items()}},
              str(tmp_path / "foreign.safetensors"))
    assert main(["forward", "--model", "elfatt_vit_tiny", "--checkpoint", str(tmp_path / "foreign.safetensors"),
                 "--input-shape", "1x3x32x32"]) == 2
    err = capsys.readouterr().err
    assert len(err) < 1500, len(err)  # before: a 10.8 KB key list
    assert "under the prefix 'net.'" in err and "pass strict=False" not in err


def test_the_minimum_traced_size_is_said_up_front(tmp_path, capsys, monkeypatch):
    import elfatt_deploy.export.model_loading as model_loading

    monkeypatch.setattr(model_loading, "build_model", lambda *a, **k: pytest.fail("built the model first"))
    assert main(["export", "--model", "elfatt_vit_tiny", "--input-shape", "1x3x16x24", "-o", str(tmp_path / "a.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--input-shape 1x3x16x24: a dynamic export is traced at a height and width from 32 to 16384" in err
    assert "--no-dynamic" in err and "TorchExportError" not in err and not ANSI.search(err)


def test_exporter_errors_lose_colour_codes_and_name_the_requested_shape():
    from elfatt_deploy.export import exporter

    assert exporter._plain("\x1b[31mError\x1b[0m: guard failed") == "Error: guard failed"


def test_messages_of_an_export_without_recipe_do_not_mention_a_recipe(tmp_path, capsys):
    assert main(["export", "--model", "elfatt_vit_tiny", "--opset", "17", "-o", str(tmp_path / "a.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--opset 17 must be an int from 18 to 21" in err and "recipe" not in err


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An export run through the CLI with --progress (stderr captured by the test using it)."""
    tmp = tmp_path_factory.mktemp("msg")
    recipe = tmp / "r.toml"
    recipe.write_text('model = "elfatt_vit_tiny"\nopt_shape = "1x3x48x80"\nmin_shape = "1x3x32x32"\n'
                      'max_shape = "2x3x128x128"\n[model_config]\ndepth = 1\n')
    return tmp, recipe


def test_export_shows_progress_on_stderr_only(exported, capfd):
    tmp, recipe = exported
    assert main(["export", "--recipe", str(recipe), "-o", str(tmp / "m.onnx"), "--progress"]) == 0
    captured = capfd.readouterr()
    assert "tracing (torch.export)" in captured.err and "writing" in captured.err
    assert captured.out.startswith(f"wrote {tmp / 'm.onnx'}") and len(captured.out.splitlines()) == 1
    assert "[torch.onnx]" not in captured.out + captured.err and not ANSI.search(captured.out)


def test_validate_keeps_library_logs_off_stdout_and_quiet_by_default(exported, capfd):
    tmp, _ = exported
    if not (tmp / "m.onnx").exists():
        pytest.skip("needs the export of test_export_shows_progress_on_stderr_only")
    argv = ["validate", str(tmp / "m.onnx"), "--shapes", "1x3x48x80", "--samples", "1"]
    assert main(argv) == 0
    quiet = capfd.readouterr()
    assert not re.search(r"^\[[IWV!]\]", quiet.out + quiet.err, re.M)  # no Polygraphy lines at all by default
    assert not ANSI.search(quiet.out + quiet.err)
    assert main(argv + ["-v", "--progress"]) == 0
    loud = capfd.readouterr()
    assert not re.search(r"^\[[IWV!]\]", loud.out, re.M)  # stdout: the table only
    assert re.search(r"^\[I\] ", loud.err, re.M)  # -v: Polygraphy's log, on stderr
    assert "validate" in loud.err and "run" in loud.err  # the progress bar
    assert quiet.out.splitlines()[-1] == loud.out.splitlines()[-1]  # same verdict line


def test_the_toolkits_warnings_are_one_line_and_others_keep_pythons_format():
    """docs/cli.md: a skipped image is one warning line, not Python's `path:line: Category: ...` plus source."""
    import warnings

    from elfatt_deploy.cli.logs import configure_library_logs
    from elfatt_deploy.data.image_folder import ImageDecodeWarning

    before = warnings.formatwarning
    restore = configure_library_logs(verbose=False)
    try:
        ours = warnings.formatwarning(ImageDecodeWarning("skipped 1 image(s)"), ImageDecodeWarning, "/x/calib.py", 83)
        theirs = warnings.formatwarning(UserWarning("other"), UserWarning, "/x/lib.py", 7)
    finally:
        restore()
    assert ours == "warning: skipped 1 image(s)\n"
    assert "/x/lib.py:7" in theirs and "UserWarning: other" in theirs
    assert warnings.formatwarning is before
