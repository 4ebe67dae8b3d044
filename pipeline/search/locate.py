"""Find what a search needs on disk (the epoch's index, its checkpoint, its dataset),
or say exactly what is missing and the command that makes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import ConfigError, DatasetLayoutError, PipelineError
from pipeline.inventory import describe_epochs, experiments, indexed_epochs, trained_epochs


class SearchUnavailableError(PipelineError):
    """The experiment, epoch or search index asked for does not exist (yet)."""


@dataclass(frozen=True)
class SearchArtifacts:
    """The folders and files one epoch's search reads."""

    search_dir: Path
    checkpoint: Path


def index_command(experiment: str, epoch: int) -> str:
    """The command that trains (if needed), embeds and indexes ``epoch``."""
    return f"luigi --module tasks SearchIndex --experiment {experiment} --epoch {epoch} --local-scheduler"


def locate(root: str | Path, experiment: str, epoch: int) -> SearchArtifacts:
    """The search folder and checkpoint of ``epoch``; raise :class:`SearchUnavailableError`
    naming what is missing (experiment, trained epoch or index) and how to make it."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ConfigError(f"epoch = {epoch!r}; use a trained epoch number (0 = the initial network)")
    exp = paths.experiment_dir(root, experiment)
    if not exp.is_dir():
        base = Path(root)
        found = experiments(base)
        raise SearchUnavailableError(
            f"experiment {experiment!r} does not exist under {base} (experiments there: {', '.join(found) or 'none'}); "
            f"name an existing one, or train it with `luigi --module tasks RunAll --experiment {experiment} "
            "--local-scheduler`")
    checkpoint = paths.train_dir(root, experiment, epoch) / paths.CHECKPOINT_FILE
    folder = paths.search_dir(root, experiment, epoch)
    if not checkpoint.is_file():
        raise SearchUnavailableError(
            f"epoch {epoch} of experiment {experiment!r} is not trained (no {checkpoint}; trained epochs: "
            f"{describe_epochs(trained_epochs(root, experiment))}); train and index it with `{index_command(experiment, epoch)}`")
    if not (folder / paths.SEARCH_META_FILE).is_file():
        raise SearchUnavailableError(
            f"epoch {epoch} of experiment {experiment!r} has no search index (no {folder}; indexed epochs: "
            f"{describe_epochs(indexed_epochs(root, experiment))}); build it with `{index_command(experiment, epoch)}`")
    return SearchArtifacts(search_dir=folder, checkpoint=checkpoint)


def dataset_folder(root: str | Path, experiment: str, meta: Mapping[str, Any]) -> Path:
    """The indexed dataset the search index was built from.

    ``meta["dataset_dir"]`` is absolute; when the artifacts folder has moved since,
    the same dataset is looked up under ``root`` from the experiment's recorded
    ``[dataset]`` settings (``config.json``).
    """
    recorded = Path(meta["dataset_dir"])
    if recorded.is_dir():
        return recorded
    # Imported here: indexing pulls in torch and dask, which the command's input checks do without.
    from pipeline.data.settings import recorded_dataset_dir

    moved = recorded_dataset_dir(root, experiment)
    if moved is not None and moved.is_dir():
        return moved
    raise DatasetLayoutError(f"the dataset {recorded} that the search index was built from is missing; rebuild it "
                             "with `luigi --module tasks IndexDataset --local-scheduler` under the experiment's "
                             "[dataset] settings")
