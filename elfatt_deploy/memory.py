"""A memory ceiling for a run: estimate what a forward pass needs, refuse before allocating.

``estimate_forward`` builds the model on PyTorch's ``meta`` device (no storage, no
initialization cost), runs it on a meta input of the requested shape and records the
size of every module's output. The estimate is

- the input itself (and what the command keeps next to it, see ``input_copies``);
- the weights;
- activations: ``ACTIVATION_FACTOR`` times the largest module output (a block keeps
  its residual input, the layer's input and output and the op's scratch alive at once;
  measured peaks of the eager ViT and CSWin models stay within 3.5x and 5.6x);
- for vanilla-attention twins, the B x heads x N x N attention matrix of the largest
  layer, which ONNX Runtime and the math path of scaled_dot_product_attention
  materialize (PyTorch's flash kernels need less: ``--force`` tries anyway).

``available_memory`` is the smallest of ``MemAvailable`` (/proc/meminfo) and the
cgroup's remaining allowance (v2 ``memory.max``, v1 ``memory.limit_in_bytes``).
``check_memory`` raises InsufficientMemoryError, naming both numbers, when the
estimate exceeds what is available. All of it takes well under a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .errors import ToolkitError
from .shapes import format_shape

#: Peak activations / largest module output (see the module docstring).
ACTIVATION_FACTOR = 6
GIB = float(1 << 30)


class InsufficientMemoryError(ToolkitError):
    """The run would need more memory than this machine (or its cgroup) has available (exit 3)."""


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= 0.1 * GIB else f"{n / (1 << 20):.0f} MiB"


@dataclass
class MemoryEstimate:
    #: what needs the memory -> bytes
    parts: dict = field(default_factory=dict)
    what: str = "this run"

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def add(self, other: "MemoryEstimate", *, prefix: str = "") -> "MemoryEstimate":
        for key, value in other.parts.items():
            self.parts[prefix + key] = self.parts.get(prefix + key, 0) + value
        return self

    def describe(self) -> str:
        parts = ", ".join(f"{k} {_gib(v)}" for k, v in self.parts.items() if v)
        return f"about {_gib(self.total)} ({parts})"


def _read_int(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path: Path, *keys: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    values = dict(line.split(None, 1) for line in lines if " " in line)
    for key in keys:
        if key in values:
            try:
                return int(values[key])
            except ValueError:
                pass
    return 0


def _cgroup_available(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> Optional[tuple[int, str]]:
    """Limit minus usage (less reclaimable page cache) of this process's memory cgroup, or None without a limit."""
    try:
        entries = [line.split(":", 2) for line in proc_cgroup.read_text().splitlines()]
    except OSError:
        entries = []
    candidates = []
    for _, controllers, rel in (e for e in entries if len(e) == 3):
        rel = rel.lstrip("/")
        if controllers == "":  # cgroup v2
            candidates += [(root / rel, "v2"), (root, "v2")]
        elif "memory" in controllers.split(","):
            candidates += [(root / "memory" / rel, "v1"), (root / "memory", "v1")]
    best = None
    for directory, version in candidates:
        if version == "v2":
            limit, usage = _read_int(directory / "memory.max"), _read_int(directory / "memory.current")
            cache = _stat_value(directory / "memory.stat", "inactive_file")
            name = directory / "memory.max"
        else:
            limit, usage = _read_int(directory / "memory.limit_in_bytes"), _read_int(directory / "memory.usage_in_bytes")
            cache = _stat_value(directory / "memory.stat", "total_inactive_file", "inactive_file")
            name = directory / "memory.limit_in_bytes"
        if limit is None or usage is None or limit >= (1 << 60):  # "max" / unlimited (v1 prints ~2^63)
            continue
        available = max(0, limit - usage + cache)
        if best is None or available < best[0]:
            best = (available, f"cgroup limit {_gib(limit)} ({name})")
    return best


def _meminfo_available(meminfo: Path = Path("/proc/meminfo")) -> Optional[int]:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory() -> tuple[Optional[int], str]:
    """(bytes available to this process, where the number comes from); (None, ...) when unknown."""
    system = _meminfo_available()
    cgroup = _cgroup_available()
    if cgroup is not None and (system is None or cgroup[0] < system):
        return cgroup[0], f"{cgroup[1]}, of which {_gib(cgroup[0])} is free"
    if system is not None:
        return system, "MemAvailable in /proc/meminfo"
    return None, "unknown (no /proc/meminfo)"


def _tensor_bytes(value) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, Mapping):
        return sum(_tensor_bytes(v) for v in value.values())
    return 0


#: The proxy run's image side is a multiple of this (the largest stride of the registered models: CSWin's 32),
#: so that every stage's grid scales with the image area.
PROXY_STRIDE = 32


def _padded(extent: int) -> int:
    return -(-int(extent) // PROXY_STRIDE) * PROXY_STRIDE


def _materialize_uninitialized(model) -> None:
    """Gives a meta-device model CPU storage without initializing it (only the shapes matter here).

    (``Module.to_empty`` does the same through torch._refs, whose first call imports sympy: a second or two.)
    """
    import torch

    for module in model.modules():
        for key, param in list(module._parameters.items()):  # noqa: SLF001
            if param is not None:
                module._parameters[key] = torch.nn.Parameter(torch.empty(tuple(param.shape), dtype=param.dtype),  # noqa: SLF001
                                                             requires_grad=False)
        for key, buf in list(module._buffers.items()):  # noqa: SLF001
            if buf is not None:
                module._buffers[key] = torch.zeros(tuple(buf.shape), dtype=buf.dtype)  # noqa: SLF001


def estimate_forward(name: str, shape: Sequence[int], *, config: Optional[Mapping] = None, attention: Optional[str] = None,
                     dtype_bytes: int = 4, input_copies: float = 1.0, what: Optional[str] = None) -> MemoryEstimate:
    """Estimated peak memory of ``create_model(name, **config)`` on an input of ``shape`` (see the module docstring).

    The model's vanilla-attention twin (the same layers and tensor shapes, without the custom op, whose first
    call imports torch._dynamo: seconds) is built on the meta device and given uninitialized CPU storage (no
    initialization cost), run once on a 1 x 32 x 32 proxy image (one thread), and every module's output size
    is scaled from the proxy's area to ``shape``'s (padded to whole PROXY_STRIDE cells: an upper bound). ``input_copies``: how many float32-sized
    copies of the input the command holds (a float64 draw is 2 more). Takes a few tens of milliseconds.
    """
    import torch

    from .models import create_model
    from .models.registry import model_config
    from .nn.attention import ElfattAttention
    from .shapes import check_image_shape

    n, c, h, w = check_image_shape(tuple(int(d) for d in shape))
    overrides = dict(config or {})
    if attention is not None:
        overrides["attention"] = attention
    vanilla = model_config(name, **overrides).get("attention", "elfatt") == "vanilla"
    overrides["attention"] = "vanilla"
    with torch.device("meta"):
        model = create_model(name, **overrides).eval()
    _materialize_uninitialized(model)
    proxy_batch, proxy_side = 1, PROXY_STRIDE
    scale = (n / proxy_batch) * (_padded(h) * _padded(w)) / float(proxy_side * proxy_side)
    largest = 0.0
    attention_matrix = 0.0

    def record(module, inputs, output):
        nonlocal largest, attention_matrix
        largest = max(largest, _tensor_bytes(output) * scale)
        if vanilla and isinstance(module, ElfattAttention):
            _, gh, gw, _ = inputs[0].shape
            tokens = gh * gw * (_padded(h) * _padded(w)) / float(proxy_side * proxy_side)
            attention_matrix = max(attention_matrix, n * module.num_heads * tokens * tokens * dtype_bytes)

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny run: waking a thread pool costs more than it saves
    try:
        with torch.inference_mode():
            model(torch.zeros(proxy_batch, c, proxy_side, proxy_side))
    finally:
        torch.set_num_threads(threads)
        for handle in handles:
            handle.remove()
    weights = sum(p.numel() for p in model.parameters()) * dtype_bytes
    parts = {"input": int(n * c * h * w * 4 * input_copies), "weights": int(weights),
             "activations": int(ACTIVATION_FACTOR * largest * dtype_bytes / 4)}
    if attention_matrix:
        parts["N x N attention"] = int(attention_matrix)
    return MemoryEstimate(parts, what=what or f"{name} at {format_shape(shape)}")


def check_memory(estimate: MemoryEstimate, *, force: bool = False, available: Optional[int] = None,
                 source: Optional[str] = None) -> None:
    """Raises InsufficientMemoryError when ``estimate`` exceeds the available memory (unless ``force``)."""
    if force:
        return
    if available is None:
        available, source = available_memory()
        if available is None:
            return
    if estimate.total > available:
        raise InsufficientMemoryError(
            f"{estimate.what} needs {estimate.describe()}, more than the {_gib(available)} available here "
            f"({source}); use a smaller input shape or batch, or pass --force to try anyway")
