"""Guarded, resumable job runs with results kept in one JSON file (bench/kernels_gpu.py).

Each job runs in its own try block: an exception becomes an "error" row and the run goes on.
The file is rewritten atomically (elfatt_deploy.atomic) after every row, so a run stopped at
any point leaves every finished job; a run resumed on the file skips the rows it has. After
an error the caller's context_alive() decides whether the process can go on (a sticky CUDA
error cannot be recovered in-process: ContextLost, and the caller continues in a new process).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

try:
    from tqdm import tqdm
except ImportError:  # optional
    def tqdm(iterable, **_kwargs):
        return iterable


def log(*parts) -> None:
    """print, flushed at once (the output of a long GPU run must show while it runs)."""
    print(*parts, flush=True)


class ResultsFile:
    """The run's JSON, rewritten atomically (elfatt_deploy.atomic) after every change.

    Rows of a section carry a "key"; has() lets a resumed run skip what is done. ``on_write``
    (tests) is called with the path after every write.
    """

    SECTIONS = ("preflight", "verification", "binding", "cases", "sanitizer")

    def __init__(self, path: Path, schema: str, data: Optional[dict] = None,
                 on_write: Optional[Callable[[Path], None]] = None):
        self.path = Path(path)
        self.schema = schema
        self.data = data if data is not None else {"schema": schema, "status": "running", "started": now()}
        for section in self.SECTIONS:
            self.data.setdefault(section, [])
        self.on_write = on_write
        self._lock = threading.Lock()

    @classmethod
    def resume(cls, path: Path, schema: str, **kwargs) -> "ResultsFile":
        """The file of an earlier run, to go on with (ValueError when it is of another schema)."""
        data = json.loads(Path(path).read_text())
        if data.get("schema") != schema:
            raise ValueError(f"{path}: schema {data.get('schema')!r} is not {schema!r}; start a new run")
        data["status"] = "running"
        return cls(path, schema, data, **kwargs)

    def has(self, section: str, key: str) -> bool:
        return any(row.get("key") == key for row in self.data[section])

    def done(self, section: str, key: str) -> bool:
        """A row that a resumed run keeps (a row skipped at the deadline runs again)."""
        return any(row.get("key") == key and row.get("status") != "skipped" for row in self.data[section])

    def add(self, section: str, row: dict) -> dict:
        with self._lock:
            self.data[section] = [r for r in self.data[section] if r.get("key") != row.get("key")] + [row]
            self._write()
        return row

    def set(self, **fields) -> None:
        with self._lock:
            self.data.update(fields)
            self._write()

    def _write(self) -> None:
        from elfatt_deploy.atomic import atomic_write_text

        self.data["updated"] = now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(json_safe(self.data), indent=1, allow_nan=False, default=str)
        atomic_write_text(self.path, text + "\n")
        if self.on_write is not None:
            self.on_write(self.path)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def finite(value):
    """NaN/inf -> None (JSON has no NaN)."""
    return value if value is None or math.isfinite(value) else None


def json_safe(value):
    """value with every non-finite float replaced by None, so that the file is strict JSON."""
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class ContextLost(RuntimeError):
    """The CUDA context is unusable (a sticky error): the run must continue in a fresh process."""


@dataclass
class Job:
    section: str
    key: str
    run: Callable[[], dict]
    base: dict = field(default_factory=dict)  # fields recorded with the row even when run() raises


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text[:2000]


def run_jobs(jobs: list[Job], results: ResultsFile, *, context_alive: Callable[[], bool],
             on_row: Callable[[dict], None] = lambda row: None, case_timeout: float = 0.0,
             on_timeout: Optional[Callable[[Job], None]] = None, desc: str = "",
             deadline: Optional[float] = None) -> None:
    """Runs each job not yet in the results, records its row (or its error) and writes the file.

    A job that raises is recorded with status "error" and the run goes on; if the CUDA context
    is then dead (context_alive() is False), ContextLost is raised after recording. A job running
    past case_timeout seconds calls on_timeout(job) from a watchdog thread (the caller restarts).
    Past ``deadline`` (a time.time() value) the remaining jobs are recorded as "skipped" without running,
    so that the run ends with its summary inside the device time it was given.
    """
    todo = [j for j in jobs if not results.done(j.section, j.key)]
    for job in tqdm(todo, desc=desc, leave=False, disable=not desc):
        if deadline is not None and time.time() >= deadline:
            row = {"key": job.key, **job.base, "status": "skipped", "error": "deadline: --deadline reached before it ran"}
            results.add(job.section, row)
            on_row(row)
            continue
        watchdog = None
        if case_timeout > 0 and on_timeout is not None:
            watchdog = threading.Timer(case_timeout, on_timeout, args=(job,))
            watchdog.daemon = True
            watchdog.start()
        try:
            row = {"key": job.key, **job.base, **job.run()}
        except Exception as exc:
            row = {"key": job.key, **job.base, "status": "error", "error": error_text(exc)}
        finally:
            if watchdog is not None:
                watchdog.cancel()
        results.add(job.section, row)
        on_row(row)
        if row.get("status") == "error" and not context_alive():
            raise ContextLost(f"the CUDA context is lost after {job.key}: {row.get('error')}")


def cuda_context_alive() -> bool:
    import torch

    try:
        torch.cuda.synchronize()
        x = torch.ones(16, device="cuda")
        return float((x + x).sum().item()) == 32.0
    except Exception:
        return False

