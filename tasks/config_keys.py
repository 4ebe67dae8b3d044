"""Refuse ``luigi.cfg`` keys that are not settings.

Luigi ignores a key it does not know, so a typo, or a setting that moved
(``[TrainEpoch] margin`` is now ``[loss] margin``), would silently run with the
default. The sections of this project's tasks and config classes are checked
before anything runs; Luigi's own sections (``[core]``, ``[worker]``...) are not.
"""

from __future__ import annotations

import luigi
from luigi.task_register import Register

from pipeline.errors import ConfigError

# Settings that moved, and where they live now.
MOVED = {
    ("TrainEpoch", "margin"): "[loss] margin",
    ("TrainEpoch", "squared"): "[loss] squared",
    ("TrainEpoch", "reduce"): "[loss] reduce",
    ("TrainEpoch", "in_batch"): "[loss] in_batch",
    ("TrainEpoch", "device"): "[compute] device",
    ("TrainEpoch", "threads"): "[compute] threads",
    ("EmbedEpoch", "device"): "[compute] device",
    ("EmbedEpoch", "threads"): "[compute] threads",
    ("dataset", "scheduler"): "[dataset] dask_scheduler",
    ("TripletList", "scheduler"): "[TripletList] dask_scheduler",
}


def _known_keys() -> dict[str, set[str]]:
    """Settings per section, for every task and config class defined in :mod:`tasks`."""
    known: dict[str, set[str]] = {}
    for cls in Register._get_reg().values():  # noqa: SLF001  (Luigi has no public listing)
        if isinstance(cls, type) and cls.__module__.startswith("tasks."):
            for name, param in cls.get_params():
                known.setdefault(cls.get_task_family(), set()).add(name)
                section = (getattr(param, "_config_path", None) or {}).get("section")
                if section:
                    known.setdefault(section, set()).add(name)
    return known


def check_config_keys() -> None:
    """Raise :class:`ConfigError` naming every key of the loaded configuration that is not a setting."""
    config = luigi.configuration.get_config()
    known = _known_keys()
    problems = []
    for section in config.sections():
        if section not in known:
            continue
        for option in config.options(section):
            name = option.replace("-", "_")
            if name in known[section] or config.has_option("DEFAULT", option):
                continue
            moved = MOVED.get((section, name))
            problems.append(f"[{section}] {option}: " + (f"moved to {moved}" if moved else
                            f"not a setting of [{section}] (settings: {', '.join(sorted(known[section]))})"))
    if problems:
        raise ConfigError("the configuration has keys that are not settings; rename or remove them:\n  "
                          + "\n  ".join(problems))
