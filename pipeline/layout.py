"""Where every artifact lives. Paths derive only from significant parameters
(dataset key, experiment name, epoch), so a path names exactly one result.

    <root>/datasets/<dataset>/            index.parquet, pixels.npy, skipped.parquet, summary.json
    <root>/baselines/<dataset>-k<k>-px<size>-seed<seed>.json   raw-pixel kNN metrics
    <root>/<experiment>/config.json       settings the experiment was created with
    <root>/<experiment>/triplets/epoch=NNN/part-00000.parquet
    <root>/<experiment>/train/epoch=NNN/  checkpoint.pt, steps.parquet
    <root>/<experiment>/embeddings/epoch=NNN/  part-*.parquet, manifest.json
    <root>/<experiment>/metrics/epoch=NNN.json (+ .per_class.parquet, .neighbors.parquet)
    <root>/<experiment>/report/epochs=NNN/ index.html, summary.md, *.png
    <root>/compare/<a>--<b>/epochs=NNN/   index.html, summary.md, compare.png
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RESERVED = {"datasets", "baselines", "compare"}


def check_name(name: str, setting: str) -> str:
    """Validate a user-chosen name that becomes a folder."""
    if not _NAME.match(name) or name in RESERVED:
        raise ConfigError(
            f"{setting} = {name!r} cannot be used as a folder name: use letters, digits, '.', '_' and '-' "
            f"(starting with a letter or digit), and not {sorted(RESERVED)}"
        )
    return name


def epoch_dir(epoch: int) -> str:
    return f"epoch={epoch:03d}"


def dataset_dir(root: str | Path, key: str) -> Path:
    return Path(root) / "datasets" / key


def baseline_file(root: str | Path, key: str, k: int, max_size: int, seed: int) -> Path:
    return Path(root) / "baselines" / f"{key}-k{k}-px{max_size}-seed{seed}.json"


def experiment_dir(root: str | Path, experiment: str) -> Path:
    return Path(root) / check_name(experiment, "experiment name")


def triplets_dir(root: str | Path, experiment: str, epoch: int) -> Path:
    return experiment_dir(root, experiment) / "triplets" / epoch_dir(epoch)


def train_dir(root: str | Path, experiment: str, epoch: int) -> Path:
    return experiment_dir(root, experiment) / "train" / epoch_dir(epoch)


def embeddings_dir(root: str | Path, experiment: str, epoch: int) -> Path:
    return experiment_dir(root, experiment) / "embeddings" / epoch_dir(epoch)


def metrics_file(root: str | Path, experiment: str, epoch: int) -> Path:
    return experiment_dir(root, experiment) / "metrics" / f"{epoch_dir(epoch)}.json"


def metrics_sidecar(metrics: Path, name: str) -> Path:
    """``metrics/epoch=NNN.json`` -> ``metrics/epoch=NNN.<name>.parquet``."""
    return metrics.with_name(f"{metrics.stem}.{name}.parquet")


def report_dir(root: str | Path, experiment: str, epochs: int) -> Path:
    return experiment_dir(root, experiment) / "report" / f"epochs={epochs:03d}"


def compare_dir(root: str | Path, experiments: list[str], epochs: int) -> Path:
    names = "--".join(check_name(e, "experiment name") for e in experiments)
    return Path(root) / "compare" / names / f"epochs={epochs:03d}"
