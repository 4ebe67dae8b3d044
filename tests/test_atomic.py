"""``atomic_path``: outputs appear complete or not at all, with normal permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline.atomic import atomic_path, write_text_atomic


class Boom(Exception):
    pass


@pytest.fixture
def umask():
    """``umask(mask)`` sets the process umask for the test; the old one comes back after."""
    old = os.umask(0o022)  # os.umask returns the previous mask; it is restored below

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_appears_on_success(tmp_path):
    final = tmp_path / "sub" / "deeper" / "out.json"  # parents are created
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp != final
        tmp.write_text("done")
        assert not final.exists()  # nothing under the final name until the body finishes
    assert final.read_text() == "done"
    assert sorted(p.name for p in final.parent.iterdir()) == ["out.json"]


@pytest.mark.parametrize("exc", [Boom("disk full"), KeyboardInterrupt()])
def test_file_body_raises_leaves_nothing(tmp_path, exc):
    final = tmp_path / "out.json"
    with pytest.raises(type(exc)):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise exc
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary left behind either


def test_file_body_raises_keeps_the_old_output(tmp_path):
    final = tmp_path / "out.json"
    final.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(final) as tmp:
            tmp.write_text("new but broken")
            raise Boom()
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_file_replaces_existing_output(tmp_path):
    final = tmp_path / "out.json"
    final.write_text("old and longer than the new one")
    with atomic_path(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_dir_appears_on_success(tmp_path):
    final = tmp_path / "epoch=001"
    with atomic_path(final, is_dir=True) as tmp:
        assert tmp.is_dir() and not final.exists()
        (tmp / "part-0.parquet").write_bytes(b"x")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "f").write_text("y")
    assert (final / "part-0.parquet").read_bytes() == b"x"
    assert (final / "nested" / "f").read_text() == "y"
    assert [p.name for p in tmp_path.iterdir()] == ["epoch=001"]


@pytest.mark.parametrize("exc", [Boom("crash"), KeyboardInterrupt()])
def test_dir_body_raises_leaves_nothing(tmp_path, exc):
    final = tmp_path / "epoch=001"
    with pytest.raises(type(exc)):
        with atomic_path(final, is_dir=True) as tmp:
            (tmp / "part-0.parquet").write_bytes(b"half")
            (tmp / "nested").mkdir()
            (tmp / "nested" / "f").write_text("y")
            raise exc
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_dir_body_raises_keeps_the_old_output(tmp_path):
    final = tmp_path / "epoch=001"
    final.mkdir()
    (final / "old").write_text("old")
    with pytest.raises(Boom):
        with atomic_path(final, is_dir=True) as tmp:
            (tmp / "new").write_text("new")
            raise Boom()
    assert [p.name for p in final.iterdir()] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["epoch=001"]


def test_dir_replaces_existing_output(tmp_path):
    final = tmp_path / "epoch=001"
    final.mkdir()
    (final / "stale").write_text("from the last run")
    with atomic_path(final, is_dir=True) as tmp:
        (tmp / "fresh").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["fresh"]  # no stale leftovers mixed in
    assert [p.name for p in tmp_path.iterdir()] == ["epoch=001"]


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                       (0o077, 0o600, 0o700)])
def test_outputs_get_normal_permissions(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    f = tmp_path / "out.txt"
    with atomic_path(f) as tmp:
        tmp.write_text("x")
    assert _mode(f) == file_mode

    d = tmp_path / "outdir"
    with atomic_path(d, is_dir=True) as tmp:
        (tmp / "inner.txt").write_text("x")
    assert _mode(d) == dir_mode
    assert _mode(d / "inner.txt") == file_mode

    write_text_atomic(tmp_path / "w.txt", "y")
    assert _mode(tmp_path / "w.txt") == file_mode


def test_replacing_keeps_normal_permissions(tmp_path, umask):
    umask(0o022)
    final = tmp_path / "out.txt"
    final.write_text("old")
    final.chmod(0o600)
    with atomic_path(final) as tmp:
        tmp.write_text("new")
    assert _mode(final) == 0o644


def test_write_text_atomic(tmp_path):
    path = tmp_path / "a" / "config.json"
    write_text_atomic(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode("utf-8")
    write_text_atomic(path, "second")
    assert path.read_text(encoding="utf-8") == "second"
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]
