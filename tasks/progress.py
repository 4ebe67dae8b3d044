"""Luigi progress and status messages for long-running tasks."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import luigi


def progress_reporter(task: luigi.Task, label: str, every: int = 10,
                      also: Callable[[int, int, Mapping[str, Any]], None] | None = None):
    """A training loop's progress callback (steps done, total, the step's log row) that
    updates Luigi's progress and status, and hands every step to ``also``."""

    def report(step: int, total: int, row: Mapping[str, Any]) -> None:
        if also is not None:
            also(step, total, row)
        if step % every == 0 or step == total:
            task.set_progress_percentage(round(100.0 * step / max(total, 1), 1))
            task.set_status_message(f"{label}: step {step}/{total}, loss {row['loss']:.4f}")

    return report
