"""Where an export reads from and writes to: the epoch's checkpoint and the OUT folder.

Both are checked before torch is imported, so a wrong argument answers at once
with a message that says what exists and what to run.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.inventory import describe_epochs, experiments, trained_epochs


class ExportError(PipelineError):
    """The export cannot be made: unknown experiment, untrained epoch, unusable OUT."""


def checkpoint_path(root: str | Path, experiment: str, epoch: int) -> Path:
    """Epoch ``epoch``'s checkpoint; :class:`ExportError` saying what exists and which command trains it."""
    root = Path(root)
    if epoch < 0:
        raise ExportError(f"--epoch {epoch}: epochs are numbered from 0 (the initial network)")
    if not paths.experiment_dir(root, experiment).is_dir():  # experiment_dir also rejects bad names
        if not root.is_dir():
            raise ExportError(f"artifacts root {root} does not exist; pass --artifacts ROOT, the [artifacts] root "
                              "the experiment was trained under")
        known = ", ".join(experiments(root)) or "none"
        raise ExportError(f"experiment {experiment!r} does not exist under {root} (experiments there: {known}); "
                          "check --experiment and --artifacts")
    checkpoint = paths.train_dir(root, experiment, epoch) / paths.CHECKPOINT_FILE
    if not checkpoint.is_file():
        trained = describe_epochs(trained_epochs(root, experiment))
        partial = paths.partial_checkpoint(checkpoint.parent)
        resumes = f" (it continues the interrupted run saved in {partial})" if partial.is_file() else ""
        raise ExportError(f"epoch {epoch} of experiment {experiment!r} is not trained: {checkpoint} does not exist "
                          f"(trained epochs: {trained}). Train it with: luigi --module tasks TrainEpoch "
                          f"--experiment {experiment} --epoch {epoch}{resumes}")
    return checkpoint


def check_out(out: Path, force: bool, checkpoint: Path) -> None:
    """Refuse an ``out`` that cannot be written, is not empty (without ``force``) or holds ``checkpoint``."""
    real, held = out.resolve(), checkpoint.resolve()  # --force on a folder above the artifacts would delete them
    if real == held or real in held.parents:
        raise ExportError(f"OUT {out} contains the checkpoint being exported ({checkpoint}); choose another folder")
    if out.is_symlink() or out.exists():
        if not out.is_dir() or out.is_symlink():
            raise ExportError(f"OUT {out} exists and is not a folder; choose another OUT")
        if not force and any(out.iterdir()):
            raise ExportError(f"OUT {out} exists and is not empty; pass --force to replace it, or choose another OUT")
    # The new folder is made as a sibling of OUT, so the nearest existing folder above it must take writes.
    base = out.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ExportError(f"cannot create OUT {out}: {base} is a file, not a folder; choose another OUT")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ExportError(f"cannot create OUT {out}: folder {base} is not writable by this user; "
                          "choose another OUT or make that folder writable")
