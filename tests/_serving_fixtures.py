"""Engines with sidecars as `elfatt-deploy build` writes them, for the serving-config tests (no TensorRT)."""

from __future__ import annotations

import json

from elfatt_deploy.engine.engine_file import write_engine_file
from elfatt_deploy.export.metadata import INPUT_NORMALIZATION


def fake_engine(path, rng, *, cc="8.7", batch=(1, 4, 8), hw=((224, 224), (512, 512), (1024, 1024)), plugin=True,
                precision="fp16", output="logits", classes=10, source_onnx=None, trt="10.3.0",
                plugin_sha256="ab" * 32):
    """Writes a random 'plan' and its sidecar; returns (path, plan bytes)."""
    (hmin, wmin), (hopt, wopt), (hmax, wmax) = hw
    profile = {"min": [batch[0], 3, hmin, wmin], "opt": [batch[1], 3, hopt, wopt], "max": [batch[2], 3, hmax, wmax]}
    dyn = lambda lo, hi: lo if lo == hi else -1  # noqa: E731
    meta = {
        "tensorrt_version": trt, "gpu": {"name": {"8.7": "Orin", "9.0": "H100"}.get(cc, "GPU"), "compute_capability": cc},
        "jetson": {"jetpack": "6.1/6.2"} if cc == "8.7" else None,
        "plugin": {"used": True, "version": "1", "library_sha256": plugin_sha256} if plugin else {"used": False},
        "precision": precision,
        "io": [{"name": "image", "mode": "input", "dtype": "HALF" if precision == "fp16" else "FLOAT",
                "shape": [dyn(batch[0], batch[2]), 3, dyn(hmin, hmax), dyn(wmin, wmax)]},
               {"name": output, "mode": "output", "dtype": "FLOAT", "shape": [dyn(batch[0], batch[2]), classes]}],
        "profiles": [profile],
        "model": {"elfatt.model_name": "elfatt_vit_tiny", "elfatt.model_config": json.dumps({"num_classes": classes}),
                  "elfatt.input_normalization": json.dumps(INPUT_NORMALIZATION)},
        "source_onnx": {"path": str(source_onnx) if source_onnx else "/nowhere/m.onnx", "sha256": None},
        "toolkit_version": "0.1.0",
    }
    plan = rng.integers(0, 256, size=512, dtype="uint8").tobytes()
    write_engine_file(path, meta, plan)
    return path, plan


def static_plugin_library(tmp_path, name="libelfatt_trt_plugin.so"):
    """A real (tiny) ELF shared library without getCreators: what the serving writers accept as the plugin."""
    from test_engine_plugin_search import STATIC_SRC, _cc

    return _cc(tmp_path, f"pluginlib/{name}", STATIC_SRC)


def vc_plugin_library(tmp_path):
    from test_engine_plugin_search import VC_SRC, _cc

    return _cc(tmp_path, "vclib/libelfatt_trt_plugin_vc.so", VC_SRC)


def no_plugin_anywhere(monkeypatch, tmp_path):
    """Makes the plugin search (engine/plugin.py) find nothing: no $ELFATT_PLUGIN_PATH, no checkout build, no system
    library; returns the search's error (PluginNotFoundError)."""
    import pytest

    from elfatt_deploy.engine import plugin

    monkeypatch.delenv("ELFATT_PLUGIN_PATH", raising=False)
    monkeypatch.setattr(plugin, "repo_root", lambda: tmp_path / "no-checkout")
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    monkeypatch.setattr(plugin, "_system_dirs", lambda: [tmp_path / "no-system-lib"])
    monkeypatch.setattr(plugin.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(plugin.PluginNotFoundError) as caught:
        plugin.find_plugin_library()
    return caught.value
