import pytest

from elfatt_deploy.engine.plugin import PLUGIN_LIBRARY_NAME, PluginLoadError, find_plugin_library, load_plugin


def _lib(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF fake")
    return path


def test_explicit_path(tmp_path):
    lib = _lib(tmp_path / PLUGIN_LIBRARY_NAME)
    assert find_plugin_library(str(lib)) == lib
    assert find_plugin_library(str(tmp_path)) == lib  # a directory holding it
    with pytest.raises(FileNotFoundError, match="missing.so does not exist.*cmake"):
        find_plugin_library(str(tmp_path / "missing.so"))


def test_search_order(tmp_path):
    env_lib = _lib(tmp_path / "env" / PLUGIN_LIBRARY_NAME)
    repo = tmp_path / "repo"
    repo_lib = _lib(repo / "plugins" / "build" / "tensorrt" / PLUGIN_LIBRARY_NAME)
    sys_lib = _lib(tmp_path / "sys" / PLUGIN_LIBRARY_NAME)
    kw = dict(root=repo, system_dirs=[tmp_path / "sys"])
    assert find_plugin_library(env={"ELFATT_PLUGIN_PATH": str(env_lib.parent)}, **kw) == env_lib
    assert find_plugin_library(env={}, **kw) == repo_lib
    repo_lib.unlink()
    assert find_plugin_library(env={}, **kw) == sys_lib


def test_not_found_lists_every_path_tried(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        find_plugin_library(env={"ELFATT_PLUGIN_PATH": str(tmp_path / "a.so")}, root=tmp_path / "repo",
                            system_dirs=[tmp_path / "lib1", tmp_path / "lib2"])
    text = str(info.value)
    for expected in (str(tmp_path / "a.so"), str(tmp_path / "repo" / "plugins" / "build"),
                     str(tmp_path / "lib1" / PLUGIN_LIBRARY_NAME), str(tmp_path / "lib2" / PLUGIN_LIBRARY_NAME),
                     "--no-plugin", "ELFATT_PLUGIN_PATH"):
        assert expected in text


class FakeRegistry:
    """load_library registers the creator only when `works`; mimics refusal when already registered."""

    def __init__(self, works):
        self.works, self.creators = works, set()

    def load_library(self, path):
        if self.works == "load_library" and not self.creators:
            self.creators.add(("ElfattAttention", "1", ""))
            return object()
        return None

    def get_creator(self, name, version, namespace=""):
        return "creator" if (name, version, namespace) in self.creators else None


def test_load_never_silent(tmp_path):
    lib = _lib(tmp_path / PLUGIN_LIBRARY_NAME)  # not a real ELF: ctypes.CDLL fails too
    with pytest.raises(PluginLoadError) as info:
        load_plugin(lib, registry=FakeRegistry(works=None))
    text = str(info.value)
    assert str(lib) in text and "load_library returned no handle" in text and "ctypes.CDLL raised OSError" in text
    assert load_plugin(lib, registry=FakeRegistry(works="load_library"))["how"] == "registry.load_library"
    with pytest.raises(FileNotFoundError):
        load_plugin(tmp_path / "gone" / PLUGIN_LIBRARY_NAME, registry=FakeRegistry(works=None))
