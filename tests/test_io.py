"""Atomic writes: the target is either the old file or the complete new one, never partial."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from handrecon import io as hio


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
