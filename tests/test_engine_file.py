"""Engine files: raw plan + sidecar, a plan alone, and the old header format (read-only)."""

import json
import os
import struct
from pathlib import Path

import pytest

from elfatt_deploy.engine.engine_file import (
    SOURCE_LEGACY,
    SOURCE_NONE,
    SOURCE_SIDECAR,
    EngineFileError,
    load_engine,
    read_engine_file,
    read_engine_metadata,
    sha256_bytes,
    sidecar_path,
    write_engine_file,
)
from elfatt_deploy.engine.legacy_header import ENGINE_MAGIC


def _meta(rng):
    return {"tensorrt_version": "10.3.0", "gpu": {"name": "Orin", "compute_capability": "8.7"},
            "profiles": [{"min": [1, 3, 224, 224], "opt": [int(rng.integers(1, 9)), 3, 224, 224], "max": [8, 3, 512, 512]}],
            "note": "ünïcode ✓"}


def _plan(rng, n=None):
    return rng.integers(0, 256, size=int(n or rng.integers(1, 5000)), dtype="uint8").tobytes()


def legacy_bytes(metadata, plan):
    """An engine file as elfatt-deploy 0.1 wrote it (magic, length, JSON, plan)."""
    header = json.dumps(metadata, sort_keys=True).encode()
    return ENGINE_MAGIC + struct.pack("<I", len(header)) + header + plan


def test_plan_is_written_verbatim_with_a_sidecar(tmp_path, rng):
    meta, plan = _meta(rng), _plan(rng)
    path = write_engine_file(tmp_path / "m.engine", meta, plan)
    assert path.read_bytes() == plan  # exactly what TensorRT serialized: trtexec / Triton / DeepStream load it
    side = json.loads(sidecar_path(path).read_text())
    assert side["plan"] == {"sha256": sha256_bytes(plan), "bytes": len(plan)}
    engine = load_engine(path)
    assert engine.source == SOURCE_SIDECAR and engine.plan == plan and not engine.warnings
    assert {k: engine.metadata[k] for k in meta} == meta
    assert read_engine_file(path) == (engine.metadata, plan) and read_engine_metadata(path) == engine.metadata
    assert sorted(os.listdir(tmp_path)) == ["m.engine", "m.engine.json"]  # no temp file left behind


def test_stale_sidecar_never_describes_a_new_plan(tmp_path, rng, monkeypatch):
    path = write_engine_file(tmp_path / "m.engine", _meta(rng), _plan(rng))
    old_side = sidecar_path(path).read_text()
    new_plan = _plan(rng, 64)
    path.write_bytes(new_plan)  # e.g. trtexec --saveEngine over it, or a copy without its sidecar
    with pytest.raises(EngineFileError, match=r"describes another plan .*validate and bench also run a plan whose sidecar is moved away, unchecked; triton and deepstream need the sidecar"):
        load_engine(path)
    # a rebuild removes the old sidecar before replacing the plan: a crash in between leaves no stale sidecar
    calls = []
    import elfatt_deploy.engine.engine_file as ef

    real = ef.atomic_write_bytes

    def crash_after_plan(target, data):
        real(target, data)
        calls.append(sidecar_path(target).exists())
        raise KeyboardInterrupt

    monkeypatch.setattr(ef, "atomic_write_bytes", crash_after_plan)
    with pytest.raises(KeyboardInterrupt):
        write_engine_file(path, {"a": 1}, new_plan)
    monkeypatch.undo()
    assert calls == [False] and not sidecar_path(path).exists() and old_side
    engine = load_engine(path)
    assert engine.source == SOURCE_NONE and engine.plan == new_plan


def test_plan_without_sidecar_loads_with_a_warning(tmp_path, rng):
    path = tmp_path / "trtexec.plan"
    plan = _plan(rng)
    path.write_bytes(plan)
    engine = load_engine(path)
    assert engine.source == SOURCE_NONE and engine.plan == plan and engine.metadata == {} and not engine.checkable
    assert len(engine.warnings) == 1 and "cannot be checked" in engine.warnings[0]


def test_old_header_format_still_loads(tmp_path, rng):
    meta, plan = _meta(rng), _plan(rng)
    path = tmp_path / "old.engine"
    path.write_bytes(legacy_bytes(meta, plan))
    sidecar_path(path).write_text("{}")
    engine = load_engine(path)
    assert engine.source == SOURCE_LEGACY and engine.metadata == meta and engine.plan == plan
    assert any("old elfatt-deploy header format" in w for w in engine.warnings)
    assert any("is ignored" in w for w in engine.warnings)


def test_failed_write_changes_nothing(tmp_path, rng):
    path = write_engine_file(tmp_path / "m.engine", _meta(rng), b"old plan")
    before = (path.read_bytes(), sidecar_path(path).read_text())
    with pytest.raises(TypeError):
        write_engine_file(path, {"bad": object()}, b"new plan")  # JSON encoding fails before any write
    with pytest.raises(ValueError, match="empty"):
        write_engine_file(path, {}, b"")
    assert (path.read_bytes(), sidecar_path(path).read_text()) == before
    assert sorted(os.listdir(tmp_path)) == ["m.engine", "m.engine.json"]


def test_missing_directory_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_engine_file(tmp_path / "nope" / "m.engine", {}, b"plan")
    with pytest.raises(FileNotFoundError, match="elfatt-deploy build"):
        load_engine(tmp_path / "none.engine")
    (tmp_path / "empty.engine").write_bytes(b"")
    with pytest.raises(EngineFileError, match="empty"):
        load_engine(tmp_path / "empty.engine")


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid UTF-8 JSON"),
    ('{"format": "something else"}', "not an elfatt-deploy engine sidecar"),
    ('{"format": "elfatt-deploy engine sidecar", "format_version": 99}', "newer than this elfatt-deploy reads"),
])
def test_bad_sidecar(tmp_path, rng, content, match):
    path = tmp_path / "m.engine"
    path.write_bytes(_plan(rng))
    sidecar_path(path).write_text(content)
    with pytest.raises(EngineFileError, match=match) as info:
        load_engine(path)
    assert str(sidecar_path(path)) in str(info.value)


@pytest.mark.parametrize("cut", ["length", "header", "plan"])
def test_truncated_old_format(tmp_path, rng, cut):
    data = legacy_bytes(_meta(rng), b"PLANBYTES")
    header_len = struct.unpack_from("<I", data, len(ENGINE_MAGIC))[0]
    end = {"length": len(ENGINE_MAGIC) + 2, "header": len(ENGINE_MAGIC) + 4 + header_len // 2,
           "plan": len(ENGINE_MAGIC) + 4 + header_len}[cut]
    path = tmp_path / "t.engine"
    path.write_bytes(data[:end])
    with pytest.raises(EngineFileError, match="truncated") as info:
        load_engine(path)
    assert str(path) in str(info.value)


def test_corrupt_old_header(tmp_path):
    path = tmp_path / "c.engine"
    for body, match in ((b"{not json", "not valid UTF-8 JSON"), (b"[1, 2]", "not an object")):
        path.write_bytes(ENGINE_MAGIC + struct.pack("<I", len(body)) + body + b"plan")
        with pytest.raises(EngineFileError, match=match):
            load_engine(path)
    path.write_bytes(ENGINE_MAGIC + struct.pack("<I", 0xFFFFFFFF) + b"x" * 64)
    with pytest.raises(EngineFileError, match="header length"):
        load_engine(path)
    path.write_bytes(ENGINE_MAGIC[:-1] + b"\x09" + struct.pack("<I", 2) + b"{}plan")
    with pytest.raises(EngineFileError, match="format version 9"):
        load_engine(path)


def _other_files(tmp_path):
    """Files people pass as --engine by mistake, each written by the library that makes them."""
    import torch
    from safetensors.torch import save_file

    from elfatt_deploy.export.op_model import single_op_model
    from elfatt_deploy.op.spec import ElfattAttrs

    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(single_op_model(ElfattAttrs(global_heads=1, local_heads=1, window_h=3, window_w=3),
                                          8).SerializeToString())
    torch.save({"w": torch.zeros(3)}, tmp_path / "model.pt")
    save_file({"w": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    sidecar = write_engine_file(tmp_path / "m.engine", {"precision": "fp16"}, b"\x00plan\xff" * 8)
    (tmp_path / "notes.txt").write_text("an engine should be here; ünïcode ✓\n" * 200)
    import onnxruntime
    library = next(p for p in Path(onnxruntime.__file__).parent.rglob("*.so*"))
    return {onnx_path: "an ONNX model", tmp_path / "model.pt": "a ZIP archive",
            tmp_path / "model.safetensors": "a safetensors checkpoint", sidecar_path(sidecar): "a JSON file",
            tmp_path / "notes.txt": "a text file", library: "an ELF shared library"}


def test_files_that_are_not_plans_are_named_for_what_they_are(tmp_path):
    for path, kind in _other_files(tmp_path).items():
        with pytest.raises(EngineFileError, match="not a TensorRT plan") as info:
            load_engine(path)
        message = str(info.value)
        assert message.startswith(f"{path} is {kind}"), message
    with pytest.raises(EngineFileError, match=f"elfatt-deploy build {tmp_path / 'model.onnx'} -o"):
        load_engine(tmp_path / "model.onnx")


def test_text_with_a_byte_order_mark_is_text():
    from elfatt_deploy.engine.not_a_plan import describe_non_plan

    assert describe_non_plan("\ufeffcat\ndog\nbird\nfish\nhorse\n".encode()).startswith("a text file")


@pytest.mark.parametrize("size", [1, 2, 15, 16, 4096, 100_000])
def test_binary_plans_of_any_size_are_not_mistaken_for_other_files(tmp_path, rng, size):
    """What the recogniser must never do: refuse a plan. Random binary data (as TensorRT's plans are, after a
    short header) of every size, also starting with the bytes the checks look at."""
    from elfatt_deploy.engine.not_a_plan import describe_non_plan

    for prefix in (b"", b"\x08", b"ftrt", b"{"):
        plan = (prefix + _plan(rng, size))[:size] if size > len(prefix) else _plan(rng, size)
        if size >= 16:  # a text file shorter than that is not judged; random bytes are not all printable
            plan = plan[:8] + b"\x00" + plan[9:]
        assert describe_non_plan(plan) is None, plan[:32]
        path = tmp_path / "p.plan"
        path.write_bytes(plan)
        assert load_engine(path).source == SOURCE_NONE
