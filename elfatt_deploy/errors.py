"""Error types shared across the toolkit, and the exit code each one maps to in the CLI.

Exit codes of every ``elfatt-deploy`` command (docs/cli.md lists them with the messages):

- 0: done, every check passed;
- 1: a check failed (a parity tolerance or a benchmark threshold was exceeded, or the file under test did not
  run on its backend at one of the inputs: ``BackendRunError``);
- 2: bad input or usage (``InputError``, ``ValueError``, ``FileNotFoundError``, argparse errors);
- 3: the environment lacks something the command needs (``ToolkitError`` and its subclasses:
  TensorRT, OpenVINO, a GPU, the plugin library, a CUDA extension that does not build);
- 4: internal error: an exception the toolkit did not expect (a bug). The CLI prints one line,
  ``internal error: ...``, and how to see the traceback (``--debug`` or ``ELFATT_DEBUG=1``).
"""

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 4


class InputError(ValueError):
    """Bad input from the user (a file, a shape, a flag value). The message names the value and
    says what to do; the CLI prints it without a traceback and exits 2."""


class ToolkitError(RuntimeError):
    """A failure of the environment or of a tool the toolkit drives (a plugin that does not load,
    an engine TensorRT cannot build, a CUDA extension that does not compile). The message says
    what to do; the CLI prints it without a traceback and exits 3."""


class BackendRunError(RuntimeError):
    """The file under test failed to run on its backend at one input (ONNX Runtime, OpenVINO or TensorRT raised
    at inference, e.g. a broadcast that only holds at the calibration size): the check fails, exit 1. The message
    names the backend, the input shape and the backend's first line."""


class MissingDependencyError(ToolkitError):
    """A package, tool or device the command needs is not installed or not present here
    (TensorRT, OpenVINO, a GPU). ``extra`` names the pip extra that installs it, when there is one."""

    def __init__(self, message: str, *, extra: str | None = None):
        super().__init__(message)
        self.extra = extra
