import pytest

from elfatt_deploy.engine.compat import EngineIncompatibleError, check_compatibility, rebuild_command, require_compatible

META = {
    "tensorrt_version": "10.3.0.30",
    "gpu": {"name": "Orin", "compute_capability": "8.7"},
    "plugin": {"used": True, "version": "1"},
    "source_onnx": "/data/vit.onnx",
    "build_command": ["elfatt-deploy", "build", "/data/vit.onnx", "-o", "vit.engine", "--shapes", "1x3x224x224"],
}
ENV = {"tensorrt_version": "10.3.0.30", "gpu": {"name": "Orin", "compute_capability": "8.7"}, "plugin_version": "1"}


def _env(**kw):
    env = dict(ENV)
    env.update(kw)
    return env


def test_same_environment_is_fine():
    assert check_compatibility(META, ENV) == []
    assert require_compatible(META, ENV) == []


@pytest.mark.parametrize("running, ok", [("10.3.0.30", True), ("10.3.0.26", True), ("10.3.1", False), ("10.4.0", False), ("11.0.0", False)])
def test_tensorrt_version_rule(running, ok):
    issues = check_compatibility(META, _env(tensorrt_version=running))
    errors = [i for i in issues if i.severity == "error"]
    assert (not errors) == ok
    if not ok:
        assert "10.3.0.30" in errors[0].message and running in errors[0].message
    elif running != META["tensorrt_version"]:
        assert [i.severity for i in issues] == ["warning"]


def test_gpu_rules():
    errors = check_compatibility(META, _env(gpu={"name": "NVIDIA H100", "compute_capability": "9.0"}))
    assert [(i.severity, i.what) for i in errors] == [("error", "gpu")]
    assert "8.7" in errors[0].message and "9.0" in errors[0].message
    warn = check_compatibility(META, _env(gpu={"name": "Orin Nano", "compute_capability": "8.7"}))
    assert [(i.severity, i.what) for i in warn] == [("warning", "gpu")]
    none = check_compatibility(META, _env(gpu=None))
    assert [(i.severity, i.what) for i in none] == [("error", "gpu")]


def test_plugin_rules():
    assert [i.what for i in check_compatibility(META, _env(plugin_version="2"))] == ["plugin"]
    assert [i.what for i in check_compatibility(META, _env(plugin_version=None))] == ["plugin"]
    plugin_free = dict(META, plugin={"used": False})
    assert check_compatibility(plugin_free, _env(plugin_version=None)) == []


def test_refusal_names_the_rebuild_command():
    with pytest.raises(EngineIncompatibleError) as info:
        require_compatible(META, _env(tensorrt_version="10.16.0", gpu={"name": "Thor", "compute_capability": "11.0"}),
                           engine_path="vit.engine")
    text = str(info.value)
    assert "vit.engine" in text and "TensorRT 10.3.0.30" in text and "10.16.0" in text and "compute capability 11.0" in text
    assert rebuild_command(META) in text and "--shapes 1x3x224x224" in text


def test_without_tensorrt_says_so():
    with pytest.raises(EngineIncompatibleError, match="not installed") as info:
        require_compatible(META, _env(tensorrt_version=None, gpu=None))
    assert "doctor" in str(info.value)


def test_rebuild_command_fallback():
    assert rebuild_command({"source_onnx": "a b.onnx"}, "x.engine") == "elfatt-deploy build 'a b.onnx' -o x.engine"
