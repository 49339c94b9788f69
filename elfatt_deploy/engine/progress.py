"""Build progress: a ``trt.IProgressMonitor`` that drives one tqdm bar per build phase.

The class is made on demand because its base class lives in TensorRT; on a
TensorRT without IProgressMonitor :func:`make_progress_monitor` returns None.
"""

from __future__ import annotations

import sys
import threading


def make_progress_monitor(trt, *, enabled: bool = True, file=None):
    """A progress monitor instance for ``config.progress_monitor``, or None when unavailable/disabled."""
    base = getattr(trt, "IProgressMonitor", None)
    if not enabled or base is None:
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415

    stream = file or sys.stderr

    class TqdmProgressMonitor(base):
        """One tqdm bar per active phase, nested under its parent; Ctrl-C cancels the build.

        TensorRT calls a progress monitor from several internal threads (NvInfer.h: "must be
        thread-safe"), so every callback takes a lock; the pybind trampoline must be initialised
        with ``base.__init__(self)``.
        """

        def __init__(self):
            base.__init__(self)
            self._bars = {}
            self._cancelled = False
            self._lock = threading.Lock()

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                with self._lock:
                    depth = len(self._bars)
                    self._bars[phase_name] = tqdm(
                        total=max(int(num_steps), 0) or None, desc=("  " * depth) + str(phase_name),
                        position=depth, leave=depth == 0, file=stream, dynamic_ncols=True, disable=None,
                    )
            except KeyboardInterrupt:
                self._cancelled = True

        def step_complete(self, phase_name, step):
            try:
                with self._lock:
                    bar = self._bars.get(phase_name)
                    if bar is not None:
                        bar.n = int(step) + 1
                        bar.refresh()
                return not self._cancelled
            except KeyboardInterrupt:
                self._cancelled = True
                return False

        def phase_finish(self, phase_name):
            try:
                with self._lock:
                    bar = self._bars.pop(phase_name, None)
                    if bar is not None:
                        if bar.total:
                            bar.n = bar.total
                        bar.close()
            except KeyboardInterrupt:
                self._cancelled = True

        @property
        def cancelled(self) -> bool:
            return self._cancelled

    return TqdmProgressMonitor()
