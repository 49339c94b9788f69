"""Every output path is checked before any work (elfatt_deploy.atomic.check_output_path): a missing or
read-only directory, or a directory given as the file, is exit 2 in well under a second."""

import os
import tempfile
import time

import pytest

from elfatt_deploy.atomic import check_output_path
from elfatt_deploy.cli import main
from elfatt_deploy.errors import InputError
from test_engine_onnx_fixture import elfatt_model, save


def _unwritable(directory) -> bool:
    try:
        fd, probe = tempfile.mkstemp(dir=directory)
    except OSError:
        return True
    os.close(fd)
    os.unlink(probe)
    return False


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory no new file can be created in: a chmod 0500 directory, or (as root, whom modes do not stop)
    sysfs."""
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        if _unwritable(directory):
            yield directory
        elif os.path.isdir("/sys") and _unwritable("/sys"):
            yield "/sys"
        else:
            pytest.skip("no unwritable directory available here (root on a machine without sysfs)")
    finally:
        directory.chmod(0o700)


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if a command starts building a model, exporting or comparing."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    import elfatt_deploy.export.model_loading as model_loading
    import elfatt_deploy.validation.comparator as comparator
    monkeypatch.setattr(model_loading, "build_model", forbidden)
    monkeypatch.setattr(comparator, "run_parity", forbidden)


def test_check_output_path(tmp_path, readonly_dir):
    assert check_output_path(tmp_path / "a.onnx", suffix=".onnx") == tmp_path / "a.onnx"
    with pytest.raises(FileNotFoundError, match=r"--json .*the output directory .*nodir' does not exist; create it"):
        check_output_path(tmp_path / "nodir" / "a.json", what="--json")
    with pytest.raises(InputError, match=r"is a directory; give a file name, e.g. .*output.onnx"):
        check_output_path(tmp_path, what="-o", suffix=".onnx")
    with pytest.raises(InputError, match=r"must end in .onnx, e.g. a.onnx"):
        check_output_path(tmp_path / "a.txt", what="-o", suffix=".onnx")
    with pytest.raises(InputError, match=r"'.*\.onnx' has no name before .onnx; give one, e.g. .*model.onnx$"):
        check_output_path(tmp_path / ".onnx", what="-o", suffix=".onnx", example_name="model.onnx")
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is not a directory"):
        check_output_path(tmp_path / "file" / "a.json")
    with pytest.raises(InputError, match="is not writable"):
        check_output_path(os.path.join(readonly_dir, "r.json"), what="--report")
    with pytest.raises(InputError, match="output path is empty"):
        check_output_path("", what="-o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ro"]  # the probe leaves nothing


def _commands(tmp_path, target):
    onnx_path = save(elfatt_model(), tmp_path / "m.onnx")
    return {
        "export": ["export", "--model", "elfatt_vit_tiny", "-o", target("a.onnx")],
        "validate --report": ["validate", onnx_path, "--report", target("r.json")],
        "bench --json": ["bench", "--backend", "torch", "--model", "elfatt_vit_tiny", "--input-shape", "1x3x32x32",
                         "--json", target("b.json")],
        "doctor --json": ["doctor", "--json", target("d.json")],
    }


@pytest.mark.parametrize("command", ["export", "validate --report", "bench --json", "doctor --json"])
@pytest.mark.parametrize("where", ["missing-dir", "read-only-dir", "is-a-dir"])
def test_commands_refuse_an_unwritable_output_before_any_work(tmp_path, readonly_dir, no_work, capsys, command,
                                                              where):
    if where == "missing-dir":
        target, message = (lambda name: str(tmp_path / "nodir" / name)), "does not exist; create it first"
    elif where == "read-only-dir":
        target, message = (lambda name: os.path.join(readonly_dir, name)), "is not writable"
    else:
        (tmp_path / "out.onnx").mkdir()
        target, message = (lambda name: str(tmp_path / "out.onnx")), "is a directory; give a file name"
    argv = _commands(tmp_path, target)[command]
    start = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    if where == "is-a-dir":  # the suggestion is a file of the kind the flag writes
        example = {"export": "model.onnx", "validate --report": "report.json", "bench --json": "bench.json",
                   "doctor --json": "doctor.json"}[command]
        assert f"e.g. {tmp_path / 'out.onnx' / example}" in err, err
    assert elapsed < 5.0  # refused up front (doctor imports a few libraries first)


def test_an_output_that_is_one_of_the_inputs_is_refused_and_the_input_kept(tmp_path, no_work, capsys):
    """--report / --json / -o naming a file the command reads (the ONNX, the engine, its sidecar, the engine's
    source ONNX) or another of its outputs: exit 2 before any work, and the file is left as it was (written
    atomically, it would have been replaced without a trace)."""
    import numpy as np

    from _serving_fixtures import fake_engine

    onnx_path = save(elfatt_model(), tmp_path / "m.onnx")
    engine, _ = fake_engine(tmp_path / "m.engine", np.random.default_rng(), source_onnx=onnx_path)
    sidecar = f"{engine}.json"
    cases = [
        (["validate", onnx_path, "--report", onnx_path], onnx_path, "is the ONNX file"),
        (["bench", "--backend", "onnxruntime", "--onnx", onnx_path, "--input-shape", "1x3x32x32", "--json",
          onnx_path], onnx_path, "is the ONNX file"),
        (["quantize", onnx_path, "-o", str(tmp_path / "q.onnx"), "--calib", str(tmp_path), "--report", onnx_path],
         onnx_path, "is the ONNX file"),
        (["quantize", onnx_path, "-o", str(tmp_path / "q.onnx"), "--calib", str(tmp_path), "--report",
          str(tmp_path / "q.onnx")], None, "-o and --report are the same file"),
        (["doctor", "--engine", str(engine), "--json", sidecar], sidecar, "is the engine's sidecar"),
        (["doctor", "--engine", str(engine), "--json", str(engine)], str(engine), "is the engine"),
        (["deepstream", str(engine), "-o", sidecar], sidecar, "is the engine's sidecar"),
        (["deepstream", str(engine), "-o", onnx_path], onnx_path, "is the engine's source ONNX"),
        (["build", onnx_path, "-o", str(tmp_path / "b.engine"), "--shapes", "1x3x32x32", "--timing-cache", onnx_path],
         onnx_path, f"--timing-cache {onnx_path!r} is the ONNX file"),
        (["build", onnx_path, "-o", onnx_path, "--shapes", "1x3x32x32"], onnx_path, f"-o {onnx_path!r} is the ONNX file"),
    ]
    for argv, kept, message in cases:
        before = open(kept, "rb").read() if kept else None
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
        if kept:
            assert open(kept, "rb").read() == before, argv
