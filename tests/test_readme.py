"""The README's code blocks are true: its Python blocks run and print what their comments say, and every
``elfatt-deploy`` command line in its shell blocks parses with the real CLI parser."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from elfatt_deploy.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def _expected_prints(block: str) -> list[str]:
    """The ``# ...`` comment after each ``print(...)`` line: what that line must print."""
    return [line.split("#", 1)[1].strip() for line in block.splitlines()
            if line.lstrip().startswith("print(") and "#" in line]


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_block_runs_and_prints_its_comments(index):
    block = _blocks("python")[index]
    expected = _expected_prints(block)
    assert expected, "a README Python block should show its output in comments"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": "readme"})
    assert stdout.getvalue().splitlines() == expected


def _command_lines() -> list[str]:
    lines = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("elfatt-deploy "):
                    lines.append(part)
    return lines


def test_readme_has_command_lines():
    assert len(_command_lines()) >= 8


@pytest.mark.parametrize("line", _command_lines())
def test_command_line_parses(line):
    args = shlex.split(line)[1:]
    parsed = build_parser().parse_args(args)  # argparse exits (SystemExit 2) on an unknown command or flag
    assert parsed.command == args[0]


def test_quick_start_outputs_are_ignored_by_git():
    import shutil
    import subprocess

    root = README.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    outputs = []
    for line in _command_lines():
        args = shlex.split(line)
        outputs += [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-o", "--output")]
    assert "vit_tiny.onnx" in outputs and any(o.endswith(".engine") for o in outputs)
    for name in outputs + [o + ".json" for o in outputs if o.endswith(".engine")]:
        done = subprocess.run(["git", "check-ignore", "-q", name], cwd=root)
        assert done.returncode == 0, f"{name} (a README command's output) is not ignored by .gitignore"
