"""The artifacts layout's version: find experiments written in the older layout,
refuse to build on them, and migrate them in place.

    python -m pipeline.layout artifacts              # migrate every experiment under the root
    python -m pipeline.layout artifacts --dry-run    # only list what would change

The older layout named per-epoch folders as hive partitions (``epoch=003``) while
the files carried an ``epoch`` column too, kept ``checkpoint.pt``, ``summary.json``
and ``manifest.json`` inside Parquet folders, and wrote the validation sidecars and
the audit tables beside each other (``metrics/epoch=003.queries.parquet``,
``audit/epoch=003/images.parquet``). No Parquet client read those folders as one
table (see :mod:`pipeline.paths` for the current layout).

Left alone, an old experiment would look empty to the tasks, which would quietly
train it again from epoch 0 beside the old files. :func:`check_layout` therefore
stops every task of such an experiment with the command that migrates it.
Migration renames, and rewrites only the tables that lacked the ``epoch``
column (embedding shards, validation sidecars, audit tables), each atomically
and each step before the file that marks the epoch complete, so an interrupted
migration is finished by running it again. No value changes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline import paths
from pipeline.errors import ConfigError

# Names of the older layout: epoch=NNN folders (and metrics files), epochs=NNN reports.
_OLD_EPOCH = re.compile(r"^epoch=(\d+)$")
_OLD_METRICS = re.compile(r"^epoch=(\d+)(?:\.(\w+))?\.(json|parquet)$")
_OLD_EPOCHS = re.compile(r"^epochs=(\d+)$")
_OLD_PARTIAL = re.compile(r"^\.partial-epoch=(\d+)\.pt$")
# Collections whose per-epoch folders were renamed (files inside renamed as listed).
_FOLDERS = {"triplets": {}, "search": {},
            "train": {"checkpoint.pt": paths.CHECKPOINT_FILE, "summary.json": paths.TRAIN_SUMMARY_FILE},
            "embeddings": {"manifest.json": paths.EMBEDDING_MANIFEST}}


def old_layout_entries(experiment_dir: str | Path) -> list[Path]:
    """The entries of ``experiment_dir`` named in the older layout (empty: current or new)."""
    base = Path(experiment_dir)
    found = []
    for collection in (*_FOLDERS, "metrics", "audit", "report"):
        folder = base / collection
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir()
                            if _OLD_EPOCH.match(p.name) or _OLD_METRICS.match(p.name) or _OLD_EPOCHS.match(p.name)
                            or _OLD_PARTIAL.match(p.name))
    return found


def check_layout(experiment_dir: str | Path) -> None:
    """Raise :class:`ConfigError` if ``experiment_dir`` holds artifacts of the older layout,
    naming one and the command that migrates them."""
    old = old_layout_entries(experiment_dir)
    if old:
        root = Path(experiment_dir).parent
        raise ConfigError(
            f"{experiment_dir} was written in the older artifacts layout ({len(old)} entries such as {old[0]}, "
            f"named epoch=NNN); migrate it in place with `python -m pipeline.layout {root}` (renames, and adds "
            f"the epoch column to the tables that lack it; no value changes), or delete {experiment_dir} "
            "to start the experiment over")


@dataclass(frozen=True)
class Step:
    """One migration step: what it does, and the function that does it."""

    what: str
    do: Callable[[], None]


def _add_epoch_column(source: Path, target: Path, epoch: int) -> None:
    """Write ``source``'s table with an int32 ``epoch`` column first to ``target``, atomically;
    then delete ``source`` if it is another file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.storage import atomic_path

    table = pq.read_table(source)
    if paths.EPOCH_COLUMN not in table.column_names:
        table = table.add_column(0, paths.EPOCH_COLUMN, pa.array(np.full(table.num_rows, epoch, np.int32)))
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)
    if source != target:
        source.unlink()


def _rename(source: Path, target: Path) -> Step:
    def do() -> None:
        if target.exists():
            raise ConfigError(f"cannot migrate {source}: {target} exists already; delete one of the two")
        os.rename(source, target)
    return Step(f"rename {source} -> {target.name}", do)


def _experiment_steps(base: Path) -> list[Step]:
    steps: list[Step] = []
    for collection, renamed in _FOLDERS.items():
        folder = base / collection
        if not folder.is_dir():
            continue
        for old in sorted(folder.iterdir()):
            if m := _OLD_PARTIAL.match(old.name):
                steps.append(_rename(old, paths.partial_checkpoint(folder / paths.epoch_dir(int(m.group(1))))))
            if not (m := _OLD_EPOCH.match(old.name)) or not old.is_dir():
                continue
            epoch = int(m.group(1))
            for name, new in renamed.items():
                if (old / name).is_file():
                    steps.append(_rename(old / name, old / new))
            if collection == "embeddings":
                for shard in sorted(old.glob("part-*.parquet")):
                    steps.append(Step(f"add the epoch column to {shard}",
                                      lambda s=shard, e=epoch: _add_epoch_column(s, s, e)))
            steps.append(_rename(old, folder / paths.epoch_dir(epoch)))
    for collection, tables in (("metrics", paths.VALIDATION_SIDECARS), ("audit", paths.AUDIT_TABLES)):
        folder = base / collection
        if not folder.is_dir():
            continue
        for old in sorted(folder.iterdir()):
            if collection == "metrics" and (m := _OLD_METRICS.match(old.name)) and m.group(2) in tables:
                epoch = int(m.group(1))
                target = paths.table_file(folder / f"{paths.epoch_dir(epoch)}.json", m.group(2))
                steps.append(Step(f"move {old} -> {target.relative_to(folder)} with the epoch column",
                                  lambda s=old, t=target, e=epoch: _add_epoch_column(s, t, e)))
            elif collection == "audit" and (m := _OLD_EPOCH.match(old.name)) and old.is_dir():
                epoch = int(m.group(1))
                summary = folder / f"{paths.epoch_dir(epoch)}.json"
                for name in tables:
                    source, target = old / f"{name}.parquet", paths.table_file(summary, name)
                    if source.is_file():
                        steps.append(Step(f"move {source} -> {target.relative_to(folder)} with the epoch column",
                                          lambda s=source, t=target, e=epoch: _add_epoch_column(s, t, e)))
                if (old / "summary.json").is_file():
                    steps.append(_rename(old / "summary.json", summary))
                steps.append(Step(f"remove the emptied {old}", old.rmdir))
        # The summaries last: each marks its epoch's tables complete.
        for old in sorted(folder.iterdir()):
            if (m := _OLD_METRICS.match(old.name)) and m.group(2) is None and m.group(3) == "json":
                steps.append(_rename(old, folder / f"{paths.epoch_dir(int(m.group(1)))}.json"))
    report = base / "report"
    if report.is_dir():
        for old in sorted(report.iterdir()):
            if m := _OLD_EPOCHS.match(old.name):
                steps.append(_rename(old, report / f"epochs-{int(m.group(1)):03d}"))
    return steps


def migration_steps(root: str | Path) -> list[Step]:
    """Every step that brings the experiments (and comparisons) under the artifacts
    ``root`` to the current layout, in an order that is safe to interrupt."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is no folder: give the artifacts root (the [artifacts] root setting)")
    steps: list[Step] = []
    for base in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in paths.RESERVED
                       and not p.name.startswith(".")):
        steps += _experiment_steps(base)
    for old in sorted((root / "compare").glob("*/epochs=*")):
        if m := _OLD_EPOCHS.match(old.name):
            steps.append(_rename(old, old.with_name(f"epochs-{int(m.group(1)):03d}")))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.layout", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the artifacts root ([artifacts] root, e.g. artifacts)")
    parser.add_argument("--dry-run", action="store_true", help="list the steps without doing them")
    args = parser.parse_args(argv)
    try:
        steps = migration_steps(args.root)
        for step in steps:
            print(("would " if args.dry_run else "") + step.what)
            if not args.dry_run:
                step.do()
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(steps)} steps {'to do' if args.dry_run else 'done'}; "
          f"{args.root} is {'not yet ' if args.dry_run and steps else ''}in the current layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
