"""Error types shared across the toolkit."""


class ToolkitError(RuntimeError):
    """A failure of the environment or of a tool the toolkit drives (a plugin that does not load,
    an engine TensorRT cannot build, a CUDA extension that does not compile). The message says
    what to do; the CLI prints it without a traceback and exits 1."""
