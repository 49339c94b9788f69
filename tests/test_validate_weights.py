"""validate checks the weights that are in the file: export records how they were made (checkpoint path +
sha256, or the seed), validate rebuilds exactly those, refuses a checkpoint with another hash, and keeps the
input seed (--seed) apart from the weight seed (--weight-seed)."""

import json
import shutil

import pytest
from safetensors.torch import save_file

from elfatt_deploy.cli import main
from elfatt_deploy.export.metadata import read_metadata
from elfatt_deploy.export.model_loading import file_sha256
from elfatt_deploy.models import create_model

SMALL = ["--shapes", "1x3x48x80", "--samples", "1"]


def _recipe(tmp_path, name, checkpoint=""):
    path = tmp_path / f"{name}.toml"
    path.write_text(f'model = "elfatt_vit_tiny"\ncheckpoint = "{checkpoint}"\ndynamic = true\n'
                    'min_shape = "1x3x32x32"\nopt_shape = "1x3x48x80"\nmax_shape = "2x3x128x128"\n'
                    "[model_config]\ndepth = 1\nnum_classes = 10\n")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("weights")
    out = {}
    assert main(["export", "--recipe", str(_recipe(tmp, "seed")), "--weight-seed", "3",
                 "-o", str(tmp / "seed3.onnx")]) == 0
    out["seed3"] = tmp / "seed3.onnx"
    trained = create_model("elfatt_vit_tiny", depth=1, num_classes=10)
    save_file(trained.state_dict(), str(tmp / "trained.safetensors"))
    out["checkpoint"] = tmp / "trained.safetensors"
    assert main(["export", "--recipe", str(_recipe(tmp, "ckpt", "trained.safetensors")),
                 "-o", str(tmp / "trained.onnx")]) == 0
    out["trained"] = tmp / "trained.onnx"
    out["dir"] = tmp
    return out


def test_export_records_the_seed_and_validate_rebuilds_it(files, capsys):
    weights = json.loads(read_metadata(str(files["seed3"]))["weights"])
    assert weights == {"source": "random", "seed": 3}
    capsys.readouterr()
    assert main(["validate", str(files["seed3"]), *SMALL]) == 0  # before: FAIL, rel L2 ~1.5 (seed 0 weights)
    out = capsys.readouterr().out
    assert "weights: random, seed 3 (as recorded in the file)" in out and "PASS" in out


def test_the_input_seed_does_not_change_the_weights(files, capsys):
    assert main(["validate", str(files["seed3"]), *SMALL, "--seed", "7"]) == 0
    assert "inputs: seed 7" in capsys.readouterr().out


def test_other_weights_fail_and_the_message_says_why(files, capsys):
    assert main(["validate", str(files["seed3"]), *SMALL, "--weight-seed", "0"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert "they usually mean the two sides run different weights" in out and "--weight-seed gave" in out


def test_a_checkpoint_export_records_path_and_hash_and_validates_without_the_flag(files, capsys):
    weights = json.loads(read_metadata(str(files["trained"]))["weights"])
    assert weights["source"] == "checkpoint" and weights["path"] == str(files["checkpoint"].resolve())
    assert weights["sha256"] == file_sha256(files["checkpoint"])
    capsys.readouterr()
    assert main(["validate", str(files["trained"]), *SMALL]) == 0  # before: validate used random weights
    out = capsys.readouterr().out
    assert f"weights: checkpoint {files['checkpoint'].resolve()}" in out and "PASS" in out
    assert main(["validate", str(files["trained"]), *SMALL, "--checkpoint", str(files["checkpoint"])]) == 0


def test_a_checkpoint_with_another_hash_is_refused(files, tmp_path, capsys):
    other = tmp_path / "other.safetensors"
    save_file(create_model("elfatt_vit_tiny", depth=1, num_classes=10).state_dict(), str(other))
    assert main(["validate", str(files["trained"]), *SMALL, "--checkpoint", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint {other} has sha256 {file_sha256(other)[:16]}" in err
    assert f"exported from {files['checkpoint'].resolve()} with sha256 {file_sha256(files['checkpoint'])[:16]}" in err
    assert main(["validate", str(files["seed3"]), *SMALL, "--checkpoint", str(other)]) == 2
    assert "was exported with random weights (random, seed 3), not from a checkpoint" in capsys.readouterr().err


def test_a_moved_checkpoint_is_named(files, tmp_path, capsys):
    onnx_copy = tmp_path / "trained.onnx"
    shutil.copy(files["trained"], onnx_copy)
    moved = files["dir"] / "moved.safetensors"
    shutil.move(files["checkpoint"], moved)
    try:
        assert main(["validate", str(onnx_copy), *SMALL]) == 2
        err = capsys.readouterr().err
        assert f"was exported from the checkpoint {files['checkpoint'].resolve()}, which is not there" in err
        assert "pass --checkpoint PATH" in err
        assert main(["validate", str(onnx_copy), *SMALL, "--checkpoint", str(moved)]) == 0  # same bytes: same hash
    finally:
        shutil.move(moved, files["checkpoint"])


def test_seed_and_checkpoint_contradict(files, capsys):
    assert main(["validate", str(files["trained"]), *SMALL, "--checkpoint", str(files["checkpoint"]),
                 "--weight-seed", "1"]) == 2
    assert "--checkpoint and --weight-seed contradict" in capsys.readouterr().err
    assert main(["export", "--model", "elfatt_vit_tiny", "--checkpoint", str(files["checkpoint"]), "--weight-seed", "1",
                 "-o", str(files["dir"] / "x.onnx")]) == 2
    assert "contradict each other" in capsys.readouterr().err


def test_a_file_without_a_weights_record_says_what_it_assumes(files, tmp_path, capsys):
    import onnx

    proto = onnx.load(str(files["seed3"]))
    kept = [p for p in proto.metadata_props if p.key != "elfatt.weights"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(tmp_path / "old.onnx"))
    assert main(["validate", str(tmp_path / "old.onnx"), *SMALL]) == 1  # seed 0 assumed: the file has seed 3
    captured = capsys.readouterr()
    assert "note: the file records no weights: assuming the random weights" in captured.err
    assert "the file records no weights, so the PyTorch side assumed random weights (seed 0)" in captured.out
    assert main(["validate", str(tmp_path / "old.onnx"), *SMALL, "--weight-seed", "3"]) == 0


@pytest.mark.parametrize("seed", ["zero", -1, 2**63, True, 1.5])
def test_a_recorded_seed_export_never_writes_is_named(files, tmp_path, capsys, seed):
    import onnx

    proto = onnx.load(str(files["seed3"]))
    for prop in proto.metadata_props:
        if prop.key == "elfatt.weights":
            prop.value = json.dumps({"source": "random", "seed": seed})
    onnx.save(proto, str(tmp_path / "edited.onnx"))
    assert main(["validate", str(tmp_path / "edited.onnx"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert f"records the weight seed {seed!r}" in err and "--weight-seed N" in err, err
    assert main(["validate", str(tmp_path / "edited.onnx"), *SMALL, "--weight-seed", "3"]) == 0  # the way out works
