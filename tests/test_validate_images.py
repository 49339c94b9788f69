"""`validate --images DIR`: a deployed file against PyTorch fp32 on real images, with accuracy when labelled."""

import json
import shutil

import pytest

from elfatt_deploy.cli import main
from elfatt_deploy.reference_models import checkpoint_path

from _binomial import INT8_FLIPS, REFERENCE_ERRORS, max_misses, min_fraction

#: the held-out images (conftest: 80, a fresh offset per session) and the thresholds a model at the
#: measured rates misses with probability <= 1e-4 (tests/_binomial.py)
IMAGES = 80
MIN_ACCURACY = min_fraction(IMAGES, REFERENCE_ERRORS)
MIN_INT8_AGREEMENT = min_fraction(IMAGES, INT8_FLIPS)


@pytest.fixture(scope="module")
def int8_onnx(reference_vit_int8):
    return reference_vit_int8.output


def _validate(path, images, tmp_path, *extra):
    report = tmp_path / "report.json"
    code = main(["validate", str(path), "--checkpoint", str(checkpoint_path("elfatt_vit_micro")), "--images",
                 str(images), "--report", str(report), *extra])
    return code, (json.loads(report.read_text()) if report.exists() else None)


def test_fp32_file_matches_pytorch_on_every_image(reference_vit_onnx, held_out_images, tmp_path, capsys):
    code, report = _validate(reference_vit_onnx, held_out_images.root, tmp_path)
    out = capsys.readouterr().out
    assert code == 0 and "PASS" in out and "top-1 accuracy onnxruntime" in out
    assert report["images"] == 80 and report["top1_agreement"] == 1.0
    assert report["rel_l2_error"] <= 1e-5
    assert report["reference_top1"] == report["backend_top1"] >= MIN_ACCURACY


def test_int8_file_agrees_and_reports_both_accuracies(int8_onnx, held_out_images, tmp_path):
    # 80 fresh images: one flip is 1.25 points (validate's int8 default, 0.99, is for larger sets)
    code, report = _validate(int8_onnx, held_out_images.root, tmp_path, "--min-agreement", str(MIN_INT8_AGREEMENT))
    assert code == 0 and report["settings"]["precision"] == "int8-qdq"
    assert report["top1_agreement"] >= MIN_INT8_AGREEMENT and report["min_top1_agreement"] == MIN_INT8_AGREEMENT
    # 5e-2, or 1.5e-1 on an x86 CPU without VNNI (8-bit weights on saturating int8 kernels: tolerances.py);
    # ONNX Runtime stays within 5e-2 there too (docs/quantization.md: 2.8e-2)
    from elfatt_deploy.validation.tolerances import CPU_INT8_WITHOUT_VNNI_RTOL_L2, x86_without_vnni

    assert report["rtol_l2"] == (CPU_INT8_WITHOUT_VNNI_RTOL_L2 if x86_without_vnni() else 5e-2)
    assert 1e-4 < report["rel_l2_error"] <= 5e-2
    correct = [round(report[key] * IMAGES) for key in ("backend_top1", "reference_top1")]
    assert abs(correct[0] - correct[1]) <= max_misses(IMAGES, INT8_FLIPS)  # at most the flips


def test_a_flat_folder_gives_agreement_without_accuracy(reference_vit_onnx, held_out_images, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for item in held_out_images.items[:12]:
        shutil.copy(item.path, flat / item.path.name)
    code, report = _validate(reference_vit_onnx, flat, tmp_path)
    assert code == 0 and report["images"] == 12 and report["reference_top1"] is None
    assert "(no labels)" in capsys.readouterr().out


def test_resizing_with_input_shape(reference_vit_onnx, held_out_images, tmp_path):
    code, report = _validate(reference_vit_onnx, held_out_images.root, tmp_path, "--input-shape", "4x3x96x136")
    assert code == 0 and report["input_size"] == [96, 136] and report["top1_agreement"] == 1.0


def test_a_tolerance_the_int8_file_cannot_meet_fails(int8_onnx, held_out_images, tmp_path, capsys):
    code, report = _validate(int8_onnx, held_out_images.root, tmp_path, "--rtol-l2", "1e-6")
    assert code == 1 and "FAIL" in capsys.readouterr().out and report["passed"] is False


def test_undecodable_images_are_counted(reference_vit_onnx, held_out_images, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(held_out_images.root, folder)
    next(folder.rglob("*.png")).write_bytes(b"junk")
    with pytest.warns(UserWarning, match="skipped 1 image"):
        code, report = _validate(reference_vit_onnx, folder, tmp_path)
    assert code == 0 and report["images"] == 79 and report["skipped"] == 1


def test_bad_image_arguments(reference_vit_onnx, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _ = _validate(reference_vit_onnx, tmp_path / "empty", tmp_path)
    assert code == 2 and "holds no image files" in capsys.readouterr().err
    code, _ = _validate(reference_vit_onnx, tmp_path / "empty", tmp_path, "--min-agreement", "1.5")
    assert code == 2 and "--min-agreement 1.5" in capsys.readouterr().err


def test_a_model_without_classifier_head_compares_features_only(held_out_images, tmp_path, capsys):
    """--num-classes 0: the output is the pooled features, so top-1 'agreement' would compare argmaxes of
    feature vectors; validate compares the features (rel L2) and says top-1 is not compared."""
    path = tmp_path / "features.onnx"
    assert main(["export", "--model", "elfatt_vit_micro", "--num-classes", "0", "--input-shape", "1x3x112x112",
                 "--weight-seed", "3", "-o", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    report_path = tmp_path / "r.json"
    code = main(["validate", str(path), "--images", str(held_out_images.root), "--report", str(report_path)])
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert code == 0, out
    assert "relative L2 error of the features" in out and "top-1 not compared" in out
    assert "top-1 accuracy" not in out and "rel L2 err (all features)" in out
    assert report["top1_agreement"] is None and report["reference_top1"] is None and report["min_top1_agreement"] is None
    assert 0 < report["rel_l2_error"] <= 1e-5 and report["images"] == 80
    assert main(["validate", str(path), "--images", str(held_out_images.root), "--rtol-l2", "1e-12"]) == 1
    assert main(["validate", str(path), "--images", str(held_out_images.root), "--min-agreement", "0.9"]) == 2
    assert "has no classifier head here (num_classes 0)" in capsys.readouterr().err
    # random inputs: the same, no top-1 column figures for the features
    assert main(["validate", str(path), "--shapes", "1x3x112x112", "--samples", "1", "--report", str(report_path)]) == 0
    rows = json.loads(report_path.read_text())["rows"]
    assert rows and all(r["top1_agreement"] is None and r["rel_l2_error"] <= 1e-5 for r in rows), rows
