"""strongpose.files.atomic_write: the target is whole or as before; no temporary file stays."""

import errno
import os

import pytest

from strongpose import files
from strongpose.files import atomic_write


def test_writes_through_a_temporary_file_beside_the_target(tmp_path):
    target = tmp_path / "model.weights.h5"
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert tmp.parent == tmp_path and tmp.name.endswith("-model.weights.h5")
        assert tmp.is_file() and not target.exists()     # created for the writer, empty
        tmp.write_bytes(b"new")

    assert atomic_write(target, write) == target
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.weights.h5"]
    assert seen[0].name.startswith(files.TMP_PREFIX)


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "results.json"
    target.write_text("old")

    def write(tmp):
        tmp.write_text("half of the n")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, write)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
    with pytest.raises(type(error)):                      # absent before: absent after
        atomic_write(tmp_path / "new.json", write)
    assert os.listdir(tmp_path) == ["results.json"]


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "best.json"
    target.write_text("old")

    def refuse(src, dst):
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError, match="cross-device"):
        atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["best.json"]


def test_temporary_names_differ(tmp_path):
    names = {files.temporary_name(tmp_path / "a.json") for _ in range(20)}
    assert len(names) == 20 and all(n.name.endswith("-a.json") for n in names)
