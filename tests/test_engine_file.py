import json
import os
import struct

import pytest

from elfatt_deploy.engine.engine_file import (
    ENGINE_MAGIC,
    EngineFileError,
    decode_engine,
    encode_engine,
    read_engine_file,
    read_engine_metadata,
    write_engine_file,
)


def _meta(rng):
    return {"tensorrt_version": "10.3.0", "gpu": {"name": "Orin", "compute_capability": "8.7"},
            "profiles": [{"min": [1, 3, 224, 224], "opt": [int(rng.integers(1, 9)), 3, 224, 224], "max": [8, 3, 512, 512]}],
            "note": "ünïcode ✓"}


def test_round_trip(tmp_path, rng):
    meta = _meta(rng)
    plan = rng.integers(0, 256, size=int(rng.integers(1, 5000)), dtype="uint8").tobytes()
    path = write_engine_file(tmp_path / "m.engine", meta, plan)
    got_meta, got_plan = read_engine_file(path)
    assert got_meta == meta and got_plan == plan
    assert read_engine_metadata(path) == meta
    raw = path.read_bytes()
    assert raw.startswith(ENGINE_MAGIC)
    (n,) = struct.unpack_from("<I", raw, len(ENGINE_MAGIC))
    assert json.loads(raw[len(ENGINE_MAGIC) + 4 : len(ENGINE_MAGIC) + 4 + n]) == meta
    assert os.listdir(tmp_path) == ["m.engine"]  # no temp file left behind


def test_overwrite_is_atomic_on_failure(tmp_path, rng):
    path = write_engine_file(tmp_path / "m.engine", _meta(rng), b"old plan")
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_engine_file(path, {"bad": object()}, b"new plan")  # JSON encoding fails before any write
    with pytest.raises(ValueError, match="empty"):
        write_engine_file(path, {}, b"")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.engine"]


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_engine_file(tmp_path / "nope" / "m.engine", {}, b"plan")


@pytest.mark.parametrize("cut", ["magic", "length", "header", "plan"])
def test_truncated(tmp_path, rng, cut):
    data = encode_engine(_meta(rng), b"PLANBYTES")
    header_len = struct.unpack_from("<I", data, len(ENGINE_MAGIC))[0]
    end = {"magic": 4, "length": len(ENGINE_MAGIC) + 2, "header": len(ENGINE_MAGIC) + 4 + header_len // 2,
           "plan": len(ENGINE_MAGIC) + 4 + header_len}[cut]
    path = tmp_path / "t.engine"
    path.write_bytes(data[:end])
    with pytest.raises(EngineFileError, match="truncated|too short") as info:
        read_engine_file(path)
    assert str(path) in str(info.value)
    with pytest.raises(EngineFileError):
        read_engine_metadata(path) if cut != "plan" else decode_engine(data[:end])


def test_corrupt_header(tmp_path):
    body = b"{not json"
    path = tmp_path / "c.engine"
    path.write_bytes(ENGINE_MAGIC + struct.pack("<I", len(body)) + body + b"plan")
    with pytest.raises(EngineFileError, match="not valid UTF-8 JSON"):
        read_engine_file(path)
    body = b"[1, 2]"
    path.write_bytes(ENGINE_MAGIC + struct.pack("<I", len(body)) + body + b"plan")
    with pytest.raises(EngineFileError, match="not an object"):
        read_engine_file(path)
    path.write_bytes(ENGINE_MAGIC + struct.pack("<I", 0xFFFFFFFF) + b"x" * 64)
    with pytest.raises(EngineFileError, match="header length"):
        read_engine_file(path)


def test_plain_plan_refused(tmp_path, rng):
    path = tmp_path / "plain.engine"
    path.write_bytes(b"ftrt" + rng.integers(0, 256, 200, dtype="uint8").tobytes())
    with pytest.raises(EngineFileError, match="not an elfatt-deploy engine.*elfatt-deploy build"):
        read_engine_file(path)


def test_other_header_version(tmp_path):
    path = tmp_path / "v9.engine"
    path.write_bytes(ENGINE_MAGIC[:-1] + b"\x09" + struct.pack("<I", 2) + b"{}plan")
    with pytest.raises(EngineFileError, match="format version 9"):
        read_engine_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="elfatt-deploy build"):
        read_engine_file(tmp_path / "none.engine")
