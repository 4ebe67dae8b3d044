"""``[dataset]`` settings (which source to index, from where, at what size, and the
dataset folder's name they give) and the augmentation of training batches that
:mod:`pipeline.data.batches` applies (``[TrainEpoch] augment``). Apart from the
code, so that declaring task parameters imports none of torch, pandas or dask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.data.sources import SOURCES, Source
from pipeline.errors import ConfigError
from pipeline.inventory import recorded_dataset_settings
from pipeline.paths import check_name, dataset_dir
from pipeline.settings import Problem, check, check_fields, option, refuse, setting, significant, unread

SECTION = "dataset"


@dataclass(frozen=True)
class IndexSettings:
    """``[dataset]``: what to index and how. ``stored_size`` 0 means the source's native size.

    Refused as silently ignored (:meth:`ignored`, checked while Luigi schedules, by
    :meth:`key`): a ``root`` with a source that never reads one (``embedded``), and
    ``on_bad_image = skip`` with a source that decodes no image files.
    """

    source: str = setting("embedded", "embedded (ships with the repo), fashion-mnist, tiny-imagenet or image-folder",
                          choices=SOURCES)
    root: str = setting("", "dataset folder (not for embedded)")
    name: str = setting("", "dataset folder name under artifacts/datasets/; default: the source")
    stored_size: int = setting(0, "stored image size in pixels; 0 = native")
    on_bad_image: str = setting("fail", "fail, or skip corrupt images and list them in skipped.parquet",
                                choices=("fail", "skip"))
    dask_scheduler: str = setting("threads", "dask scheduler for decoding", run_only=True)
    partition_size: int = option(256, minimum=1)

    def spec(self) -> Source:
        """The registered source ``source`` names."""
        return SOURCES[self.source]

    def decodes_files(self) -> bool:
        """Whether indexing decodes image files (in parallel, with dask); array sources do not."""
        return self.spec().decodes_files

    def resolved_size(self) -> int:
        return self.stored_size or self.spec().native_size

    def dataset_root(self) -> Path:
        """The folder the source reads: ``root``, else the source's own default."""
        spec = self.spec()
        if self.root and spec.root_use != "unused":
            return Path(self.root)
        if spec.default_root is None:
            raise ConfigError(f"[dataset] root = ''; source {self.source} needs the dataset folder: set root to it")
        return spec.default_root

    def key(self) -> str:
        """The dataset's folder name under ``<root>/datasets/``: ``<name or source>-<size>px``.

        Refuses an unknown source and ignored settings (:meth:`ignored`) at once, since
        a key built on them would name data the settings do not describe; the other
        settings are checked when indexing runs.
        """
        refuse(self, SECTION, self.ignored())
        return self._folder_name()

    def _folder_name(self) -> str:
        check_fields(self, SECTION, ("source",))
        return f"{check_name(self.name or self.source, '[dataset] name')}-{self.resolved_size()}px"

    def check(self) -> None:
        """Raise :class:`~pipeline.errors.ConfigError` naming the first invalid setting."""
        check(self, SECTION)

    def ignored(self) -> list[Problem]:
        """Settings the source would silently ignore."""
        spec = self.spec()
        problems = []
        if spec.root_use == "unused" and self.root:
            readers = [n for n in SOURCES.names() if SOURCES[n].root_use != "unused"]
            problems.append(Problem(("root", "source"), (
                f"source {self.source} always reads {spec.default_root} and never root, so root would be silently "
                f"ignored: to index that folder, set source = {', '.join(readers[:-1])} or {readers[-1]} (the "
                f"layout the folder holds); to use the {self.source} dataset, clear root")))
        if not spec.decodes_files:
            problems += unread(self, ["on_bad_image"], "source", fix=(
                f"source {self.source} loads pixel arrays, not image files, so there are no bad images to "
                "skip and the value would be silently ignored: remove on_bad_image"))
        return problems

    def problems(self) -> list[Problem]:
        """Ignored settings, a missing root, and a stored size outside 0 or 8..1024."""
        problems = self.ignored()
        if self.spec().root_use == "required" and not self.root:
            problems.append(Problem(("root", "source"),
                                    f"source {self.source} needs the dataset folder: set root to it"))
        if self.stored_size < 0 or 0 < self.stored_size < 8 or self.stored_size > 1024:
            problems.append(Problem(("stored_size",), "use 0 (native) or 8..1024 pixels"))
        return problems



@dataclass(frozen=True)
class AugmentSettings:
    """Random crop (pad by ``crop_padding`` then crop back) and horizontal flip, in ``[TrainEpoch]``.

    With ``augment`` off, ``crop_padding`` and ``flip`` are not read, so values other than
    their defaults are refused as silently ignored (:meth:`problems`).
    """

    augment: bool = setting(True, "random crops and flips of the training images")
    crop_padding: int = setting(2, "random crop: pad by this many pixels (reflect), crop back", minimum=0)
    flip: bool = setting(True, "random horizontal flips")

    def check(self) -> None:
        """Raise :class:`~pipeline.errors.ConfigError` naming the first invalid setting."""
        check(self, "TrainEpoch")

    def problems(self) -> list[Problem]:
        return [] if self.augment else unread(self, ["crop_padding", "flip"], "augment")


def recorded_dataset_dir(root: str | Path, experiment: str) -> Path | None:
    """The dataset folder under ``root`` that ``experiment`` recorded in its ``config.json``, if any."""
    recorded = recorded_dataset_settings(root, experiment)
    if recorded is None:
        return None
    known = significant(IndexSettings())
    try:
        # Not key(): a run recorded before ignored settings were refused still names its folder.
        return dataset_dir(root, IndexSettings(**{k: v for k, v in recorded.items() if k in known})._folder_name())
    except (ConfigError, TypeError):
        return None
