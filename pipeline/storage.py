"""How artifacts are written and read back: atomic outputs, one writer at a time,
actionable write errors, and damaged files named with the command that rebuilds them.

Writing. :func:`atomic_path` hands out a hidden sibling ``.tmp-<name>-<hex>``
and renames it into place once the body has finished, so a kill leaves at most
a hidden leftover, never a partial output under the final name. Tasks write
under :func:`exclusive_lock` (see ``tasks.output_writing.single_writer``), so
no one else touches an output while it is replaced, and a missing output just
means "not done": Luigi reruns the task. That is why replacing a folder may go
through a moment with nothing under the final name: the old folder is renamed
aside (whole) before the new one is renamed in, and deleted only afterwards.

Reading. A reader wraps its decoding in :func:`reading`, which turns truncated
or overwritten bytes into a :class:`~pipeline.errors.CorruptArtifactError`
naming the file and the task to rerun (:func:`rebuild_hint`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from pipeline.errors import ArtifactWriteError, CorruptArtifactError
from pipeline.paths import EPOCH_COLUMN, LOCKS_DIR, audit_files, table_file, validation_files

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- writing

# What the user is told when the artifacts folder refuses a write.
_CANNOT_WRITE: dict[int, str] = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "this user may not write there",
    errno.EPERM: "this user may not write there",
}
# Only writing fails with these, so they concern the output wherever in the body they arise. A
# permission error in the body may be about an input it reads, so only our own steps translate those.
_WRITE_ONLY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def _write_error(final: Path, exc: BaseException, *, own_step: bool) -> ArtifactWriteError | None:
    """The :class:`ArtifactWriteError` saying why ``final`` cannot be written (disk full,
    quota, read-only, permission), or None when ``exc`` is some other error.

    ``own_step`` is False for errors raised by the code that fills a temporary, where a
    permission error may concern an input rather than the output.
    """
    codes = _CANNOT_WRITE.keys() if own_step else _WRITE_ONLY_ERRNOS
    if not isinstance(exc, OSError) or exc.errno not in codes:
        return None
    folder = final.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # name the folder that exists and refused, not one never created
    return ArtifactWriteError(
        f"cannot write {final}: {_CANNOT_WRITE[exc.errno]} ({folder}); free space there, make it writable "
        f"for this user, or point [artifacts] root elsewhere, then rerun. Nothing new was written under that "
        f"name (an earlier output there is unchanged). [{errno.errorcode[exc.errno]}: {exc.strerror or exc}]"
    )


def _remove(path: Path) -> None:
    """Delete a file or folder if it is there, ignoring errors: it is a hidden leftover at worst."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def _failing_write(final: Path, tmp: Path | None, *, own_step: bool) -> Iterator[None]:
    """On an exception in the block, delete ``tmp`` and raise a full/read-only/forbidden
    artifacts folder as an :class:`ArtifactWriteError` (chained from the ``OSError``)."""
    try:
        yield
    except BaseException as exc:
        if tmp is not None:
            _remove(tmp)
        error = _write_error(final, exc, own_step=own_step)
        if error is None:
            raise
        raise error from exc


def _into_place(tmp: Path, final: Path, is_dir: bool) -> Path | None:
    """Rename ``tmp`` to ``final``; return where an old folder ``final`` was moved aside, if any."""
    if not is_dir or not os.path.lexists(final):
        os.replace(tmp, final)
        return None
    # A folder cannot be replaced by one rename. Between these two renames the final name is
    # empty and the old output lies whole under a hidden name: never a partly deleted folder.
    aside = tmp.with_name(f"{tmp.name}_old")
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(aside, final)  # a failed write keeps the old output
        raise
    return aside


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a new, empty temporary file (or folder) next to ``path``; rename it to ``path`` on success.

    On an exception the temporary is deleted and ``path`` keeps what it held. An
    existing ``path`` is replaced; a folder is moved aside, whole, before the new
    one takes its name, and deleted after. Call it under :func:`exclusive_lock`
    when others may write ``path``. Raises
    :class:`~pipeline.errors.ArtifactWriteError` when the disk is full, the quota
    exceeded, the file system read-only or writing not permitted.
    """
    final = Path(path)
    tmp = final.with_name(f".tmp-{final.name}-{secrets.token_hex(5)}")
    with _failing_write(final, None, own_step=True):
        final.parent.mkdir(parents=True, exist_ok=True)
        # Created as usual, so the output gets the permissions the umask gives any new file.
        if is_dir:
            tmp.mkdir()
        else:
            tmp.touch(exist_ok=False)
    with _failing_write(final, tmp, own_step=False):
        yield tmp
    with _failing_write(final, tmp, own_step=True):
        old = _into_place(tmp, final, is_dir)
    if old is not None:
        _remove(old)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_epoch_tables(summary: str | os.PathLike, tables: Mapping[str, pd.DataFrame | pa.Table],
                       epoch: int) -> None:
    """Write each of ``tables`` to ``table_file(summary, name)`` atomically, with an
    int32 ``epoch`` column first, so each table's folder reads as one table across
    epochs in any Parquet client. Call it before writing ``summary``, whose
    presence marks the epoch's files complete; hold the lock on ``summary``.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, table in tables.items():
        if not isinstance(table, pa.Table):
            table = pa.Table.from_pandas(table, preserve_index=False)
        if EPOCH_COLUMN in table.column_names:
            table = table.drop_columns([EPOCH_COLUMN])
        table = table.add_column(0, EPOCH_COLUMN, pa.array(np.full(table.num_rows, epoch, np.int32)))
        path = table_file(summary, name)
        remove_stale_temporaries(path)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Delete the hidden ``.tmp-<name>-*`` leftovers of earlier, killed writes of ``path``.

    Only call this while holding the lock on ``path``: a temporary of another live
    writer must not be deleted. Returns how many went.
    """
    final = Path(path)
    if not final.parent.is_dir():
        return 0
    stale = list(final.parent.glob(f".tmp-{glob.escape(final.name)}-*"))
    for leftover in stale:
        _remove(leftover)
    return len(stale)


# --------------------------------------------------------------------------- one writer at a time

def written_after(output: str | Path, inputs: Iterable[str | Path]) -> bool:
    """Whether ``output`` exists and was written no earlier than each of ``inputs`` (make's rule).

    An output that reads what other tasks recompute (the report reads every epoch's
    metrics) is stale once one of them is written again after it, whatever process
    did it. Outputs appear by rename, which keeps their files' times, so a finished
    output is as old as its write. A missing output or input counts as stale.
    """
    try:
        built = Path(output).stat().st_mtime_ns
        return all(Path(p).stat().st_mtime_ns <= built for p in inputs)
    except FileNotFoundError:
        return False


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
def exclusive_lock(lock: str | Path, *, what: str | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``lock``, waiting while another process holds it.

    The kernel releases the lock when its holder exits or is killed, so a crash never
    leaves one to clear by hand. (On network file systems flock may be local to each
    machine; there, coordinate runs through ``luigid``, which hands each task to one worker.)
    """
    lock = Path(lock)
    with _failing_write(lock, None, own_step=True):
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is writing %s", what or lock)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- damaged artifacts

_EPOCH = re.compile(r"^epoch-(\d+)$")
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.(json|parquet)$")
_EPOCHS = re.compile(r"^epochs-(\d+)$")
# Tasks that write a summary JSON per epoch and a Parquet table per name beside it
# (metrics/epoch-NNN.json, metrics/<table>/epoch-NNN.parquet), and all their files.
_TABLE_TASKS = {"metrics": ("ValidateEpoch", validation_files), "audit": ("AuditEpoch", audit_files)}
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

    ``<root>/demo/embeddings/epoch-003/part-00000.parquet`` -> EmbedEpoch
    ``--epoch 3 --experiment demo``, delete ``<root>/demo/embeddings/epoch-003``.
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
        # A table file (<experiment>/metrics/<table>/epoch-NNN.parquet) or the summary itself.
        for j in (i, i - 1):
            if j >= 1 and parts[j] in _TABLE_TASKS and (m := _EPOCH_FILE.match(child)) \
                    and (j == i or m.group(2) == "parquet"):
                task, files = _TABLE_TASKS[parts[j]]
                # The JSON marks the epoch done; its tables are rewritten with it.
                summary = Path(*parts[: j + 1]) / f"epoch-{m.group(1)}.json"
                return Producer(task, ("--epoch", str(int(m.group(1))), "--experiment", parts[j - 1]),
                                files(summary))
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


@contextlib.contextmanager
def reading(path: str | Path, problem: str = "unreadable",
            also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Decode the artifact ``path`` in the block; damaged bytes raise :func:`corrupt_artifact`.

    The error reads ``"<problem>: <the decoder's message>"``. Exceptions of the
    types ``also`` count as damage too (say ``KeyError`` for a missing column);
    any other error, such as a disk that cannot be read, passes through::

        with reading(path, "unreadable Parquet"):
            table = pq.read_table(path)
    """
    try:
        yield
    except Exception as exc:
        if is_damage(exc) or isinstance(exc, also):
            raise corrupt_artifact(path, f"{problem}: {exc}") from exc
        raise
