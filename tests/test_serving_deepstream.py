"""elfatt-deploy deepstream: the nvinfer [property] config, read back as nvinfer reads a key file."""

import configparser
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from _serving_fixtures import fake_engine, no_plugin_anywhere, static_plugin_library, vc_plugin_library
from test_engine_onnx_fixture import elfatt_model, save
from elfatt_deploy.cli import main
from elfatt_deploy.engine.plugin import PluginNotFoundError
from elfatt_deploy.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, InputError
from elfatt_deploy.preprocess import DEFAULT_NORMALIZATION
from elfatt_deploy.serving.deepstream import DeepStreamOptions, write_config


def read_property(path):
    parser = configparser.ConfigParser(comment_prefixes=("#",), interpolation=None)
    parser.optionxform = str  # nvinfer keys are case-sensitive
    parser.read(path)
    return dict(parser["property"])


def test_config_keys_and_preprocessing(tmp_path, rng):
    onnx_path = save(elfatt_model(precision="fp16"), tmp_path / "m.onnx")  # has the function: a plugin-only copy
    engine, _ = fake_engine(tmp_path / "m.engine", rng, source_onnx=onnx_path, batch=(1, 2, 8), output="out")
    lib = static_plugin_library(tmp_path)
    out = tmp_path / "ds" / "config_infer.txt"
    out.parent.mkdir()
    written = write_config(DeepStreamOptions(engine=engine, output=out, plugin=lib, input_size=(384, 640)))
    prop = read_property(out)
    assert prop["model-engine-file"] == str(engine.resolve()) and prop["custom-lib-path"] == str(lib.resolve())
    assert prop["infer-dims"] == "3;384;640" and prop["batch-size"] == "2" and prop["network-mode"] == "2"  # fp16
    assert prop["network-type"] == "100" and prop["output-tensor-meta"] == "1" and prop["model-color-format"] == "0"
    assert prop["output-blob-names"] == "out"
    copy = written["onnx"]
    assert prop["onnx-file"] == str(copy.resolve()) and copy.parent == out.parent and copy.name == "m.plugin-only.onnx"
    model = onnx.load(str(copy))
    assert not [f for f in model.functions if f.domain == "elfatt"]
    assert [n.op_type for n in model.graph.node if n.domain == "elfatt"] == ["ElfattAttention"]
    # nvinfer's y = net-scale-factor * (x - offsets[c]) against the models' normalization
    scale = float(prop["net-scale-factor"])
    offsets = np.array([float(v) for v in prop["offsets"].split(";")]).reshape(1, 3, 1, 1)
    x = rng.integers(0, 256, size=(1, 3, 5, 7)).astype(np.float64)
    ref = DEFAULT_NORMALIZATION.apply(x).astype(np.float64)
    got = scale * (x - offsets)
    _, worst = DEFAULT_NORMALIZATION.single_scale()
    assert np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-3)) <= worst + 1e-6
    text = out.read_text()
    assert f"{worst * 100:.2f} %" in text  # the approximation is stated in the file


def test_plugin_free_engine_and_plugin_only_onnx(tmp_path, rng):
    plugin_only = save(elfatt_model(with_function=False), tmp_path / "p.onnx")
    engine, _ = fake_engine(tmp_path / "m.engine", rng, plugin=False, precision="fp32", source_onnx=plugin_only,
                            output="out")
    out = tmp_path / "c.txt"
    written = write_config(DeepStreamOptions(engine=engine, output=out))
    prop = read_property(out)
    assert "custom-lib-path" not in prop and prop["network-mode"] == "0" and written["plugin"] is None
    assert prop["onnx-file"] == str(Path(plugin_only).resolve())  # already plugin-only: used as it is
    assert prop["infer-dims"] == "3;512;512" and prop["batch-size"] == "4"  # the profile's opt shape


def test_bad_input(tmp_path, rng):
    engine, _ = fake_engine(tmp_path / "m.engine", rng)
    lib = static_plugin_library(tmp_path)
    out = tmp_path / "c.txt"
    cases = [
        (dict(batch_size=9), "outside the engine's profile"),
        (dict(input_size=(100, 224)), "outside the engine's profile"),
        (dict(network_type="classifier"), r"outputs 'logits' \(raw logits\).*export --softmax"),
        (dict(labels=tmp_path / "any.txt"), "applies with --network-type classifier only"),
        (dict(plugin=vc_plugin_library(tmp_path)), "custom-lib-path dlopens the library"),
    ]
    for kw, match in cases:
        kw.setdefault("plugin", lib)
        with pytest.raises(InputError, match=match):
            write_config(DeepStreamOptions(engine=engine, output=out, **kw))
    assert not out.exists()


def _classifier_engine(tmp_path, rng, name="p", **kw):
    return fake_engine(tmp_path / f"{name}.engine", rng, plugin=False, output="probabilities", **kw)[0]


def test_classifier_labels_in_nvinfer_form(tmp_path, rng):
    """nvinfer's classifier reads each line of labelfile-path as one output layer's labels, split on ';': one name per
    line would give class 0 a label and the others none. A one-per-line file is written in nvinfer's form beside the
    config; a file already in that form is used as it is; the count must be the engine's classes."""
    engine = _classifier_engine(tmp_path, rng)
    names = [f"class {i}" for i in range(10)]
    per_line = tmp_path / "labels.txt"
    per_line.write_text("\n".join(names) + "\n")
    out = tmp_path / "ds" / "c.txt"
    out.parent.mkdir()
    written = write_config(DeepStreamOptions(engine=engine, output=out, network_type="classifier", labels=per_line))
    prop = read_property(out)
    labels = Path(prop["labelfile-path"])
    assert prop["network-type"] == "1" and labels == (out.parent / "c.labels.txt").resolve()
    assert labels.read_text().splitlines() == [";".join(names)]  # one layer, ten labels
    assert written["written"] == [out.parent / "c.labels.txt"] and float(prop["classifier-threshold"]) == 0.0
    one_line = tmp_path / "nvinfer.txt"
    one_line.write_text(";".join(names) + "\n")
    write_config(DeepStreamOptions(engine=engine, output=out, network_type="classifier", labels=one_line,
                                   classifier_threshold=0.25))
    prop = read_property(out)
    assert Path(prop["labelfile-path"]) == one_line.resolve() and float(prop["classifier-threshold"]) == 0.25
    few = tmp_path / "few.txt"
    few.write_text("a\nb\n")
    with pytest.raises(InputError, match="has 2 class names but the engine's output has 10 classes"):
        write_config(DeepStreamOptions(engine=engine, output=tmp_path / "x.txt", network_type="classifier", labels=few))
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("a;b\nc\n")
    with pytest.raises(InputError, match="holds ';' among several lines"):
        write_config(DeepStreamOptions(engine=engine, output=tmp_path / "x.txt", network_type="classifier", labels=mixed))
    with pytest.raises(InputError, match=r"must be a probability in \[0, 1\)"):
        write_config(DeepStreamOptions(engine=engine, output=tmp_path / "x.txt", network_type="classifier",
                                       labels=one_line, classifier_threshold=1.5))
    features = fake_engine(tmp_path / "f.engine", rng, plugin=False, output="features", classes=192)[0]
    with pytest.raises(InputError, match="outputs features"):
        write_config(DeepStreamOptions(engine=features, output=tmp_path / "x.txt", network_type="classifier",
                                       labels=one_line))
    assert not (tmp_path / "x.txt").exists()


def test_files_beside_the_config_are_not_overwritten_silently(tmp_path, rng, capsys):
    """A user's file where the plugin-only copy (or the labels file) goes is refused unless --force; the same content
    is left as it is; nothing is written when a check fails."""
    onnx_path = save(elfatt_model(precision="fp16"), tmp_path / "m.onnx")
    engine, _ = fake_engine(tmp_path / "m.engine", rng, source_onnx=onnx_path, output="out")
    lib = static_plugin_library(tmp_path)
    out_dir = tmp_path / "ds"
    out_dir.mkdir()
    mine = out_dir / "m.plugin-only.onnx"
    mine.write_text("mine")
    out = out_dir / "c.txt"
    assert main(["deepstream", str(engine), "-o", str(out), "--plugin", str(lib)]) == EXIT_BAD_INPUT
    assert "m.plugin-only.onnx exists and differs" in capsys.readouterr().err
    assert mine.read_text() == "mine" and not out.exists()
    assert main(["deepstream", str(engine), "-o", str(out), "--plugin", str(lib), "--force"]) == 0
    copy = onnx.load(str(mine))
    assert {p.key: p.value for p in copy.metadata_props}["elfatt.plugin_only"] == "true"
    before = mine.stat().st_mtime_ns
    assert main(["deepstream", str(engine), "-o", str(out), "--plugin", str(lib)]) == 0  # the same copy: kept
    assert mine.stat().st_mtime_ns == before
    assert "wrote" in capsys.readouterr().out


def test_the_onnx_must_be_the_engines_model(tmp_path, rng, capsys):
    """--onnx must be an ONNX file with the engine's outputs and precision, with ElfattAttention nodes for a plugin
    engine; a file that differs from the sidecar's sha256 is noted."""
    from elfatt_deploy.export.model_loading import file_sha256

    onnx_path = save(elfatt_model(precision="fp16"), tmp_path / "m.onnx")
    engine, _ = fake_engine(tmp_path / "m.engine", rng, source_onnx=onnx_path, output="out")
    lib = static_plugin_library(tmp_path)
    out = tmp_path / "c.txt"
    text = tmp_path / "labels.txt"
    text.write_text("a\nb\n")
    fp32 = save(elfatt_model(precision="fp32"), tmp_path / "m32.onnx")
    other = save(elfatt_model(precision="fp16"), tmp_path / "other.onnx")
    m = onnx.load(other)
    m.graph.output[0].name = "y"
    m.graph.node[-1].output[0] = "y"
    onnx.save(m, other)
    inlined = onnx.load(onnx_path)
    inlined.graph.node[-1].domain = ""
    inlined.graph.node[-1].op_type = "Identity"
    for a in list(inlined.graph.node[-1].attribute):
        inlined.graph.node[-1].attribute.remove(a)
    del inlined.functions[:]
    inlined_path = tmp_path / "inl.onnx"
    onnx.save(inlined, str(inlined_path))
    for source, match in ((text, "labels.txt"), (fp32, "is an export at fp32, the engine is fp16"),
                          (other, r"has the outputs \['y'\], the engine \['out'\]"),
                          (inlined_path, "has no ElfattAttention nodes")):
        assert main(["deepstream", str(engine), "-o", str(out), "--plugin", str(lib), "--onnx", str(source)]) == \
            EXIT_BAD_INPUT, source
        err = capsys.readouterr().err
        assert re.search(match, err), err
        assert not out.exists()
    # the sidecar's sha256 of another file: noted, not refused (a --plugin-only export of the same model differs)
    engine2, _ = fake_engine(tmp_path / "n.engine", rng, source_onnx=onnx_path, output="out")
    import json
    side = Path(str(engine2) + ".json")
    meta = json.loads(side.read_text())
    meta["source_onnx"]["sha256"] = "0" * 64
    side.write_text(json.dumps(meta))
    assert main(["deepstream", str(engine2), "-o", str(out), "--plugin", str(lib)]) == 0
    assert "sha256 differs from the sidecar's" in capsys.readouterr().err
    assert file_sha256(onnx_path) != "0" * 64


def test_cli(tmp_path, rng, capsys):
    engine, _ = fake_engine(tmp_path / "m.engine", rng, plugin=False)
    assert main(["deepstream", str(engine), "-o", str(tmp_path / "c.txt"), "--input-size", "300x400"]) == 0
    assert read_property(tmp_path / "c.txt")["infer-dims"] == "3;300;400"
    assert main(["deepstream", str(engine), "-o", str(tmp_path / "nodir" / "c.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_plugin_the_search_cannot_find_is_an_environment_error(tmp_path, rng, capsys, monkeypatch):
    engine, _ = fake_engine(tmp_path / "m.engine", rng)  # its sidecar says it uses the plugin
    no_plugin_anywhere(monkeypatch, tmp_path)
    out = tmp_path / "a.txt"
    with pytest.raises(PluginNotFoundError):  # exit 3, as `build` says it
        write_config(DeepStreamOptions(engine=engine, output=out))
    assert main(["deepstream", str(engine), "-o", str(out)]) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "libelfatt_trt_plugin.so was not found" in err and "which nvinfer must load" in err
    assert "$ELFATT_PLUGIN_PATH (not set)" in err and "--plugin PATH/libelfatt_trt_plugin.so" in err
    assert not out.exists()


def test_a_plugin_path_that_does_not_exist_and_a_negative_gpu_id_are_bad_input(tmp_path, rng, capsys):
    engine, _ = fake_engine(tmp_path / "m.engine", rng)
    out = tmp_path / "a.txt"
    missing = tmp_path / "missing.so"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_config(DeepStreamOptions(engine=engine, output=out, plugin=missing))
    assert main(["deepstream", str(engine), "-o", str(out), "--plugin", str(missing)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"--plugin {missing} does not exist" in err
    assert "readable ELF" not in err and "Errno" not in err and "static registration" not in err
    lib = static_plugin_library(tmp_path)
    with pytest.raises(InputError, match="--gpu-id -1 must be"):
        write_config(DeepStreamOptions(engine=engine, output=out, plugin=lib, gpu_id=-1))
    assert main(["deepstream", str(engine), "-o", str(out), "--plugin", str(lib), "--gpu-id", "-1"]) == EXIT_BAD_INPUT
    assert "--gpu-id -1 must be a GPU index >= 0" in capsys.readouterr().err
    assert not out.exists()
    assert main(["deepstream", str(engine), "-o", str(out), "--plugin", str(lib), "--gpu-id", "1"]) == 0
    assert read_property(out)["gpu-id"] == "1"


def test_a_prefixed_op_type_is_refused_for_nvinfer_rebuilds(tmp_path):
    """onnx.compose.add_prefix's default renames the node to a_ElfattAttention: no plugin creator has that name."""
    import onnx.compose

    from elfatt_deploy.serving.deepstream import plugin_only_onnx

    source = Path(save(onnx.compose.add_prefix(elfatt_model(), "a_"), tmp_path / "prefixed.onnx"))
    with pytest.raises(InputError, match="'a_ElfattAttention'.*rename_functions=False"):
        plugin_only_onnx(source, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefixed.onnx"]  # no copy written


def test_classifier_inputs_that_would_go_wrong(tmp_path, rng, capsys):
    """-o naming the labels file (the config would overwrite it), a threshold without the classifier mode, a BOM,
    duplicate names: refused or handled, nothing written on refusal."""
    engine = _classifier_engine(tmp_path, rng, classes=3)
    labels = tmp_path / "labels.txt"
    labels.write_text("a;b;c\n")
    assert main(["deepstream", str(engine), "-o", str(labels), "--network-type", "classifier", "--labels",
                 str(labels)]) == EXIT_BAD_INPUT
    assert "is --labels: writing the config there would destroy it" in capsys.readouterr().err
    assert labels.read_text() == "a;b;c\n"
    out = tmp_path / "c.txt"
    assert main(["deepstream", str(engine), "-o", str(out), "--classifier-threshold", "0.3"]) == EXIT_BAD_INPUT
    assert "--classifier-threshold 0.3 applies with --network-type classifier only" in capsys.readouterr().err
    assert not out.exists()
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffcat\ndog\nbird\n".encode())
    write_config(DeepStreamOptions(engine=engine, output=out, network_type="classifier", labels=bom))
    assert (tmp_path / "c.labels.txt").read_bytes() == b"cat;dog;bird\n"
    twice = tmp_path / "twice.txt"
    twice.write_text("cat\ncat\ndog\n")
    with pytest.raises(InputError, match="names 'cat' more than once"):
        write_config(DeepStreamOptions(engine=engine, output=tmp_path / "x.txt", network_type="classifier", labels=twice))
    assert not (tmp_path / "x.txt").exists()


def test_the_onnx_must_have_the_engines_classes_and_model(tmp_path, rng, capsys):
    import onnx.helper as h

    engine = _classifier_engine(tmp_path, rng, classes=5)
    def model(classes, name):
        x = h.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["n", 3, "h", "w"])
        y = h.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["n", classes])
        g = h.make_graph([h.make_node("ReduceMean", ["image"], ["probabilities"], keepdims=0)], "g", [x], [y])
        m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
        h.set_model_props(m, {"elfatt.model_name": name, "elfatt.precision": "fp16"})
        return save(m, tmp_path / f"{name}-{classes}.onnx")
    out = tmp_path / "c.txt"
    for source, match in ((model(10, "elfatt_vit_tiny"), "has 10 elements per image, the engine's 5"),
                          (model(5, "elfatt_vit_micro"), "is an export of elfatt_vit_micro, the engine of elfatt_vit_tiny")):
        assert main(["deepstream", str(engine), "-o", str(out), "--onnx", str(source)]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert match in err, err
        assert not out.exists()
    assert main(["deepstream", str(engine), "-o", str(out), "--onnx", str(model(5, "elfatt_vit_tiny"))]) == 0


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs named pipes")
def test_labels_from_a_pipe_are_read_once_and_written_beside_the_config(tmp_path, rng):
    """--labels <(...) (a pipe) works: read once (a second read would wait for a writer forever), and written in
    nvinfer's form beside the config even when already in that form, since nvinfer cannot read the pipe later.
    A folder is refused by name."""
    import os
    import threading

    engine = _classifier_engine(tmp_path, rng, classes=3)
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as f:
            f.write(b"a;b;c\n")

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = tmp_path / "c.txt"
    result = {}
    worker = threading.Thread(target=lambda: result.update(written=write_config(DeepStreamOptions(
        engine=engine, output=out, network_type="classifier", labels=fifo))), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "write_config blocked on the pipe (read it twice?)"
    prop = read_property(out)
    assert Path(prop["labelfile-path"]) == (tmp_path / "c.labels.txt").resolve()
    assert (tmp_path / "c.labels.txt").read_bytes() == b"a;b;c\n"
    with pytest.raises(InputError, match="is a folder"):
        write_config(DeepStreamOptions(engine=engine, output=tmp_path / "x.txt", network_type="classifier",
                                       labels=tmp_path))


def _glib_unescape(value: str) -> str:
    """g_key_file_get_string's decoding of a string value (GLib's key-file format: \\s \\n \\t \\r \\\\)."""
    return re.sub(r"\\(.)", lambda m: {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], value)


GLIB_PYTHON = "/usr/bin/python3"  # the system Python, where PyGObject (gi) is packaged


def _glib_strings(path, keys):
    """The values GLib itself reads (None when PyGObject is not installed here)."""
    import json
    import subprocess

    script = ("import json, sys; import gi; gi.require_version('GLib', '2.0'); from gi.repository import GLib; "
              "k = GLib.KeyFile(); k.load_from_file(sys.argv[1], GLib.KeyFileFlags.NONE); "
              "print(json.dumps({key: k.get_string('property', key) for key in sys.argv[2:]}))")
    try:
        proc = subprocess.run([GLIB_PYTHON, "-c", script, str(path), *keys], capture_output=True, text=True,
                              timeout=60)
    except OSError:
        return None
    if proc.returncode != 0 and "No module named 'gi'" in proc.stderr:
        return None
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_paths_with_backslashes_and_newlines_come_back_as_they_are(tmp_path, rng):
    """nvinfer reads the paths with g_key_file_get_string, which decodes escapes: a raw backslash broke the group
    ('a value that cannot be interpreted'), a newline started a new line of the config."""
    odd = tmp_path / "odd dir\\x #1\nnext=1"
    odd.mkdir()
    onnx_path = Path(save(elfatt_model(with_function=False), odd / "p.onnx"))
    engine, _ = fake_engine(odd / "m.engine", rng, source_onnx=onnx_path, output="out", precision="fp32")
    lib = static_plugin_library(odd)
    out = tmp_path / "c.txt"
    write_config(DeepStreamOptions(engine=engine, output=out, plugin=lib, onnx=onnx_path))
    lines = out.read_text().splitlines()
    assert not any(line.startswith("next=") for line in lines), lines  # no line injected
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    keys = ("model-engine-file", "onnx-file", "custom-lib-path")
    expected = {"model-engine-file": str(engine.resolve()), "onnx-file": str(onnx_path.resolve()),
                "custom-lib-path": str(lib.resolve())}
    assert {k: _glib_unescape(values[k]) for k in keys} == expected
    from_glib = _glib_strings(out, keys)
    if from_glib is not None:  # GLib itself, where PyGObject is installed
        assert from_glib == expected
