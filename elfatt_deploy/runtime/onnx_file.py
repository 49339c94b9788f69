"""What a command must know about an ONNX file before it runs it, checked up front.

``inspect_onnx_file`` reads the file once (without external weights) and refuses, with a
message that names the file and what to do, what would otherwise fail deep inside ONNX
Runtime or Polygraphy: a directory, a text or truncated file, a graph without one
N x 3 x H x W image input, a plugin-only export given to ONNX Runtime, a shape a static
file cannot take. ``validate`` and ``bench`` use it; so can any other runner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..engine.onnx_prep import ELFATT_OP, InputSpec, elfatt_functions, elfatt_nodes, graph_inputs, load_model
from ..engine.profiles import is_dynamic
from ..errors import InputError
from ..shapes import format_shape

#: Backends that run the ElfattAttention nodes through the file's function body.
FUNCTION_BODY_BACKENDS = ("onnxruntime", "openvino")


@dataclass
class OnnxFile:
    path: Path
    input: InputSpec
    outputs: list = field(default_factory=list)
    #: elfatt metadata, prefix stripped (export/metadata.py); {} for files of other producers
    metadata: dict = field(default_factory=dict)
    elfatt_node_count: int = 0
    has_elfatt_function: bool = False
    quantize_linear_count: int = 0  # QuantizeLinear nodes of the main graph (an INT8 Q/DQ file, whoever wrote it)

    @property
    def plugin_only(self) -> bool:
        return self.elfatt_node_count > 0 and not self.has_elfatt_function

    @property
    def static_shape(self):
        """The input shape when every dimension is static, else None."""
        dims = self.input.dims
        return tuple(int(d) for d in dims) if not any(is_dynamic(d) for d in dims) else None

    def model_config(self) -> dict:
        """The recorded model configuration; a value that is not a JSON object is refused with the key named."""
        text = self.metadata.get("model_config") or "{}"
        try:
            config = json.loads(text)
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise InputError(f"{self.path}: its metadata elfatt.model_config = {text[:60]!r} is not a JSON object of "
                             "model settings (edited after export?); re-export the file, or restore the value "
                             "(e.g. {\"depth\": 12})")
        return config

    def check_runnable_on(self, backend: str) -> None:
        """Refuses a plugin-only export for a backend that needs the function body."""
        if backend in FUNCTION_BODY_BACKENDS and self.plugin_only:
            raise InputError(
                f"{self.path} is a plugin-only export: its {self.elfatt_node_count} {ELFATT_OP} nodes have no ONNX "
                f"function body, so {backend} cannot run them. Validate or bench it with --backend tensorrt (an engine "
                "built with the plugin), or re-export without --plugin-only for ONNX Runtime")

    def fit_shapes(self, shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        """Default shapes made to fit the file: each static input dimension replaces the default's (deduplicated)."""
        fitted = []
        for shape in shapes:
            new = tuple(int(d) if not is_dynamic(d) else int(s) for s, d in zip(shape, self.input.dims))
            if new not in fitted:
                fitted.append(new)
        return fitted

    def check_shape(self, shape: Sequence[int], *, what: str = "input shape") -> None:
        """Refuses a shape the file's input cannot take (a static dimension set to another size)."""
        shape = tuple(int(d) for d in shape)
        for axis, (name, dim, value) in enumerate(zip("NCHW", self.input.dims, shape)):
            if is_dynamic(dim) or dim == value:
                continue
            static = self.static_shape
            takes = (f"takes only {format_shape(static)} (a static export)" if static else
                     f"has the input {self.input.name!r} ({'x'.join(map(str, self.input.dims))}) with the static "
                     f"{name}={dim}")
            fix = f"give {format_shape(static)}" if static else f"use {name}={dim}"
            raise InputError(f"{self.path} {takes}; {what} {format_shape(shape)} has {name}={value}: {fix}, or "
                             "re-export with --dynamic")


def inspect_onnx_file(path, *, what: str = "ONNX file") -> OnnxFile:
    """Reads and checks ``path``; InputError / FileNotFoundError say what is wrong and what to do."""
    from ..export.metadata import read_metadata

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {str(path)!r} is a directory; give the .onnx file (e.g. {path / 'model.onnx'})")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; export one with "
                                f"`elfatt-deploy export --model NAME -o {path.name or 'model.onnx'}`")
    try:
        model = load_model(path)
    except ValueError as exc:
        raise InputError(f"{exc}; is it an .onnx file from `elfatt-deploy export` (not truncated, not a text file)?") \
            from None
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise InputError(f"{path} has {len(inputs)} inputs ({names}); elfatt-deploy runs image models with one "
                         "N x 3 x H x W input (files from `elfatt-deploy export`)")
    spec = inputs[0]
    dims_text = "x".join(str(d) for d in spec.dims) or "a scalar"
    if len(spec.dims) != 4 or (not is_dynamic(spec.dims[1]) and spec.dims[1] != 3):
        raise InputError(f"{path} has the input {spec.name!r} of shape {dims_text}; elfatt-deploy runs image models "
                         "with one N x 3 x H x W input (is it a file from `elfatt-deploy export`?)")
    if spec.dtype not in ("float32", "float16"):
        raise InputError(f"{path} has the input {spec.name!r} of type {spec.dtype}; elfatt-deploy feeds float32 images")
    outputs = [o.name for o in model.graph.output]
    if not outputs:
        raise InputError(f"{path} has no outputs")
    return OnnxFile(path=path, input=spec, outputs=outputs, metadata=read_metadata(model),
                    elfatt_node_count=len(elfatt_nodes(model)), has_elfatt_function=bool(elfatt_functions(model)),
                    quantize_linear_count=sum(n.op_type == "QuantizeLinear" and n.domain in ("", "ai.onnx")
                                              for n in model.graph.node))
