"""Reference models: reduced ELFATT configs trained on the synthetic shapes task, shipped as safetensors.

They give the toolkit a model that has learned something, so that accuracy, top-1 agreement
and quantization error mean something (with random weights two different images already give
logits 0.2 apart). ``checkpoint_path(name)`` finds a shipped checkpoint;
``python3 -m elfatt_deploy.reference_models.train --model NAME`` rebuilds it (deterministic seeds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ReferenceModel:
    model: str
    #: file name of the checkpoint in this package
    checkpoint: str
    #: the training (and evaluation) image size
    image_size: int = 112
    #: optimizer steps and batch size of the documented training run
    steps: int = 1200
    batch: int = 64
    lr: float = 1.5e-3
    train_images: int = 8000
    threads: int = 1


REFERENCE_MODELS = {
    m.model: m
    for m in (
        ReferenceModel("elfatt_vit_micro", "elfatt_vit_micro-shapes10.safetensors"),
        ReferenceModel("elfatt_cswin_micro", "elfatt_cswin_micro-shapes10.safetensors", steps=900),
    )
}

PACKAGE_DIR = Path(__file__).resolve().parent


def get_reference(name: str) -> ReferenceModel:
    try:
        return REFERENCE_MODELS[name]
    except KeyError:
        raise ValueError(f"{name!r} has no reference checkpoint; reference models: {', '.join(REFERENCE_MODELS)}") from None


def checkpoint_path(name: str) -> Path:
    """The shipped checkpoint of reference model ``name``; FileNotFoundError says how to rebuild it."""
    path = PACKAGE_DIR / get_reference(name).checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"the reference checkpoint {path} is missing; rebuild it with "
                                f"`python3 -m elfatt_deploy.reference_models.train --model {name}`")
    return path
