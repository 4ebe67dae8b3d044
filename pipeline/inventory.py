"""What exists under an artifacts root: experiments, their trained or indexed
epochs, and the dataset an experiment was recorded on.

Commands that read artifacts (search, export, show) use these to say what is
there when what was asked for is not. No torch or dask here: they answer bad
arguments before any heavy import.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline import paths
from pipeline.layout import check_layout

_EPOCH = re.compile(r"^epoch-(\d+)$")


def experiments(root: str | Path) -> list[str]:
    """Experiment folders under ``root``: those with a training folder or a recorded config."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in paths.RESERVED
                  and ((p / "train").is_dir() or (p / paths.CONFIG_FILE).is_file()))


def _epochs(folder: Path, marker: str) -> list[int]:
    """Epoch numbers of the ``epoch-NNN`` subfolders of ``folder`` that hold ``marker``
    (raises :class:`~pipeline.errors.ConfigError` for an experiment of the older layout)."""
    if not folder.is_dir():
        return []
    check_layout(folder.parent)
    return sorted(int(m.group(1)) for p in folder.iterdir()
                  if (m := _EPOCH.match(p.name)) and (p / marker).is_file())


def trained_epochs(root: str | Path, experiment: str) -> list[int]:
    """Epochs of ``experiment`` that have a checkpoint."""
    return _epochs(paths.experiment_dir(root, experiment) / "train", paths.CHECKPOINT_FILE)


def indexed_epochs(root: str | Path, experiment: str) -> list[int]:
    """Epochs of ``experiment`` that have a (complete) search index."""
    return _epochs(paths.experiment_dir(root, experiment) / "search", paths.SEARCH_META_FILE)


def describe_epochs(epochs: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``; ``[]`` -> ``"none"``."""
    runs: list[list[int]] = []
    for e in epochs:
        if runs and e == runs[-1][1] + 1:
            runs[-1][1] = e
        else:
            runs.append([e, e])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs) or "none"


def recorded_dataset_settings(root: str | Path, experiment: str) -> dict | None:
    """The ``[dataset]`` settings recorded in the experiment's ``config.json``, if any.

    Turn them into the dataset folder with
    ``paths.dataset_dir(root, IndexSettings(**settings).key())``.
    """
    try:
        dataset = json.loads(paths.config_file(root, experiment).read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return dataset if isinstance(dataset, dict) else None
