"""Parity on real images: a backend against PyTorch fp32 on a folder of images, with accuracy when labelled.

The images are decoded (data/image_folder.py), resized to the model's input size and normalized
as the export metadata says (data/transforms.py, preprocess.py), run through both runners in
batches, and compared: top-1 agreement of the backend with PyTorch, each side's top-1
accuracy when the folder has labels (ImageFolder layout), and the error metrics of the logits
over all images (metrics.compare_outputs).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..data.image_folder import ImageFolder, decode_items, scan_image_folder
from ..data.transforms import to_model_input
from ..preprocess import Normalization
from .metrics import OutputMetrics, compare_outputs

#: Default minimum top-1 agreement with PyTorch fp32 on images (docs/quantization.md).
DEFAULT_MIN_AGREEMENT = 0.99


@dataclass
class ImageParityResult:
    reference: str
    backend: str
    folder: str
    classes: list[str]
    images: int
    skipped: int
    size: tuple[int, int]
    rtol_l2: float
    min_agreement: Optional[float]
    metrics: OutputMetrics
    #: None for a model without a classifier head (num_classes 0: its output is features, top-1 means nothing)
    agreement: Optional[float]
    reference_accuracy: Optional[float]
    backend_accuracy: Optional[float]
    #: relative L2 error of each image's logits
    per_image_rel_l2: list[float] = field(default_factory=list)
    #: the compared output's name (logits, or probabilities for an export --softmax)
    output_name: str = "logits"

    @property
    def passed(self) -> bool:
        return (self.images > 0 and self.metrics.finite and self.metrics.rel_l2_error <= self.rtol_l2
                and (self.agreement is None or self.agreement >= self.min_agreement))

    def to_dict(self) -> dict:
        return {"reference": self.reference, "backend": self.backend, "folder": self.folder, "classes": self.classes,
                "images": self.images, "skipped": self.skipped, "input_size": list(self.size),
                "rtol_l2": self.rtol_l2, "min_top1_agreement": self.min_agreement, "passed": self.passed,
                "top1_agreement": self.agreement, "reference_top1": self.reference_accuracy,
                "backend_top1": self.backend_accuracy, **self.metrics.to_dict(),
                "per_image_rel_l2_max": max(self.per_image_rel_l2, default=0.0),
                "per_image_rel_l2_median": float(np.median(self.per_image_rel_l2)) if self.per_image_rel_l2 else 0.0}


def _rel_l2_rows(out: np.ndarray, ref: np.ndarray) -> list[float]:
    num = np.linalg.norm((out - ref).reshape(len(ref), -1), axis=1)
    den = np.linalg.norm(ref.reshape(len(ref), -1), axis=1)
    return [float(n / d) if d > 0 else float(n > 0) * float("inf") for n, d in zip(num, den)]


def run_image_parity(reference_runner, backend_runner, *, input_name: str, output_name: str, images,
                     size: Sequence[int], normalization: Normalization, rtol_l2: float,
                     min_agreement: float = DEFAULT_MIN_AGREEMENT, batch: int = 16, limit: Optional[int] = None,
                     progress: bool = True, fixed_batch: bool = False, classifier: bool = True) -> ImageParityResult:
    """Runs both (Polygraphy) runners on the images of ``images`` (a folder path or an ImageFolder).

    ``classifier=False``: the output is a feature vector (a model exported with num_classes 0), so only
    the error metrics are compared; top-1 agreement and accuracy are not computed (None).

    ``fixed_batch``: the model's batch dim is static (``batch``), so a last partial batch is filled up by
    repeating its last image and the extra rows are dropped from the results."""
    from tqdm import tqdm

    folder = images if isinstance(images, ImageFolder) else scan_image_folder(images)
    if batch < 1:
        raise ValueError(f"batch {batch} must be >= 1")
    items = folder.items[:limit] if limit else folder.items
    skipped: list = []
    refs, outs, labels = [], [], []
    bar = tqdm(total=len(items), desc="images", unit="img", file=sys.stderr, disable=None if progress else True)

    def flush(pending):
        count = len(pending)
        filled = pending + [pending[-1]] * (batch - count) if fixed_batch else pending
        x = to_model_input([d.image for d in filled], size, normalization)
        feed = OrderedDict([(input_name, x)])
        refs.append(np.asarray(reference_runner.infer(feed)[output_name], dtype=np.float64)[:count])
        outs.append(np.asarray(backend_runner.infer(feed)[output_name], dtype=np.float64)[:count])
        labels.extend(d.item.label for d in pending)
        bar.update(len(pending))

    with reference_runner, backend_runner:
        pending = []
        for decoded in decode_items(items, skipped=skipped):
            pending.append(decoded)
            if len(pending) == batch:
                flush(pending)
                pending = []
        if pending:
            flush(pending)
    bar.close()
    if not refs:
        raise ValueError(f"none of the {len(items)} images in {folder.root} could be decoded; give a folder of "
                         "readable images")
    ref, out = np.concatenate(refs), np.concatenate(outs)
    if ref.ndim != 2:
        raise ValueError(f"output {output_name!r} has shape {list(ref.shape)}; --images needs a classifier's "
                         "[batch, classes] logits or a [batch, features] vector")
    metrics = compare_outputs(out, ref, classifier=classifier)
    ref_top1, out_top1 = ref.argmax(1), out.argmax(1)
    agreement = float(np.mean(ref_top1 == out_top1)) if classifier else None
    ref_acc = out_acc = None
    if not classifier:
        min_agreement = None
    elif folder.labelled:
        truth = np.asarray(labels)
        if ref.shape[1] < len(folder.classes):
            raise ValueError(f"the folder has {len(folder.classes)} classes but the model gives {ref.shape[1]} logits; "
                             "is this the model trained on these classes?")
        ref_acc, out_acc = float(np.mean(ref_top1 == truth)), float(np.mean(out_top1 == truth))
    return ImageParityResult(
        reference=reference_runner.name, backend=backend_runner.name, folder=str(folder.root), classes=folder.classes,
        images=len(ref), skipped=len(skipped), size=(int(size[0]), int(size[1])), rtol_l2=rtol_l2,
        min_agreement=min_agreement, metrics=metrics, agreement=agreement, reference_accuracy=ref_acc,
        backend_accuracy=out_acc, per_image_rel_l2=_rel_l2_rows(out, ref), output_name=output_name)


def format_image_report(result: ImageParityResult) -> str:
    from ..cli.table import format_table

    m = result.metrics
    rows = [["images", f"{result.images}" + (f" ({result.skipped} skipped)" if result.skipped else "")],
            ["input size", f"{result.size[0]}x{result.size[1]}"],
            ["top-1 agreement", f"{result.agreement:.4f} (min {result.min_agreement:.2f})" if result.agreement is not None
             else "not compared: the output is features (no classifier head)"]]
    if result.reference_accuracy is not None:
        rows += [[f"top-1 accuracy {result.reference}", f"{result.reference_accuracy:.4f}"],
                 [f"top-1 accuracy {result.backend}", f"{result.backend_accuracy:.4f} "
                  f"({(result.backend_accuracy - result.reference_accuracy) * 100:+.2f} points)"]]
    what = result.output_name if result.agreement is not None else "features"
    rows += [[f"rel L2 err (all {what})", f"{m.rel_l2_error:.3e} (max {result.rtol_l2:.1e})"],
             ["rel L2 err per image, max", f"{max(result.per_image_rel_l2):.3e}"],
             ["max abs err", f"{m.max_abs_error:.3e}"], ["cosine", f"{m.cosine_similarity:.8f}"]]
    return (f"{result.backend} vs {result.reference} on {result.folder}"
            + (f" ({len(result.classes)} classes)" if result.classes else " (no labels)") + "\n"
            + format_table(["metric", "value"], rows))
