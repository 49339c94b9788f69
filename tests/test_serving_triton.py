"""elfatt-deploy triton: the model repository, its config.pbtxt parsed with Triton's own schema."""

import json
import os
import re

import pytest

from _serving_fixtures import fake_engine, no_plugin_anywhere, static_plugin_library, vc_plugin_library
from elfatt_deploy.cli import main
from elfatt_deploy.engine.plugin import PluginNotFoundError
from elfatt_deploy.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, InputError
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


def test_a_plugin_the_search_cannot_find_is_an_environment_error(tmp_path, rng, capsys, monkeypatch):
    engine, _ = fake_engine(tmp_path / "m.engine", rng)  # its sidecar says it uses the plugin
    no_plugin_anywhere(monkeypatch, tmp_path)
    with pytest.raises(PluginNotFoundError):  # exit 3, as `build` says it
        _write(tmp_path, [engine])
    assert main(["triton", str(engine), "-o", str(tmp_path / "r"), "--name", "vit"]) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line, not the search's multi-line listing
    assert "libelfatt_trt_plugin.so was not found" in err and "which Triton must load" in err
    assert "$ELFATT_PLUGIN_PATH (not set)" in err and str(tmp_path / "no-checkout" / "plugins" / "build") in err
    assert "--plugin PATH/libelfatt_trt_plugin.so" in err and "--no-plugin" not in err  # a build option
    assert not (tmp_path / "r").exists() and not (tmp_path / "repo").exists()


def test_a_plugin_path_that_does_not_exist_is_said_plainly(tmp_path, rng, capsys):
    engine, _ = fake_engine(tmp_path / "m.engine", rng)
    with pytest.raises(FileNotFoundError, match=r"--plugin \S*missing.so does not exist"):
        _write(tmp_path, [engine], plugins=[tmp_path / "missing.so"])
    assert main(["triton", str(engine), "-o", str(tmp_path / "r"), "--name", "vit", "--plugin",
                 str(tmp_path / "missing.so")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"--plugin {tmp_path / 'missing.so'} does not exist" in err
    assert "readable ELF" not in err and "Errno" not in err and "static registration" not in err
    assert not (tmp_path / "r").exists()


def test_a_profile_whose_min_batch_is_above_1_is_warned_about(tmp_path, rng, capsys):
    from elfatt_deploy.engine.engine_file import sha256_file

    lib = static_plugin_library(tmp_path)
    engine, _ = fake_engine(tmp_path / "m.engine", rng, batch=(2, 4, 8), plugin_sha256=sha256_file(lib))
    repo = tmp_path / "r"
    assert main(["triton", str(engine), "-o", str(repo), "--name", "vit", "--plugin", str(lib),
                 "--dynamic-batching"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "warning" not in captured.out
    assert "minimum batch 2" in warning[0] and "max_batch_size: 8" in warning[0]
    assert "batch-1 requests" in warning[0]
    assert "--shapes min:1x3x224x224,opt:4x3x512x512,max:8x3x1024x1024" in warning[0]
    readme = (repo / "README.md").read_text()
    assert "minimum batch 2" in readme and "min:1x3x224x224" in readme
    assert "perf_analyzer -m vit -b 2 --shape image:3,512,512" in readme  # its default batch 1 would be refused
    assert parse_config(repo / "vit" / "config.pbtxt").max_batch_size == 8
    # min batch 1: no warning
    ok, _ = fake_engine(tmp_path / "ok.engine", rng, batch=(1, 4, 8), plugin_sha256=sha256_file(lib))
    written = write_repository(TritonOptions(engines=[ok], repository=repo, name="vit", plugins=[lib]),
                               warn=pytest.fail)
    assert written["warnings"] == [] and "minimum batch" not in written["readme"].read_text()


@pytest.mark.parametrize("plugin_first", [True, False])
def test_the_readme_covers_every_model_of_the_repository(tmp_path, rng, capsys, plugin_first):
    dyn, _ = fake_engine(tmp_path / "dyn.engine", rng, batch=(1, 4, 8))
    static, _ = fake_engine(tmp_path / "static.engine", rng, batch=(1, 1, 1), hw=((224, 224),) * 3, plugin=False,
                            precision="fp32")
    lib = static_plugin_library(tmp_path)
    repo = tmp_path / "rr"
    runs = [["triton", str(dyn), "-o", str(repo), "--name", "a", "--plugin", str(lib)],
            ["triton", str(static), "-o", str(repo), "--name", "b"]]
    for argv in runs if plugin_first else runs[::-1]:
        assert main(argv) == 0
    readme = (repo / "README.md").read_text()
    copied = (repo / "a" / "plugins" / "x86_64" / "libelfatt_trt_plugin.so").resolve()
    assert copied.read_bytes() == lib.read_bytes()
    assert f"--backend-config=tensorrt,plugins=\"{copied}\"" in readme  # model a's plugin, whoever was written last
    assert f"LD_PRELOAD={copied} tritonserver --model-repository={repo.resolve()}" in readme
    for name, shape in (("a", "image:3,512,512"), ("b", "image:1,3,224,224")):
        assert f"### {name}" in readme and f"curl -s localhost:8000/v2/models/{name}/ready" in readme
        assert f"perf_analyzer -m {name} --shape {shape}" in readme
    assert not [p for p in repo.rglob("*.tmp")]  # written atomically: no temporary files left
    # rewriting a model keeps one section per model
    assert main(runs[0]) == 0
    readme = (repo / "README.md").read_text()
    assert readme.count("### a") == 1 and readme.count("### b") == 1


def test_two_cpus_get_a_server_command_each(tmp_path, rng):
    engine, _ = fake_engine(tmp_path / "m.engine", rng)
    x86 = static_plugin_library(tmp_path)
    arm = tmp_path / "arm" / "libelfatt_trt_plugin.so"
    arm.parent.mkdir()
    data = bytearray(x86.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # e_machine = EM_AARCH64
    arm.write_bytes(bytes(data))
    written = _write(tmp_path, [engine], plugins=[x86, arm])
    readme = written["readme"].read_text()
    for machine in ("x86_64", "aarch64"):
        path = (tmp_path / "repo" / "vit" / "plugins" / machine / "libelfatt_trt_plugin.so").resolve()
        assert f"### {machine}" in readme and f"plugins=\"{path}\"" in readme
    assert not re.search(r'plugins="[^"]*;', readme)  # never both CPUs' libraries in one server


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_output_directory_that_cannot_be_written_is_refused_up_front(tmp_path, rng, capsys):
    engine, _ = fake_engine(tmp_path / "m.engine", rng, plugin=False)
    assert main(["triton", str(engine), "-o", "/proc/elfatt-repo", "--name", "vit"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "cannot write -o '/proc/elfatt-repo'" in err and "Errno" not in err
    assert not os.path.exists("/proc/elfatt-repo")
    assert main(["triton", str(engine), "-o", str(tmp_path / "nodir" / "repo"), "--name", "vit"]) == EXIT_BAD_INPUT
    assert "the output directory" in capsys.readouterr().err and not (tmp_path / "nodir").exists()
    (tmp_path / "file").write_text("x")
    assert main(["triton", str(engine), "-o", str(tmp_path / "file" / "repo"), "--name", "vit"]) == EXIT_BAD_INPUT
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("blocker", ["vit/plugins", "vit/1", "vit/config.pbtxt/", "README.md/"])
def test_a_path_in_the_way_is_named_and_nothing_is_written(tmp_path, rng, capsys, blocker):
    """A file where the repository needs a directory (or a directory where it needs a file): refused before the
    first write, so no plan is left without its config."""
    engine, _ = fake_engine(tmp_path / "m.engine", rng)
    lib = static_plugin_library(tmp_path)
    repo = tmp_path / "repo"
    in_the_way = repo / blocker.rstrip("/")
    in_the_way.parent.mkdir(parents=True, exist_ok=True)
    if blocker.endswith("/"):
        in_the_way.mkdir()
    else:
        in_the_way.write_text("x")
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    assert main(["triton", str(engine), "-o", str(repo), "--name", "vit", "--plugin", str(lib)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(in_the_way) in err and "Errno" not in err, err
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before


@pytest.mark.parametrize("name", ["my model", "a/b", ".hidden", "..", "vit;rm", "vit?x=1", "", "caf\u00e9"])
def test_a_model_name_that_is_not_a_triton_name_is_refused(tmp_path, rng, capsys, name):
    engine, _ = fake_engine(tmp_path / "m.engine", rng, plugin=False)
    assert main(["triton", str(engine), "-o", str(tmp_path / "r"), "--name", name]) == EXIT_BAD_INPUT
    assert "plain directory name (Triton's model name)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["vit", "vit_small-v2.1", "ViT-B.16", "-x", "9"])
def test_model_names_triton_takes_are_accepted(tmp_path, rng, name):
    engine, _ = fake_engine(tmp_path / "m.engine", rng, plugin=False)
    written = write_repository(TritonOptions(engines=[engine], repository=tmp_path / "r", name=name))
    assert parse_config(written["config"]).name == name


def test_every_trtexec_build_in_docs_serving_md_gives_the_profile_and_strong_typing():
    """A dynamic export built without --minShapes/--optShapes/--maxShapes gets every dynamic dimension set to 1."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text()
    commands = re.findall(r"^trtexec (?:[^\n]*\\\n)*[^\n]*$", text, flags=re.M)
    builds = [" ".join(c.replace("\\\n", " ").split()) for c in commands if "--onnx=" in c]
    assert len(builds) >= 2, builds
    profiles = set()
    for command in builds:
        flags = dict(re.findall(r"--(minShapes|optShapes|maxShapes)=(\S+)", command))
        assert set(flags) == {"minShapes", "optShapes", "maxShapes"}, command
        assert all(v.startswith("image:") for v in flags.values()), command  # the export's input name
        assert "--stronglyTyped" in command.split() and "--saveEngine=" in command, command
        profiles.add(tuple(sorted(flags.items())))
    assert len(profiles) == 1, profiles  # the same profile in each


def test_a_rerun_removes_the_plans_the_new_config_does_not_name(tmp_path, rng, capsys):
    """Two GPUs, then one: model.sm87.plan and model.sm90.plan of the first run go (Triton would ignore them, a reader
    would take them for part of the model); other files in the version directory stay."""
    orin, _ = fake_engine(tmp_path / "orin.engine", rng, cc="8.7", plugin=False)
    h100, _ = fake_engine(tmp_path / "h100.engine", rng, cc="9.0", plugin=False)
    _write(tmp_path, [orin, h100])
    version = tmp_path / "repo" / "vit" / "1"
    (version / "notes.txt").write_text("mine")
    written = write_repository(TritonOptions(engines=[orin], repository=tmp_path / "repo", name="vit"),
                               warn=lambda message: None)
    assert sorted(p.name for p in version.iterdir()) == ["model.plan", "notes.txt"]
    assert sorted(p.name for p in written["removed"]) == ["model.sm87.plan", "model.sm90.plan"]
    assert any("removed" in w and "model.sm90.plan" in w for w in written["warnings"])


def test_a_queue_delay_without_the_dynamic_batcher_is_refused(tmp_path, rng, capsys):
    engine, _ = fake_engine(tmp_path / "m.engine", rng, plugin=False)
    repo = tmp_path / "r"
    assert main(["triton", str(engine), "-o", str(repo), "--name", "vit", "--max-queue-delay-us", "5"]) == 2
    assert "--max-queue-delay-us 5 configures Triton's dynamic batcher; add --dynamic-batching" in capsys.readouterr().err
    assert not repo.exists()
    assert main(["triton", str(engine), "-o", str(repo), "--name", "vit", "--dynamic-batching",
                 "--max-queue-delay-us", "5"]) == 0
    assert parse_config(repo / "vit" / "config.pbtxt").dynamic_batching.max_queue_delay_microseconds == 5


def test_a_plugin_library_other_than_the_builds_is_warned_about(tmp_path, rng, capsys):
    """The sidecar records the SHA-256 of the library the engine was built with; copying another one into the
    repository (same plugin version: it loads) is said, as validate and bench say it."""
    from elfatt_deploy.engine.engine_file import sha256_file

    lib = static_plugin_library(tmp_path)
    engine, _ = fake_engine(tmp_path / "m.engine", rng, plugin_sha256="cd" * 32)
    assert main(["triton", str(engine), "-o", str(tmp_path / "r"), "--name", "vit", "--plugin", str(lib)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "is not the one the engine was built with" in warnings[0], warnings
    assert f"{sha256_file(lib)[:12]}... vs cdcdcdcdcdcd... recorded" in warnings[0]
    manifest = json.loads((tmp_path / "r" / "vit" / "elfatt_triton.json").read_text())
    assert any("is not the one the engine was built with" in w for w in manifest.get("warnings", [])), manifest
