"""elfatt-deploy: ELFATT vision transformers from PyTorch to ONNX and TensorRT."""

from ._version import OP_VERSION, __version__
from .op import elfatt_attention

__all__ = [
    "__version__",
    "OP_VERSION",
    "elfatt_attention",
    "create_model",
    "list_models",
    "load_checkpoint",
    "export_onnx",
]


def __getattr__(name):
    # Lazy imports keep `import elfatt_deploy` light and free of cycles.
    if name in ("create_model", "list_models"):
        from .models import registry

        return getattr(registry, name)
    if name == "load_checkpoint":
        from .checkpoint import load_checkpoint

        return load_checkpoint
    if name == "export_onnx":
        from .export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'elfatt_deploy' has no attribute {name!r}")
