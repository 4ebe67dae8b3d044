"""Small helpers shared by the task modules."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import luigi

from pipeline.atomic import atomic_path

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


def progress_reporter(task: luigi.Task, label: str, every: int = 10):
    """A callback (step, total, loss) that updates Luigi's progress and status."""

    def report(step: int, total: int, loss: float) -> None:
        if step % every == 0 or step == total:
            task.set_progress_percentage(round(100.0 * step / max(total, 1), 1))
            task.set_status_message(f"{label}: step {step}/{total}, loss {loss:.4f}")

    return report
