"""Atomic file output: write to a temporary sibling, then rename into place.

A crash (or ``kill -9``) while writing leaves at most a hidden ``.tmp-*`` file
or folder behind, never a half-written artifact under the final name, so a
later run never mistakes a partial output for a complete one.

Replacing an existing folder never deletes it in place: the new folder is
swapped in first (one ``renameat2(RENAME_EXCHANGE)`` on Linux, else two
renames through a hidden ``.tmp-*_old`` sibling) and only then is the old one,
by now under a hidden name, deleted. A kill at any point leaves the final name
holding the complete old output, the complete new one, or (between the two
fallback renames only) nothing.

A full disk, exceeded quota, read-only file system or missing write permission
becomes an :class:`~pipeline.errors.ArtifactWriteError` naming the output and
what to do, with nothing left under the final name and no temporary behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline.errors import ArtifactWriteError

# errno -> what the user should do about it. These are conditions of the
# artifacts folder (not bugs, not bad input), so they get an actionable message.
_WRITE_ADVICE: dict[int, str] = {
    errno.ENOSPC: "the disk holding {folder} is full: free space on it, or point [artifacts] root at a disk "
                  "with room",
    errno.EDQUOT: "your disk quota for {folder} is exceeded: free space within it, or point [artifacts] root "
                  "elsewhere",
    errno.EROFS: "the file system holding {folder} is read-only: remount it read-write, or point [artifacts] "
                 "root at a writable folder",
    errno.EACCES: "permission denied: make {folder} writable for this user, or point [artifacts] root elsewhere",
    errno.EPERM: "operation not permitted: make {folder} writable for this user, or point [artifacts] root "
                 "elsewhere",
}

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# Errors meaning "this kernel, libc or file system cannot exchange": fall back to two renames.
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def _umask() -> int:
    # /proc reads the umask without changing it; os.umask can only read it by
    # setting it, which would briefly affect files other threads create.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp/mkdtemp create owner-only entries; give outputs the usual permissions.
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
        try:
            tmp.chmod(0o777 & ~_umask())
        except BaseException:
            _remove(tmp)
            raise
        return tmp
    fd, name = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(name, 0o666 & ~_umask())
    except BaseException:
        _remove(Path(name))
        raise
    return Path(name)


def _remove(path: Path) -> None:
    """Delete a file or folder if it is there, ignoring errors: it is a hidden leftover at worst."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _load_renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28 (musl, macOS, ...)
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the entries ``a`` and ``b`` (both must exist).

    Returns False, having changed nothing, where the platform or file system
    cannot exchange; raises ``OSError`` for any other failure.
    """
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _swap_in(tmp: Path, final: Path) -> Path | None:
    """Put ``tmp`` under the name ``final``; return where the old ``final`` now is (hidden), if any."""
    if not os.path.lexists(final):
        os.replace(tmp, final)
        return None
    if exchange(tmp, final):
        return tmp  # the old output now sits under the hidden temporary name
    # The kill window between these two renames leaves nothing under the final
    # name (the old output is complete, under a hidden name): never a partial one.
    # The suffix keeps it matching ``.tmp-<name>-\w+`` like every other temporary.
    aside = final.with_name(f".tmp-{final.name}-{secrets.token_hex(5)}_old")
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(aside, final)  # put the old output back
        raise
    return aside


def _same_or_inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _is_write_failure(exc: BaseException, tmp: Path | None, final: Path) -> bool:
    """True for a disk-full/read-only/permission error about our own output, not some input the body read."""
    if not isinstance(exc, OSError) or exc.errno not in _WRITE_ADVICE:
        return False
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    if not names:  # writes (and pyarrow's errors) usually carry no file name
        return True
    folder = Path(os.path.abspath(final.parent))
    ours = [Path(os.path.abspath(final))] + ([Path(os.path.abspath(tmp))] if tmp is not None else [])
    for name in names:
        p = Path(os.path.abspath(os.fsdecode(name)))
        # The output folder or any of its parents (creating it), the output, or anything inside the temporary.
        if _same_or_inside(folder, p) or any(_same_or_inside(p, o) for o in ours) or p.parent == folder:
            return True
    return False


def write_error(final: Path, exc: OSError) -> ArtifactWriteError | None:
    """The :class:`ArtifactWriteError` explaining why ``final`` cannot be written
    (disk full, quota, read-only, permission), or None for other errors."""
    if exc.errno not in _WRITE_ADVICE:
        return None
    return _write_error(final, exc)


def _write_error(final: Path, exc: OSError) -> ArtifactWriteError:
    folder = final.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # name the folder that exists and refused, not one never created
    advice = _WRITE_ADVICE[exc.errno].format(folder=folder)
    return ArtifactWriteError(
        f"cannot write {final}: {advice}; then rerun. Nothing new was written under that name (an earlier "
        f"output there is unchanged) and no temporary is left behind. "
        f"[{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror or exc}]"
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it to ``path`` on success.

    On an exception the temporary file or folder is removed and ``path`` is left
    untouched. An existing ``path`` is replaced; a folder is swapped in before
    the old one is deleted, so ``path`` never holds a partial folder.

    Raises :class:`~pipeline.errors.ArtifactWriteError` (chained from the
    ``OSError``) when the disk is full, the quota exceeded, the file system
    read-only or writing not permitted -- whether creating the temporary, while
    the caller writes into it, or at the rename.
    """
    final = Path(path)
    try:
        tmp = _tmp_sibling(final, is_dir)
    except OSError as exc:
        if _is_write_failure(exc, None, final):
            raise _write_error(final, exc) from exc
        raise
    old: Path | None = None
    try:
        yield tmp
        if is_dir:
            old = _swap_in(tmp, final)
        else:
            os.replace(tmp, final)
    except BaseException as exc:
        # Whatever sits under the temporary name now is unfinished (a failed swap
        # puts the old output back under the final name first): never an output.
        _remove(tmp)
        if _is_write_failure(exc, tmp, final):
            raise _write_error(final, exc) from exc
        raise
    if old is not None:
        _remove(old)


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Delete the hidden ``.tmp-<name>-*`` leftovers of earlier, killed writes of ``path``.

    Only call this while holding the lock on ``path`` (see :mod:`pipeline.locks`):
    a temporary of another live writer must not be deleted. Returns how many went.
    """
    final = Path(path)
    if not final.parent.is_dir():
        return 0
    stale = list(final.parent.glob(f".tmp-{glob.escape(final.name)}-*"))
    for leftover in stale:
        _remove(leftover)
    return len(stale)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
