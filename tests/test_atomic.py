"""elfatt_deploy.atomic: the one atomic-write helper behind every output file."""

import os
import stat

import pytest

from elfatt_deploy.atomic import atomic_output, atomic_write_bytes, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.json", "{}\n")
    finally:
        os.umask(previous)
    assert path.read_text() == "{}\n"
    assert _mode(path) == 0o644
    assert os.listdir(tmp_path) == ["report.json"]


def test_replacing_a_file_keeps_its_mode(tmp_path):
    path = tmp_path / "model.engine"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and _mode(path) == 0o640


def test_failure_leaves_the_target_and_no_temporary_file(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["plot.png"]


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        atomic_write_text(tmp_path / "no" / "x.json", "")
