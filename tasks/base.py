"""Small helpers shared by the task modules."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Iterator

import luigi

log = logging.getLogger("luigi-interface")


@contextlib.contextmanager
def temporary_dir(target: luigi.LocalTarget) -> Iterator[Path]:
    """``target.temporary_path()`` for a folder target: the folder appears only
    complete (Luigi renames it into place on success) and a failure removes it."""
    with target.temporary_path() as tmp:
        tmp_path = Path(tmp)
        try:
            tmp_path.mkdir(parents=True)
            yield tmp_path
        except BaseException:
            shutil.rmtree(tmp_path, ignore_errors=True)
            raise


def progress_reporter(task: luigi.Task, label: str, every: int = 10):
    """A callback (step, total, loss) that updates Luigi's progress and status."""

    def report(step: int, total: int, loss: float) -> None:
        if step % every == 0 or step == total:
            task.set_progress_percentage(round(100.0 * step / max(total, 1), 1))
            task.set_status_message(f"{label}: step {step}/{total}, loss {loss:.4f}")

    return report
