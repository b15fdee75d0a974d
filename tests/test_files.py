import os

import pytest
from PIL import Image

from sdrag import ParameterError, files
from sdrag.files import atomic_save_image, atomic_write_bytes, atomic_write_json, safe_name


def test_atomic_write_replaces_whole_files_with_normal_permissions(tmp_path):
    target = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    mode = target.stat().st_mode & 0o777
    assert mode == 0o666 & ~files._umask()
    atomic_write_json(tmp_path / "r.json", {"prompt": "ünïcode"})
    assert "ünïcode" in (tmp_path / "r.json").read_text(encoding="utf-8")
    atomic_save_image(Image.new("RGB", (4, 4)), tmp_path / "i.png")
    assert Image.open(tmp_path / "i.png").size == (4, 4)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = atomic_write_bytes(tmp_path / "keep.txt", b"precious")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"half")
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("name", ["../up", "/abs", "a/b", "a\\b", "nul\x00", "..", "", "  "])
def test_names_never_leave_their_folder(name):
    with pytest.raises(ParameterError):
        safe_name(name)


def test_plain_names_pass():
    assert safe_name("run-1_final.v2") == "run-1_final.v2"
