"""Luigi progress and status messages for long-running tasks."""

from __future__ import annotations

import luigi


def progress_reporter(task: luigi.Task, label: str, every: int = 10):
    """A callback (step, total, loss) that updates Luigi's progress and status."""

    def report(step: int, total: int, loss: float) -> None:
        if step % every == 0 or step == total:
            task.set_progress_percentage(round(100.0 * step / max(total, 1), 1))
            task.set_status_message(f"{label}: step {step}/{total}, loss {loss:.4f}")

    return report
