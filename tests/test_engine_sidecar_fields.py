"""A sidecar whose fields have other types than `build` writes (edited by hand, written by another tool): every
reader refuses it with the field's name, exit 2, instead of a traceback or a config built from nonsense."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from _serving_fixtures import fake_engine, static_plugin_library
from elfatt_deploy.cli import main
from elfatt_deploy.engine.engine_file import EngineFileError, check_sidecar_fields, load_engine


BAD_FIELDS = [
    ("gpu", "x", '"gpu" is "x"'),
    ("plugin", "yes", '"plugin" is "yes"'),
    ("profiles", "x", '"profiles" is "x"'),
    ("io", "x", '"io" is "x"'),
    ("model", "x", '"model" is "x"'),
    ("precision", 5, '"precision" is 5'),
    ("tf32", "yes", '"tf32" is "yes"'),
    ("profiles", [{"min": [0, 3, -1, 5], "opt": [1, 3, 8, 8], "max": [1, 3, 8, 8]}], '"profiles"[0].min'),
    ("profiles", [{"min": [1, 3, 9, 9], "opt": [1, 3, 8, 8], "max": [1, 3, 8, 8]}], "min <= opt <= max"),
    ("profiles", [{"min": [1, 3, 8, 8], "opt": ["a", 3, 8, 8], "max": [1, 3, 8, 8]}], '"profiles"[0].opt'),
]


def _edit_sidecar(engine, key, value):
    side = engine.with_name(engine.name + ".json")
    metadata = json.loads(side.read_text())
    metadata[key] = value
    side.write_text(json.dumps(metadata))


@pytest.mark.parametrize("key,value,message", BAD_FIELDS)
def test_every_reader_names_the_field(tmp_path, key, value, message, capsys):
    engine, _ = fake_engine(tmp_path / "m.engine", np.random.default_rng())
    plugin = static_plugin_library(tmp_path)
    check_sidecar_fields(json.loads(engine.with_name(engine.name + ".json").read_text()), "good")  # as written: fine
    _edit_sidecar(engine, key, value)
    with pytest.raises(EngineFileError, match=re.escape(message) + ".*rebuild the engine with `elfatt-deploy build`"):
        load_engine(engine)
    commands = {
        "doctor": ["doctor", "--engine", str(engine), "--plugin", str(plugin)],
        "triton": ["triton", str(engine), "-o", str(tmp_path / "repo"), "--name", "m", "--plugin", str(plugin)],
        "deepstream": ["deepstream", str(engine), "-o", str(tmp_path / "c.txt"), "--plugin", str(plugin)],
    }
    for name, argv in commands.items():
        code = main(argv)
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert "Traceback" not in text, (name, text)
        if name == "doctor":  # doctor reports the engine's line as failed, with the reason
            assert code != 0 and message in text, (name, text)
        else:
            assert code == 2 and message in text, (name, text)
    assert not (tmp_path / "repo").exists() and not (tmp_path / "c.txt").exists()


@pytest.mark.parametrize("key,value,message", [
    ("profiles", [], 'lists no optimization profile ("profiles" is empty'),
    ("io", [], 'lists no network inputs/outputs ("io" is empty'),
])
def test_a_sidecar_without_profiles_or_io_says_which(tmp_path, key, value, message, capsys):
    engine, _ = fake_engine(tmp_path / "m.engine", np.random.default_rng())
    plugin = static_plugin_library(tmp_path)
    _edit_sidecar(engine, key, value)
    for argv in (["triton", str(engine), "-o", str(tmp_path / "repo"), "--name", "m", "--plugin", str(plugin)],
                 ["deepstream", str(engine), "-o", str(tmp_path / "c.txt"), "--plugin", str(plugin)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "rebuild it with `elfatt-deploy build`" in err, err
    assert not (tmp_path / "repo").exists() and not (tmp_path / "c.txt").exists()


def test_a_sidecar_missing_the_field_says_missing(tmp_path, capsys):
    engine, _ = fake_engine(tmp_path / "m.engine", np.random.default_rng())
    side = engine.with_name(engine.name + ".json")
    metadata = json.loads(side.read_text())
    del metadata["profiles"]
    side.write_text(json.dumps(metadata))
    assert main(["triton", str(engine), "-o", str(tmp_path / "repo"), "--name", "m",
                 "--plugin", str(static_plugin_library(tmp_path))]) == 2
    assert '("profiles" is missing' in capsys.readouterr().err
