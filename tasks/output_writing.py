"""How every task writes its one output: atomically, and one process at a time."""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Callable, Iterator

import luigi

from pipeline.storage import atomic_path, exclusive_lock, lock_file, remove_stale_temporaries
from tasks.config import artifacts
from tasks.config_keys import check_config_keys

log = logging.getLogger("luigi-interface")


@contextlib.contextmanager
def temporary_dir(target: luigi.LocalTarget) -> Iterator[Path]:
    """A temporary folder renamed to ``target`` on success and removed on failure.

    The folder is a hidden sibling (``.tmp-<name>-*``), so after a ``kill -9``
    the leftover is neither taken for a complete output nor read by pyarrow or
    pandas when a user reads a parent folder.
    """
    with atomic_path(target.path, is_dir=True) as tmp:
        yield tmp


def single_writer(run: Callable[[luigi.Task], None]) -> Callable[[luigi.Task], None]:
    """Decorate a task's ``run()`` so one process at a time builds its output, and only
    under a configuration whose keys are all settings (:mod:`tasks.config_keys`).

    Two runs of one experiment with separate (local) schedulers would otherwise
    build the same outputs side by side. The second now waits for the first (or
    comes after it), then finds the output complete and does nothing. (A central
    ``luigid`` never hands one task to two workers, so there the lock is never contended.)
    """

    @functools.wraps(run)
    def locked(task: luigi.Task) -> None:
        check_config_keys()
        with exclusive_lock(lock_file(task.output().path, artifacts().root), what=str(task)):
            # Checked whether or not this process had to wait: the other one may have
            # finished between this scheduler's completeness check and the lock.
            if task.complete():
                log.info("%s was completed by another process meanwhile", task)
                return
            # Under the lock no one else writes this output: what temporaries are left
            # were abandoned by a killed run.
            remove_stale_temporaries(task.output().path)
            run(task)

    return locked
