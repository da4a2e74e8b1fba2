"""Atomic writes: the target is either the old file or the complete new one, never partial."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from handrecon import io as hio
from handrecon.errors import UserError


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.json"
    hio.atomic_write_json(path, {"x": 1})
    hio.atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    hio.atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(hio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        hio.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_image_round_trip(tmp_path):
    img = (np.arange(12 * 10 * 3) % 255).astype(np.uint8).reshape(12, 10, 3)
    hio.atomic_save_image(tmp_path / "x.png", img)
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "x.png")), img)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_modes_open_gives(tmp_path, umask):
    """Atomic writes create files as open() would (0o666 less the umask), not mkstemp's 0o600."""
    old = os.umask(umask)
    try:
        with open(tmp_path / "reference", "w") as fh:
            fh.write("x")
        hio.atomic_write_text(tmp_path / "a.txt", "x")
        hio.atomic_save_image(tmp_path / "b.png", np.zeros((2, 2), np.uint8))
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "reference").stat().st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.txt", "b.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_ensure_writable_dir(tmp_path):
    folder = hio.ensure_writable_dir(tmp_path / "a" / "b")
    assert folder.is_dir() and list(folder.iterdir()) == []  # the probe is gone
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match=r"output folder .*file is not writable: Not a directory"):
        hio.ensure_writable_dir(tmp_path / "file")
    with pytest.raises(UserError, match=r"out .*file/sub is not writable: Not a directory"):
        hio.ensure_writable_dir(tmp_path / "file" / "sub", what="out")


def test_a_failed_write_names_the_file(tmp_path, monkeypatch):
    """A full disk raises ENOSPC from write() with no file name; the error names the target."""
    import errno

    class Full:  # an open file on a full disk
        def __init__(self, fd, mode):
            self.fd = fd

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            os.close(self.fd)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(hio.os, "fdopen", Full)
    with pytest.raises(OSError) as err:
        hio.atomic_write_text(tmp_path / "a.txt", "x")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "a.txt")
    assert list(tmp_path.iterdir()) == []  # no temporary file left
