"""Which task made an artifact, and the error that tells a user how to rebuild a damaged one.

A reader that finds truncated or overwritten bytes raises :func:`corrupt_artifact`,
which names the file, the problem and the command that rebuilds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import CorruptArtifactError
from pipeline.paths import validation_files

_EPOCH = re.compile(r"^epoch=(\d+)$")
_METRICS = re.compile(r"^epoch=(\d+)\..+$")
_EPOCHS = re.compile(r"^epochs=(\d+)$")
# The per-epoch folders of an experiment and the task that writes each.
_EPOCH_TASKS = {"triplets": "TripletList", "train": "TrainEpoch", "embeddings": "EmbedEpoch", "search": "SearchIndex"}
@dataclass(frozen=True)
class Producer:
    """The task that wrote an artifact and what to delete so that it runs again."""

    task: str  # e.g. "EmbedEpoch"
    args: tuple[str, ...]  # its command-line arguments, e.g. ("--epoch", "3", "--experiment", "demo")
    delete: tuple[Path, ...]  # the folder (or files) whose absence makes Luigi rerun the task

    @property
    def rerun(self) -> str:
        """``"EmbedEpoch --epoch 3 --experiment demo"``."""
        return " ".join((self.task, *self.args))


def producer_of(path: str | Path) -> Producer | None:
    """Name the task that produced ``path`` (an artifact file or folder under the
    artifacts root), from the path alone; None if it is not a known artifact.

    ``<root>/demo/embeddings/epoch=003/part-00000.parquet`` -> EmbedEpoch
    ``--epoch 3 --experiment demo``, delete ``<root>/demo/embeddings/epoch=003``.
    """
    parts = Path(path).parts
    # Scan from the end, so an artifacts root whose own path contains "train" or
    # "datasets" does not hide the artifact's folder below it.
    for i in range(len(parts) - 2, -1, -1):
        name, child = parts[i], parts[i + 1]
        base = Path(*parts[: i + 1])
        if i >= 1 and name in _EPOCH_TASKS and (m := _EPOCH.match(child)):
            return Producer(_EPOCH_TASKS[name], ("--epoch", str(int(m.group(1))), "--experiment", parts[i - 1]),
                            (base / child,))
        if i >= 1 and name == "metrics" and (m := _METRICS.match(child)):
            # The JSON marks the epoch validated; its Parquet sidecars are rewritten with it.
            files = validation_files(base / f"epoch={m.group(1)}.json")
            return Producer("ValidateEpoch", ("--epoch", str(int(m.group(1))), "--experiment", parts[i - 1]), files)
        if i >= 1 and name == "report" and (m := _EPOCHS.match(child)):
            return Producer("Report", ("--epochs", str(int(m.group(1))), "--experiment", parts[i - 1]),
                            (base / child,))
        if name == "datasets":
            # The dataset key comes from the [dataset] settings, so IndexDataset needs no argument.
            return Producer("IndexDataset", (), (base / child,))
        if name == "baselines":
            return Producer("PixelBaseline", (), (base / child,))
    return None


def rebuild_hint(path: str | Path) -> str:
    """One sentence telling the user what to delete and which task to rerun to rebuild ``path``."""
    producer = producer_of(path)
    if producer is None:
        return f"delete {path} and rerun the task that wrote it (or the whole pipeline)"
    what = ", ".join(str(p) for p in producer.delete)
    return (f"delete {what} and rerun {producer.rerun} (luigi --module tasks {producer.rerun}), "
            "or rerun the whole pipeline, which rebuilds what is missing")


def is_damage(exc: BaseException) -> bool:
    """True if ``exc``, raised while decoding an artifact, means its bytes are
    truncated or overwritten (rather than, say, a disk that cannot be read).

    numpy and json raise ``ValueError``/``EOFError`` for bad bytes; pyarrow its
    own exception classes, or an ``OSError`` without ``errno`` for undecodable
    pages; an ``OSError`` with an ``errno`` is the operating system's, not damage.
    """
    if isinstance(exc, OSError):
        return exc.errno is None
    return isinstance(exc, (ValueError, EOFError, SyntaxError)) or type(exc).__module__.startswith("pyarrow")


def corrupt_artifact(path: str | Path, problem: str) -> CorruptArtifactError:
    """A :class:`CorruptArtifactError` naming the damaged file, what is wrong and how to rebuild it.

    Readers raise it ``from`` the low-level exception, so the cause stays visible
    with ``--debug`` but the command line shows one actionable sentence.
    """
    problem = " ".join(problem.split())  # pyarrow's messages span lines; keep the error to one
    return CorruptArtifactError(f"artifact {path} is damaged or incomplete ({problem}); {rebuild_hint(path)}")
