"""What an exported file records about itself (ONNX ``metadata_props``)."""

from __future__ import annotations

import json
from typing import Mapping, Optional, Union

import onnx

from .._version import OP_VERSION, __version__
from ..preprocess import DEFAULT_NORMALIZATION
from ..shapes import format_shape

PREFIX = "elfatt."
INPUT_NAME = "image"
INPUT_LAYOUT = "NCHW"
#: What the models expect of their input; the caller applies it before the graph.
INPUT_NORMALIZATION = DEFAULT_NORMALIZATION.to_metadata()  # elfatt_deploy/preprocess.py is the one definition
PRECISIONS = ("fp32", "fp16")


def export_metadata(*, model_name: str, model_config: Mapping, precision: str, dynamic: bool,
                    input_shape, output_name: str, plugin_only: bool, inlined: bool = False,
                    normalization: Mapping = INPUT_NORMALIZATION, weights: Optional[Mapping] = None,
                    torch_version: Optional[str] = None) -> dict:
    """The metadata of one export, as strings.

    ``weights`` records how the weights were made (export/model_loading.py: checkpoint path and
    sha256, or the seed of random weights); ``validate`` rebuilds exactly those from it.
    ``torch_version`` is the PyTorch that traced the model (the file's ``producer_version`` is the toolkit's).
    """
    values = {
        "model_name": model_name,
        "model_config": json.dumps(dict(model_config), sort_keys=True),
        "toolkit_version": __version__,
        "op_version": OP_VERSION,
        "input_name": INPUT_NAME,
        "input_layout": INPUT_LAYOUT,
        "input_normalization": json.dumps(dict(normalization), sort_keys=True),
        "input_shape": format_shape(input_shape),
        "output_name": output_name,
        "precision": precision,
        "io_dtype": "float32",
        "dynamic": json.dumps(bool(dynamic)),
        "plugin_only": json.dumps(bool(plugin_only)),
        "inlined": json.dumps(bool(inlined)),  # export --inline: standard ops only (export/inline.py)
    }
    if torch_version:
        values["torch_version"] = torch_version
    if weights:
        values["weights"] = json.dumps(dict(weights), sort_keys=True)
    return {PREFIX + k: v for k, v in values.items()}


def set_metadata(model: onnx.ModelProto, values: Mapping[str, str]) -> None:
    """Adds or replaces ``values`` in the model's metadata_props."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update(values)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def read_metadata(model: Union[onnx.ModelProto, str]) -> dict:
    """``{key: value}`` of the elfatt metadata (prefix stripped); {} for files of other producers."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
