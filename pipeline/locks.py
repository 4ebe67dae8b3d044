"""Advisory file locks, so processes that share an artifacts folder take turns.

``fcntl.flock`` locks belong to the open file, so the kernel releases them when
the holder exits or is killed: a crash never leaves a lock that must be cleared
by hand. (On network filesystems flock may be local to each machine; there,
coordinate runs through ``luigid``, which hands each task to one worker.)
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Iterator

from pipeline.atomic import write_error
from pipeline.paths import LOCKS_DIR

log = logging.getLogger(__name__)


def lock_file(path: str | Path, root: str | Path) -> Path:
    """The lock file guarding ``path``: one file per output in ``<root>/.locks/``.

    Kept out of the output folders so that listing them shows outputs only. The
    name is ``path`` relative to ``root`` with ``/`` spelled ``%``.
    """
    path, root = Path(path).absolute(), Path(root).absolute()
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.as_posix().lstrip("/")
    return root / LOCKS_DIR / rel.replace("%", "%25").replace("/", "%")


@contextlib.contextmanager
def exclusive_lock(lock: str | Path, *, what: str | None = None) -> Iterator[bool]:
    """Hold an exclusive lock on the file ``lock``, waiting while another process holds it.

    Yields whether it had to wait (another process held the lock meanwhile).
    """
    lock = Path(lock)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        error = write_error(lock, exc)
        if error is None:
            raise
        raise error from exc
    try:
        waited = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is writing %s", what or lock)
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = True
        yield waited
    finally:
        os.close(fd)
