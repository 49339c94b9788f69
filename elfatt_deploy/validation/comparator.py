"""Runs a backend and PyTorch on the same random inputs through Polygraphy's Comparator.

The inputs are standard-normal images (what a normalized image looks like) at
each requested shape, ``samples`` draws per shape from one seeded generator.
Each output of each draw is compared with metrics.compare_outputs; a draw
passes when its relative L2 error is within the tolerance.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from ..shapes import format_shape
from .metrics import OutputMetrics, compare_outputs


@dataclass
class ParityRow:
    output: str
    shape: tuple
    sample: int
    metrics: OutputMetrics
    passed: bool

    def to_dict(self) -> dict:
        return {"output": self.output, "input_shape": list(self.shape), "sample": self.sample,
                "passed": self.passed, **self.metrics.to_dict()}


@dataclass
class ParityResult:
    reference: str
    backend: str
    rtol_l2: float
    rows: list[ParityRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    def outputs(self) -> list[str]:
        return list(OrderedDict.fromkeys(r.output for r in self.rows))

    def worst(self, output: str) -> ParityRow:
        return max((r for r in self.rows if r.output == output), key=lambda r: r.metrics.rel_l2_error)

    def to_dict(self) -> dict:
        return {"reference": self.reference, "backend": self.backend, "rtol_l2": self.rtol_l2,
                "passed": self.passed, "rows": [r.to_dict() for r in self.rows]}


def random_feeds(input_name: str, shapes: Sequence[Sequence[int]], samples: int, seed: int):
    """``samples`` feed dicts per shape, drawn from one generator seeded with ``seed``."""
    if samples < 1:
        raise ValueError(f"samples={samples} must be >= 1")
    rng = np.random.default_rng(seed)
    feeds = []
    for shape in shapes:
        for sample in range(samples):
            array = rng.standard_normal(tuple(shape)).astype(np.float32)
            feeds.append((tuple(shape), sample, OrderedDict([(input_name, array)])))
    return feeds


@contextlib.contextmanager
def _counted(runners, bar):
    """Advances ``bar`` after every inference of ``runners`` (Polygraphy calls ``infer_impl`` once per feed)."""
    originals = []
    for runner in runners:
        original = runner.infer_impl

        def counted(*args, _original=original, _name=runner.name, **kwargs):
            bar.set_postfix_str(_name, refresh=False)
            out = _original(*args, **kwargs)
            bar.update(1)
            return out

        originals.append((runner, original))
        runner.infer_impl = counted
    try:
        yield
    finally:
        for runner, _ in originals:
            del runner.infer_impl  # back to the class's method


#: Modules whose exceptions at inference mean the file did not run there (not a bug of the toolkit).
BACKEND_MODULES = ("onnxruntime", "openvino", "tensorrt")


@contextlib.contextmanager
def _run_errors_named(runner):
    """An exception the backend's library raises while running a feed becomes a BackendRunError (a failed check,
    exit 1) that names the backend and the input shape, instead of an internal error."""
    from ..errors import BackendRunError

    original = runner.infer_impl

    def guarded(feed_dict, *args, **kwargs):
        try:
            return original(feed_dict, *args, **kwargs)
        except Exception as exc:
            if type(exc).__module__.split(".")[0] not in BACKEND_MODULES:
                raise
            shapes = ", ".join(f"{name} {format_shape(getattr(v, 'shape', ()))}" for name, v in feed_dict.items())
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
            raise BackendRunError(
                f"{runner.name} could not run the file at {shapes}: {lines[0][:400]}. The file does not run at that "
                "size: a tool that rewrote it may have fixed a size it computes (e.g. a quantizer that quantized the "
                "shape arithmetic, docs/quantization.md); re-export or re-quantize it, or validate it at the sizes it "
                "runs at (--shapes)") from None

    had_own = "infer_impl" in vars(runner)  # _counted's wrapper, when a progress bar counts the feeds
    runner.infer_impl = guarded
    try:
        yield
    finally:
        if had_own:
            runner.infer_impl = original
        else:
            del runner.infer_impl  # back to the class's method


def run_parity(reference_runner, backend_runner, *, input_name: str, shapes: Sequence[Sequence[int]],
               samples: int, seed: int, rtol_l2: float, verbose: bool = False,
               progress: Optional[Callable[[int], object]] = None, classifier: bool = True) -> ParityResult:
    """Runs both runners with Polygraphy's Comparator and compares every output of every draw.

    ``classifier=False``: the outputs are features (num_classes 0), so no top-1 agreement is reported.

    ``progress(total)`` returns a tqdm-like bar (a context manager with ``update``) that advances
    after each of the ``total`` inferences.
    """
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    feeds = random_feeds(input_name, shapes, samples, seed)
    runners = [reference_runner, backend_runner]
    bar = progress(len(runners) * len(feeds)) if progress else contextlib.nullcontext()
    with bar, (_counted(runners, bar) if progress else contextlib.nullcontext()), _run_errors_named(backend_runner), \
            G_LOGGER.verbosity(G_LOGGER.INFO if verbose else G_LOGGER.WARNING):
        results = Comparator.run(runners, data_loader=[f for _, _, f in feeds])
    (ref_name, ref_iters), (backend_name, backend_iters) = list(results.items())
    parity = ParityResult(reference=ref_name, backend=backend_name, rtol_l2=rtol_l2)
    for (shape, sample, _), ref_out, backend_out in zip(feeds, ref_iters, backend_iters):
        missing = [n for n in ref_out if n not in backend_out]
        if missing:
            raise ValueError(f"the backend did not return the outputs {missing} (it returned {list(backend_out)}); "
                             "is this file exported from the same model?")
        for name in ref_out:
            try:
                metrics = compare_outputs(backend_out[name], ref_out[name], classifier=classifier)
            except ValueError as exc:
                raise ValueError(f"output {name!r} at input {format_shape(shape)}: {exc}") from None
            passed = metrics.finite and metrics.rel_l2_error <= rtol_l2
            parity.rows.append(ParityRow(name, shape, sample, metrics, passed))
    return parity
