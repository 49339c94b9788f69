"""Too old onnx / polygraphy: one line naming the version and the upgrade, exit 3 (not a traceback,
not a hang at exit, not an error blamed on the model)."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest

from elfatt_deploy import cli
from elfatt_deploy.errors import MissingDependencyError
from elfatt_deploy.export import onnx_schema

REPO = Path(__file__).resolve().parents[1]


def _pyproject_minimum(package: str) -> str:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(rf'"{package}>=([0-9.]+)"', text)
    assert match, f"pyproject.toml declares no minimum for {package}"
    return match.group(1)


def test_the_minimum_onnx_is_the_declared_one():
    assert _pyproject_minimum("onnx") == ".".join(map(str, onnx_schema.MIN_ONNX))


@pytest.mark.parametrize("version", ["1.17.0", "1.22.0", "1.20.1rc1"])
def test_too_old_onnx_is_named(monkeypatch, version):
    monkeypatch.setattr(onnx, "__version__", version)
    with pytest.raises(MissingDependencyError, match=rf"onnx {re.escape(version)} is too old.*onnx>=1.23"):
        onnx_schema.register_schema()


def test_current_onnx_passes(monkeypatch):
    monkeypatch.setattr(onnx, "__version__", "1.23.0")
    onnx_schema.register_schema()  # no error


def test_too_old_polygraphy_is_exit_3(monkeypatch, capsys, tmp_path):
    from polygraphy.logger import G_LOGGER

    assert _pyproject_minimum("polygraphy") == "0.49.14"
    monkeypatch.delattr(type(G_LOGGER), "use_python_logging_system", raising=False)
    monkeypatch.delattr(G_LOGGER, "use_python_logging_system", raising=False)
    if hasattr(G_LOGGER, "use_python_logging_system"):
        pytest.skip("cannot hide use_python_logging_system on this polygraphy")
    code = cli.main(["models"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "polygraphy" in err and "0.49.14" in err and "Traceback" not in err
