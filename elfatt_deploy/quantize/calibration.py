"""Calibration data from a folder of images, for ONNX Runtime's calibrators.

The images are chosen deterministically (evenly spread over the sorted folder, so every class
of an ImageFolder gets its share), decoded lazily, preprocessed with data.transforms (the
normalization recorded in the model's metadata), and fed in batches. What was used (count,
skipped files, a sha256 over relative paths and file contents) is recorded in the quantized
file's metadata, so an engine built from it can say which calibration set it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ..data.image_folder import DecodedImage, ImageFolder, dataset_hash, decode_items, scan_image_folder, spread_order
from ..data.transforms import to_model_input
from ..preprocess import Normalization
from ..errors import InputError

#: Images used when --calib-samples is not given (or all of a smaller folder).
DEFAULT_MAX_SAMPLES = 512


@dataclass
class CalibrationSet:
    folder: ImageFolder
    samples: int
    size: tuple[int, int]
    batch: int
    normalization: Normalization
    explicit_samples: bool
    #: the model's batch dim is static: a last partial batch is filled up by repeating its last image
    fixed_batch: bool = False
    used: list[DecodedImage] = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"images": len(self.used), "skipped": len(self.skipped), "sha256": dataset_hash(self.used, self.folder.root),
                "folder": str(self.folder.root), "input_size": f"{self.size[0]}x{self.size[1]}"}


def open_calibration_set(directory, *, samples: Optional[int], size, batch: int,
                         normalization: Normalization, fixed_batch: bool = False) -> CalibrationSet:
    """Checks the folder and the sample count; InputError when it cannot give ``samples`` images."""
    if samples is not None and (isinstance(samples, bool) or samples < 1):
        raise InputError(f"--calib-samples {samples} must be >= 1")
    folder = scan_image_folder(directory)
    if samples is not None and samples > len(folder.items):
        raise InputError(f"--calib-samples {samples} but {folder.describe()} has only {len(folder.items)}; pass "
                         f"--calib-samples {len(folder.items)} or fewer, or add images")
    wanted = samples if samples is not None else min(DEFAULT_MAX_SAMPLES, len(folder.items))
    return CalibrationSet(folder, wanted, (int(size[0]), int(size[1])), max(1, int(batch)), normalization,
                          samples is not None, fixed_batch)


class ImageCalibrationReader(CalibrationDataReader):
    """An onnxruntime.quantization CalibrationDataReader over a CalibrationSet."""

    def __init__(self, calib: CalibrationSet, input_name: str, *, progress: bool = True) -> None:
        super().__init__()
        self.calib = calib
        self.input_name = input_name
        self.progress = progress
        self._batches = None

    def _generate(self):
        import sys

        from tqdm import tqdm

        calib = self.calib
        calib.used.clear()
        calib.skipped.clear()
        order = [calib.folder.items[i] for i in spread_order(len(calib.folder.items), calib.samples)]
        bar = tqdm(total=calib.samples, desc="calibrating", unit="img", file=sys.stderr, disable=None if self.progress else True,
                   leave=False)
        pending = []
        try:
            for decoded in decode_items(order, limit=calib.samples, skipped=calib.skipped):
                calib.used.append(decoded)
                pending.append(decoded.image)
                if len(pending) == calib.batch:
                    yield {self.input_name: to_model_input(pending, calib.size, calib.normalization)}
                    bar.update(len(pending))
                    pending = []
            if pending:
                count = len(pending)
                if calib.fixed_batch:  # a static batch dim takes whole batches only
                    pending = pending + [pending[-1]] * (calib.batch - count)
                yield {self.input_name: to_model_input(pending, calib.size, calib.normalization)}
                bar.update(count)
        finally:
            bar.close()
        if not calib.used:
            raise InputError(f"no image in {calib.folder.root} could be decoded ({len(calib.skipped)} tried); "
                             "give a folder of readable images")
        if len(calib.used) < calib.samples and calib.explicit_samples:
            raise InputError(f"only {len(calib.used)} of the images in {calib.folder.root} decode ({len(calib.skipped)} "
                             f"skipped), fewer than --calib-samples {calib.samples}; lower --calib-samples or fix the files")

    def get_next(self):
        if self._batches is None:
            self._batches = self._generate()
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = None

