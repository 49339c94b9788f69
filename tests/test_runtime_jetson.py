import subprocess

from elfatt_deploy.engine.environment import parse_nv_tegra_release
from elfatt_deploy.runtime import jetson

SHOW_DVFS = """SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit
Online CPUs: 0-11
cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=1420800 IdleStates: WFI=1 c7=1
cpu1: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=729600 IdleStates: WFI=1 c7=1
cpu4: Online=0 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=729600 IdleStates: WFI=1 c7=1
GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride=0
NV Power Mode: MAXN
"""


def _fixed(text):
    out = []
    for line in text.splitlines():
        if line.startswith(("cpu0", "cpu1")):
            line = line.replace("MinFreq=729600", "MinFreq=2201600")
        if line.startswith("GPU"):
            line = "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000"
        out.append(line.replace("FreqOverride=0", "FreqOverride=1"))
    return "\n".join(out)


def test_parse_clocks_and_fixed_state():
    state = jetson.parse_jetson_clocks(SHOW_DVFS)
    assert state["gpu"] == {"minfreq": 306000000, "maxfreq": 1300500000, "currentfreq": 306000000}
    assert state["emc"]["freqoverride"] == 0 and state["power_mode"] == "MAXN" and len(state["cpus"]) == 3
    assert jetson.clocks_fixed(state) is False
    assert jetson.clocks_fixed(jetson.parse_jetson_clocks(_fixed(SHOW_DVFS))) is True  # offline cpu4 ignored
    assert jetson.clocks_fixed(jetson.parse_jetson_clocks("nothing useful")) is None


def test_parse_nvpmodel():
    assert jetson.parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n2\n") == {"name": "15W", "id": 2}
    assert jetson.parse_nvpmodel("garbage") is None


def test_tegra_release():
    text = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"
    assert parse_nv_tegra_release(text) == {"l4t_release": "36.4.3", "jetpack": "6.2", "board": "generic"}
    assert parse_nv_tegra_release("# R36 (release), REVISION: 4.0, GCID: 1")["jetpack"] == "6.1"
    assert parse_nv_tegra_release("# R99 (release), REVISION: 1.0")["jetpack"] == "unknown"
    assert parse_nv_tegra_release("not a release file") is None


def test_power_state_with_fake_tools(monkeypatch, tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic")
    monkeypatch.setattr(jetson, "jetson_release", lambda: parse_nv_tegra_release(release.read_text()))
    monkeypatch.setattr(jetson.shutil, "which", lambda name: f"/fake/{name}")

    def fake_run(cmd, **kw):
        if cmd[0].endswith("nvpmodel"):
            return subprocess.CompletedProcess(cmd, 0, "NV Power Mode: MAXN\n0\n", "")
        return subprocess.CompletedProcess(cmd, 1, "", "jetson_clocks: Please run as root")

    state = jetson.power_state(runner=fake_run)
    assert state["nvpmodel"] == {"name": "MAXN", "id": 0} and state["clocks_fixed"] is None
    assert any("sudo" in n for n in state["notes"])
    assert "sudo" in jetson.clock_warning(state)
    state["clocks_fixed"] = False
    assert "not fixed" in jetson.clock_warning(state)
    state["clocks_fixed"] = True
    assert jetson.clock_warning(state) is None


def test_not_a_jetson_here(monkeypatch):
    monkeypatch.setattr(jetson, "jetson_release", lambda: None)
    assert jetson.power_state() is None and jetson.clock_warning(None) is None
