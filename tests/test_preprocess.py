"""elfatt_deploy.preprocess: the one definition of the models' input normalization."""

import json

import numpy as np
import pytest

from elfatt_deploy.errors import InputError
from elfatt_deploy.export.metadata import INPUT_NORMALIZATION
from elfatt_deploy.preprocess import DEFAULT_NORMALIZATION, Normalization, normalization_from_props


def test_apply_matches_the_formula_in_float64(rng):
    images = rng.integers(0, 256, size=(2, 3, 37, 53), dtype=np.uint8)  # odd sizes: nothing assumes a grid
    got = DEFAULT_NORMALIZATION.apply(images)
    mean = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    ref = (images.astype(np.float64) / 255.0 - mean) / std
    assert got.dtype == np.float32 and got.shape == images.shape
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-6
    nhwc = DEFAULT_NORMALIZATION.apply(images.transpose(0, 2, 3, 1))  # channels-last input gives the same
    np.testing.assert_array_equal(nhwc, got)


def test_nvinfer_form_reproduces_the_normalization(rng):
    """nvinfer computes y = net-scale-factor * (x - offsets[c]); per channel that is exact with
    pixel_scales(), and single_scale() states its own worst relative error."""
    n = DEFAULT_NORMALIZATION
    x = rng.integers(0, 256, size=(1, 3, 8, 9)).astype(np.float64)
    offsets = np.array(n.pixel_offsets()).reshape(1, 3, 1, 1)
    exact = np.array(n.pixel_scales()).reshape(1, 3, 1, 1) * (x - offsets)
    ref = n.apply(x).astype(np.float64)
    assert np.linalg.norm(exact - ref) / np.linalg.norm(ref) <= 1e-6
    scale, worst = n.single_scale()
    approx = scale * (x - offsets)
    rel = np.abs(approx - exact) / np.maximum(np.abs(exact), 1e-12)
    assert rel.max() <= worst + 1e-9 and 0.005 < worst < 0.02  # ImageNet std: 1.3 % worst channel


def test_metadata_round_trip_and_single_source():
    assert INPUT_NORMALIZATION == DEFAULT_NORMALIZATION.to_metadata()
    other = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.125))
    assert Normalization.from_metadata(json.dumps(other.to_metadata())) == other
    props = {"elfatt.input_normalization": json.dumps(other.to_metadata())}
    assert normalization_from_props(props) == other
    assert normalization_from_props({}) == DEFAULT_NORMALIZATION


@pytest.mark.parametrize("bad,match", [
    ('{"std": [0.2, 0, 0.2]}', "must be > 0"),
    ('{"mean": [0.5, 0.5]}', "3 means"),
    ("not json", "not JSON"),
    ('{"scale": "one"}', "malformed"),
])
def test_bad_metadata_names_the_value(bad, match):
    with pytest.raises(InputError, match=match):
        Normalization.from_metadata(bad)


def test_bad_images_shape():
    with pytest.raises(InputError, match=r"\[2, 4, 5, 6\]"):
        DEFAULT_NORMALIZATION.apply(np.zeros((2, 4, 5, 6), np.uint8))
