"""ELFATT model definitions and the model registry."""

from .cswin import ElfattCSWin
from .registry import ModelEntry, create_model, get_entry, list_models, model_config
from .vit import ElfattViT

__all__ = ["ElfattCSWin", "ElfattViT", "ModelEntry", "create_model", "get_entry", "list_models", "model_config"]
