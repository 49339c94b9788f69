"""Single source of the toolkit version (kept equal to pyproject.toml)."""

__version__ = "0.1.0"
#: Version of the ElfattAttention op contract implemented by every binding.
OP_VERSION = "1"
