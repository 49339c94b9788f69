"""docs/op-spec.md is a verbatim copy of the project's shared op contract (../shared/design/elfatt-op.md):
the two change only together."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "design" / "elfatt-op.md"


def test_docs_copy_is_the_shared_contract():
    if not SHARED.exists():
        pytest.skip(f"no shared contract at {SHARED} (a checkout outside the workspace)")
    assert (ROOT / "docs" / "op-spec.md").read_text() == SHARED.read_text(), (
        "docs/op-spec.md differs from the shared contract: change both together (project notes go to docs/plugin.md "
        "or docs/export.md)")
