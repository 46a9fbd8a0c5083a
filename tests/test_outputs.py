"""Atomic output directories: written beside, renamed into place, never half there."""

from __future__ import annotations

import pytest

from lora_recycle.errors import UserError
from lora_recycle.outputs import INCOMPLETE_MARKER, atomic_dir, check_out_dir, incomplete_reason


def test_written_beside_then_renamed(tmp_path):
    out = tmp_path / "a" / "out"
    with atomic_dir(out) as partial:
        assert partial.parent == out.parent and partial.name.startswith(".out.partial-")
        assert incomplete_reason(partial) is not None
        (partial / "w.bin").write_bytes(b"1")
        assert not out.exists()
    assert sorted(p.name for p in out.iterdir()) == ["w.bin"]
    assert incomplete_reason(out) is None
    assert [p.name for p in out.parent.iterdir()] == ["out"]


def test_failure_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(out) as partial:
        (partial / "w.bin").write_bytes(b"1")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_whole_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(UserError, match="not empty.*--overwrite"):
        check_out_dir(out)
    with atomic_dir(out, overwrite=True) as partial:
        (partial / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_file_and_file_parent_are_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_out_dir(tmp_path / "f", overwrite=True)
    with pytest.raises(UserError, match="is a file"):
        check_out_dir(tmp_path / "f" / "sub")


def test_stale_partial_of_a_dead_writer_is_removed(tmp_path):
    stale = tmp_path / ".out.partial-999999999"
    stale.mkdir()
    (stale / INCOMPLETE_MARKER).write_text("")
    with atomic_dir(tmp_path / "out") as partial:
        (partial / "w").write_text("1")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_interrupted_output_is_replaced_without_overwrite(tmp_path):
    """Killed between the rename and the marker's removal: NAME holds the marker, so it is ours to replace."""
    out = tmp_path / "out"
    out.mkdir()
    (out / INCOMPLETE_MARKER).write_text("")
    (out / "half.bin").write_bytes(b"1")
    assert incomplete_reason(out) is not None
    with atomic_dir(out) as partial:
        (partial / "w").write_text("1")
    assert [p.name for p in out.iterdir()] == ["w"]
