"""elfatt-deploy triton: the model repository, its config.pbtxt parsed with Triton's own schema."""

import os

import pytest

from _serving_fixtures import fake_engine, static_plugin_library, vc_plugin_library
from elfatt_deploy.cli import main
from elfatt_deploy.errors import InputError
from elfatt_deploy.serving.triton import TritonOptions, write_repository


def parse_config(path):
    """config.pbtxt through tritonclient's model_config_pb2 (Triton's ModelConfig proto) and protobuf's text_format."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                           reason="tritonclient[grpc] not installed (the test extra has it)")
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _dtype(name):
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Value(name)


def _write(tmp_path, engines, **kw):
    return write_repository(TritonOptions(engines=engines, repository=tmp_path / "repo", name="vit", **kw))


def test_dynamic_batch_repository(tmp_path, rng):
    engine, plan = fake_engine(tmp_path / "m.engine", rng, batch=(1, 4, 8))
    lib = static_plugin_library(tmp_path)
    written = _write(tmp_path, [engine], plugins=[lib], instances=2, dynamic_batching=True, max_queue_delay_us=250)
    cfg = parse_config(written["config"])
    assert cfg.name == "vit" and cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("image", [3, -1, -1])]  # no batch dim: Triton batches
    assert (cfg.input[0].data_type, cfg.output[0].data_type) == (_dtype("TYPE_FP16"), _dtype("TYPE_FP32"))
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("logits", [10])]
    assert cfg.instance_group[0].count == 2 and cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert cfg.default_model_filename == "model.plan" and not cfg.cc_model_filenames
    assert cfg.parameters["elfatt.model_name"].string_value == "elfatt_vit_tiny"
    assert '"scale": "1/255"' in cfg.parameters["elfatt.input_normalization"].string_value
    repo = tmp_path / "repo"
    assert (repo / "vit" / "1" / "model.plan").read_bytes() == plan  # the raw plan, as Triton hands it to TensorRT
    copied = written["plugins"][0]
    assert copied.parent.parent.name == "plugins" and copied.read_bytes() == lib.read_bytes()
    assert not copied.parent.parent.name.isdigit()  # not a version directory: Triton ignores it
    readme = written["readme"].read_text()
    assert f"--backend-config=tensorrt,plugins=\"{copied.resolve()}\"" in readme
    assert f"LD_PRELOAD={copied.resolve()} tritonserver --model-repository={repo.resolve()}" in readme
    assert "10.3.0" in readme  # the TensorRT version the server must have


def test_static_batch_gives_max_batch_size_zero_and_full_dims(tmp_path, rng):
    engine, _ = fake_engine(tmp_path / "s.engine", rng, batch=(2, 2, 2), hw=((224, 224),) * 3, plugin=False,
                            precision="fp32")
    written = _write(tmp_path, [engine])
    cfg = parse_config(written["config"])
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [2, 3, 224, 224]
    assert cfg.input[0].data_type == _dtype("TYPE_FP32")
    assert written["plugins"] == [] and not (tmp_path / "repo" / "vit" / "plugins").exists()
    assert "--backend-config" not in written["readme"].read_text()
    with pytest.raises(InputError, match="--dynamic-batching needs an engine whose profile has a dynamic batch"):
        _write(tmp_path, [engine], dynamic_batching=True)
    lib = static_plugin_library(tmp_path)
    with pytest.raises(InputError, match="none of the engines uses the ElfattAttention plugin"):
        _write(tmp_path, [engine], plugins=[lib])


def test_engines_for_several_compute_capabilities(tmp_path, rng):
    orin, orin_plan = fake_engine(tmp_path / "orin.engine", rng, cc="8.7")
    h100, h100_plan = fake_engine(tmp_path / "h100.engine", rng, cc="9.0", trt="10.8.0.43")
    lib = static_plugin_library(tmp_path)
    written = _write(tmp_path, [orin, h100], plugins=[lib])
    cfg = parse_config(written["config"])
    assert dict(cfg.cc_model_filenames) == {"8.7": "model.sm87.plan", "9.0": "model.sm90.plan"}
    assert not cfg.default_model_filename  # no model.plan: another GPU gets a clear "not found" from Triton
    version = tmp_path / "repo" / "vit" / "1"
    assert (version / "model.sm87.plan").read_bytes() == orin_plan and (version / "model.sm90.plan").read_bytes() == h100_plan
    assert "8.7" in cfg.parameters["elfatt.plan.model.sm87.plan"].string_value
    assert "10.3.0" in written["readme"].read_text() and "10.8.0.43" in written["readme"].read_text()
    same, _ = fake_engine(tmp_path / "same.engine", rng, cc="8.7")
    with pytest.raises(InputError, match="same compute capability"):
        _write(tmp_path, [orin, same], plugins=[lib])
    other, _ = fake_engine(tmp_path / "other.engine", rng, cc="9.0", output="features")
    with pytest.raises(InputError, match="different outputs"):
        _write(tmp_path, [orin, other], plugins=[lib])
    wider, _ = fake_engine(tmp_path / "wider.engine", rng, cc="9.0", batch=(1, 4, 16))
    with pytest.raises(InputError, match="different profiles"):
        _write(tmp_path, [orin, wider], plugins=[lib])


def test_plugin_must_be_the_static_registration_build(tmp_path, rng):
    engine, _ = fake_engine(tmp_path / "m.engine", rng)
    with pytest.raises(InputError, match="plugins= option dlopens the library, so it needs libelfatt_trt_plugin.so"):
        _write(tmp_path, [engine], plugins=[vc_plugin_library(tmp_path)])
    assert not (tmp_path / "repo").exists()  # refused before anything was written


def test_bad_input(tmp_path, rng, without_tensorrt):
    engine, _ = fake_engine(tmp_path / "m.engine", rng, plugin=False)
    for kw, match in (({"name": "a/b"}, "plain directory name"), ({"name": "x", "version": 0}, "--version 0"),
                      ({"name": "x", "instances": 0}, "--instances 0"), ({"name": "x", "kind": "KIND_CPU"}, "KIND_GPU")):
        with pytest.raises(InputError, match=match):
            write_repository(TritonOptions(engines=[engine], repository=tmp_path / "r", **kw))
    bare = tmp_path / "trtexec.plan"
    bare.write_bytes(b"plan bytes")
    with pytest.raises(InputError, match="has no sidecar"):
        _write(tmp_path, [bare])


def test_cli(tmp_path, rng, capsys):
    engine, _ = fake_engine(tmp_path / "m.engine", rng, plugin=False)
    assert main(["triton", str(engine), "-o", str(tmp_path / "repo"), "--name", "vit"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "repo" / "vit" / "config.pbtxt") in out and "tritonserver command" in out
    assert main(["triton", str(tmp_path / "none.engine"), "-o", str(tmp_path / "r2"), "--name", "vit"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r2")
