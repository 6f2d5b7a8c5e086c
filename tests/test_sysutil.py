"""Tests for ex3lib.sysutil: the atomic file write and the worker environment."""

import os

import pytest

from ex3lib.sysutil import PINNED_THREADS, atomic_write, environment


def test_failed_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert os.listdir(tmp_path) == ["target"]
    assert target.read_bytes() == b"old"


def test_written_file_has_the_mode_of_a_plain_open(tmp_path):
    atomic_write(tmp_path / "atomic.txt", lambda f: f.write("é"), mode="w")
    (tmp_path / "plain.txt").write_text("é", encoding="utf-8")
    assert (tmp_path / "atomic.txt").read_bytes() == (tmp_path / "plain.txt").read_bytes()
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
    assert sorted(os.listdir(tmp_path)) == ["atomic.txt", "plain.txt"]


def test_environment_is_restored(monkeypatch):
    names = list(PINNED_THREADS)
    monkeypatch.setenv(names[0], "4")
    for name in names[1:]:
        monkeypatch.delenv(name, raising=False)
    with environment(PINNED_THREADS):
        assert all(os.environ[name] == "1" for name in names)
    assert os.environ[names[0]] == "4"
    assert not any(name in os.environ for name in names[1:])
