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


def describe_export(values: Mapping[str, str]) -> str:
    """One paragraph for the file's ``doc_string`` (Netron's and model registries' description), from the
    values ``export_metadata`` returned: what the model is, its input and output, how its weights were made."""
    meta = {k[len(PREFIX):]: v for k, v in values.items() if k.startswith(PREFIX)}
    shape = "dynamic batch, height and width" if meta.get("dynamic") == "true" else f"fixed shape {meta.get('input_shape', 'unrecorded')}"
    if meta.get("plugin_only") == "true":
        form = "one elfatt::ElfattAttention node per attention layer, without function bodies (TensorRT with the plugin)"
    elif meta.get("inlined") == "true":
        form = "standard ONNX ops only (the ElfattAttention functions inlined)"
    else:
        form = ("one elfatt::ElfattAttention node per attention layer, each with a model-local function of standard "
                "ONNX ops (ONNX Runtime runs it as is; TensorRT uses the plugin)")
    from .model_loading import describe_weights, parse_provenance  # it imports the models, which import us

    provenance = parse_provenance(meta.get("weights"))
    made = f"weights: {describe_weights(provenance)}" if provenance else "weights as given to export_onnx"
    traced = f" from PyTorch {meta['torch_version']}" if meta.get("torch_version") else ""
    if meta.get("calibration_images"):  # elfatt-deploy quantize (quantize/qdq.py)
        made += (f"; INT8 Q/DQ on the {meta.get('base_precision', 'fp32')} export, calibrated on "
                 f"{meta['calibration_images']} images ({meta.get('quantizer', 'ONNX Runtime')})")
    return (f"{meta.get('model_name', 'model')} ({meta.get('precision', 'fp32')}), exported by elfatt-deploy "
            f"{meta.get('toolkit_version', __version__)}{traced}, ELFATT op contract v{meta.get('op_version', OP_VERSION)}. "
            f"Input {meta.get('input_name', INPUT_NAME)!r}: {meta.get('io_dtype', 'float32')} "
            f"{meta.get('input_layout', INPUT_LAYOUT)} RGB, normalized as elfatt.input_normalization says, "
            f"{shape} (traced at {meta.get('input_shape')}); output {meta.get('output_name')!r}. "
            f"Graph: {form}. {made[0].upper() + made[1:]}.")


def read_metadata(model: Union[onnx.ModelProto, str]) -> dict:
    """``{key: value}`` of the elfatt metadata (prefix stripped); {} for files of other producers."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
