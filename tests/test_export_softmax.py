"""export --softmax: the output is class probabilities (softmax of the logits, float32), for consumers that read
probabilities (DeepStream's classifier mode); validate compares it with the PyTorch model's softmax."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from elfatt_deploy.cli import main
from elfatt_deploy.export.exporter import export_onnx
from elfatt_deploy.export.recipes import load_recipe
from elfatt_deploy.models import create_model
from elfatt_deploy.models.probabilities import WithProbabilities


def _tiny(**config):
    torch.manual_seed(0)
    return create_model("elfatt_vit_tiny", depth=2, **config).eval()


@pytest.mark.parametrize("precision, tol", [("fp32", 1e-5), ("fp16", 2e-3)])
def test_probabilities_match_the_softmax_of_the_model(tmp_path, rng, precision, tol):
    model = _tiny(num_classes=7)
    path = export_onnx(model, tmp_path / "p.onnx", "1x3x48x48", precision=precision, softmax=True)
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["probabilities"]
    assert {p.key: p.value for p in proto.metadata_props}["elfatt.output_name"] == "probabilities"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((2, 3, 40, 56)).astype(np.float32)  # off the traced shape and the window grid
    got = session.run(None, {"image": x})[0].astype(np.float64)
    with torch.no_grad():
        ref = torch.softmax(model.double()(torch.from_numpy(x).double()), dim=-1).numpy()
    assert got.shape == (2, 7)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-5)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= tol


def test_softmax_needs_a_classifier_head(tmp_path):
    with pytest.raises(ValueError, match="softmax needs a classifier head.*num_classes=0"):
        export_onnx(_tiny(num_classes=0), tmp_path / "f.onnx", "1x3x32x32", softmax=True)
    assert not (tmp_path / "f.onnx").exists()
    with pytest.raises(ValueError, match="softmax needs a classifier head"):
        WithProbabilities(_tiny(num_classes=0))


def test_validate_compares_probabilities_with_the_models_softmax(tmp_path, capsys):
    out = tmp_path / "p.onnx"
    assert main(["export", "--model", "elfatt_vit_tiny", "--num-classes", "5", "--input-shape", "1x3x32x32",
                 "--softmax", "-o", str(out)]) == 0
    assert "output probabilities (softmax)" in capsys.readouterr().out
    assert main(["validate", str(out), "--shapes", "1x3x32x32,1x3x40x24", "--samples", "1"]) == 0
    text = capsys.readouterr().out
    assert "PASS: worst relative L2 error probabilities" in text, text
    assert "(pass: rel L2 <= 1.0e-05)" in text  # the tolerance as the PASS line gives it (1.5e-01 is not "1e-01")


def test_recipe_softmax_and_num_classes(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('model = "elfatt_vit_tiny"\nopt_shape = "1x3x64x64"\nsoftmax = true\n')
    assert load_recipe(path).softmax is True
    path.write_text('model = "elfatt_vit_tiny"\nopt_shape = "1x3x64x64"\nsoftmax = true\n[model_config]\nnum_classes = 0\n')
    with pytest.raises(ValueError, match="softmax needs a classifier head, but num_classes is 0"):
        load_recipe(path)
    path.write_text('model = "elfatt_vit_tiny"\nopt_shape = "1x3x64x64"\n[model_config]\nnum_classes = -3\n')
    with pytest.raises(ValueError, match=r"\[model_config\] num_classes = -3 must be an integer >= 0"):
        load_recipe(path)
    with pytest.raises(ValueError, match="num_classes=-3 must be an integer >= 0"):
        create_model("elfatt_cswin_tiny", num_classes=-3)
