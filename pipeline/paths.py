"""Where every artifact lives. Paths derive only from significant parameters
(dataset key, experiment name, epoch), so a path names exactly one result.

    <root>/datasets/<dataset>/            index.parquet, pixels.npy, skipped.parquet, summary.json
    <root>/baselines/<dataset>-k<k>-px<size>-seed<seed>.json   raw-pixel kNN metrics
    <root>/<experiment>/config.json       settings the experiment was created with
    <root>/<experiment>/triplets/epoch-NNN/part-00000.parquet
    <root>/<experiment>/train/epoch-NNN/  steps.parquet, _checkpoint.pt, _summary.json
    <root>/<experiment>/embeddings/epoch-NNN/  part-*.parquet, _manifest.json
    <root>/<experiment>/metrics/epoch-NNN.json
    <root>/<experiment>/metrics/{per_class,neighbors,queries,confusion}/epoch-NNN.parquet
    <root>/<experiment>/audit/epoch-NNN.json
    <root>/<experiment>/audit/{images,duplicates}/epoch-NNN.parquet
    <root>/<experiment>/search/epoch-NNN/  index.faiss, items.parquet, meta.json
    <root>/<experiment>/report/epochs-NNN/ index.html, summary.md, *.png
    <root>/<experiment>/tensorboard/      TensorBoard event files and projector (derived; pipeline.tracking)
    <root>/compare/<a>--<b>/epochs-NNN/   index.html, summary.md, compare.png

Every Parquet collection (``triplets``, ``train``, ``embeddings``, each table
folder under ``metrics`` and ``audit``) reads as one table across epochs with no
extra arguments: its files carry an integer ``epoch`` column, the per-epoch
folders are not hive partitions (``epoch-NNN``, not ``epoch=NNN``, so no client
adds a second, differently typed ``epoch``), and the files that are not Parquet
start with ``_``, which pyarrow, pandas, DuckDB and Polars readers skip or never
match. :mod:`pipeline.layout` refuses, and migrates, the older layout.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RESERVED = {"datasets", "baselines", "compare"}

# File names inside the artifact folders (the layout above).
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "_checkpoint.pt"
STEP_LOG_FILE = "steps.parquet"
TRAIN_SUMMARY_FILE = "_summary.json"
TRIPLET_LIST_FILE = "part-00000.parquet"
EMBEDDING_MANIFEST = "_manifest.json"
DATASET_INDEX_FILE = "index.parquet"
PIXEL_STORE_FILE = "pixels.npy"
SKIPPED_FILE = "skipped.parquet"
DATASET_SUMMARY_FILE = "summary.json"
SEARCH_INDEX_FILE = "index.faiss"
SEARCH_ITEMS_FILE = "items.parquet"
SEARCH_META_FILE = "meta.json"
EXPORT_MODEL_FILE = "model.pt"
EXPORT_PREPROCESSING_FILE = "preprocessing.json"
REPORT_HTML = "index.html"
REPORT_MARKDOWN = "summary.md"
LOCKS_DIR = ".locks"


def embedding_shard(number: int) -> str:
    """File name of an embedding shard: ``part-00003.parquet``."""
    return f"part-{number:05d}.parquet"



def check_name(name: str, setting: str) -> str:
    """Validate a user-chosen name that becomes a folder."""
    if not _NAME.match(name) or name in RESERVED:
        raise ConfigError(
            f"{setting} = {name!r} cannot be used as a folder name: use letters, digits, '.', '_' and '-' "
            f"(starting with a letter or digit), and not {sorted(RESERVED)}"
        )
    return name


# The column every Parquet collection carries, and its type.
EPOCH_COLUMN = "epoch"


def epoch_dir(epoch: int) -> str:
    """``epoch-003``: the per-epoch folder (or, with a suffix, file) name; sorts by epoch up to 999."""
    return f"epoch-{epoch:03d}"


def datasets_dir(root: str | Path) -> Path:
    return Path(root) / "datasets"


def dataset_dir(root: str | Path, key: str) -> Path:
    return datasets_dir(root) / key


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


def audit_file(root: str | Path, experiment: str, epoch: int) -> Path:
    """``<experiment>/audit/epoch-NNN.json``: the summary of that epoch's label audit
    (AuditEpoch), written after its tables (:data:`AUDIT_TABLES`)."""
    return experiment_dir(root, experiment) / "audit" / f"{epoch_dir(epoch)}.json"


# The audit's Parquet tables (``audit/<name>/epoch-NNN.parquet``): one row per training
# image (given and suggested label, quality, suspect, outlier score), and duplicate pairs.
AUDIT_TABLES = ("images", "duplicates")


def audit_files(audit_file: str | Path) -> tuple[Path, ...]:
    """Every file of one epoch's audit: ``audit_file`` (the JSON) and its tables."""
    audit_file = Path(audit_file)
    return (audit_file, *(table_file(audit_file, name) for name in AUDIT_TABLES))


def search_dir(root: str | Path, experiment: str, epoch: int) -> Path:
    """``<experiment>/search/epoch-NNN/``: the SearchIndex over that epoch's embeddings."""
    return experiment_dir(root, experiment) / "search" / epoch_dir(epoch)


def metrics_file(root: str | Path, experiment: str, epoch: int) -> Path:
    return experiment_dir(root, experiment) / "metrics" / f"{epoch_dir(epoch)}.json"


def table_file(summary: str | Path, name: str) -> Path:
    """The Parquet table ``name`` of the epoch a summary JSON stands for:
    ``metrics/epoch-003.json`` -> ``metrics/<name>/epoch-003.parquet``.

    One folder per table, so each folder is one collection across epochs.
    """
    summary = Path(summary)
    return summary.parent / name / f"{summary.stem}.parquet"


def metrics_sidecar(metrics: Path, name: str) -> Path:
    """``metrics/epoch-NNN.json`` -> ``metrics/<name>/epoch-NNN.parquet``."""
    return table_file(metrics, name)


# The Parquet sidecars ValidateEpoch writes with metrics/epoch-NNN.json (metrics_sidecar names):
# per-class precision, the figure queries' neighbours, every query's precision and
# neighbours, class-confusion counts.
VALIDATION_SIDECARS = ("per_class", "neighbors", "queries", "confusion")


def validation_files(metrics_file: str | Path) -> tuple[Path, ...]:
    """Every file of one epoch's validation: ``metrics_file`` (the JSON) and its sidecars."""
    metrics_file = Path(metrics_file)
    return (metrics_file, *(metrics_sidecar(metrics_file, name) for name in VALIDATION_SIDECARS))


def report_dir(root: str | Path, experiment: str, epochs: int) -> Path:
    return experiment_dir(root, experiment) / "report" / f"epochs-{epochs:03d}"


def compare_dir(root: str | Path, experiments: list[str], epochs: int) -> Path:
    names = "--".join(check_name(e, "experiment name") for e in experiments)
    return Path(root) / "compare" / names / f"epochs-{epochs:03d}"


def tensorboard_dir(root: str | Path, experiment: str) -> Path:
    """``<experiment>/tensorboard/``: the experiment's TensorBoard run (:mod:`pipeline.tracking`)."""
    return experiment_dir(root, experiment) / "tensorboard"


def config_file(root: str | Path, experiment: str) -> Path:
    """The settings an experiment was created with (see :mod:`pipeline.experiment_config`)."""
    return experiment_dir(root, experiment) / CONFIG_FILE


def partial_checkpoint(train_epoch_dir: str | Path) -> Path:
    """``train/epoch-NNN`` -> the hidden ``train/.partial-epoch-NNN.pt`` of an epoch in progress."""
    d = Path(train_epoch_dir)
    return d.with_name(f".partial-{d.name}.pt")

