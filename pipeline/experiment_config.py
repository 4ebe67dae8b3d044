"""Guard against silently mixing settings inside one experiment folder.

An experiment's outputs are found by name and epoch only, so the settings that
shape them are recorded in ``<experiment>/config.json`` on first use and every
later run is checked against it.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any, Mapping

from pipeline.atomic import write_text_atomic
from pipeline.errors import ConfigError


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def record_or_check(path: str | Path, settings: Mapping[str, Mapping[str, Any]], experiment: str) -> None:
    """Write ``settings`` to ``path`` if absent; else raise if any recorded value differs.

    Only settings present in both are compared (and new ones are added), so each
    stage records its own settings when it first runs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Stages of one experiment may run at once (--workers N): serialise read-merge-write.
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _record_or_check(path, settings, experiment)


def _record_or_check(path: Path, settings: Mapping[str, Mapping[str, Any]], experiment: str) -> None:
    new = json.loads(json.dumps(settings, default=str))
    if not path.is_file():
        write_text_atomic(path, json.dumps(new, indent=2, sort_keys=True))
        return
    old = json.loads(path.read_text())
    diffs = []
    merged = dict(old)
    for section, values in new.items():
        a, b = _flatten(old.get(section, {})), _flatten(values)
        diffs += [f"[{section}] {k}: was {a[k]!r}, now {b[k]!r}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
        merged[section] = {**old.get(section, {}), **values}
    if diffs:
        raise ConfigError(
            f"experiment {experiment!r} was created with other settings ({path}):\n  " + "\n  ".join(diffs)
            + "\nUse a new experiment name (--experiment NAME or [run] experiment), "
            f"or delete {path.parent} to start this one over"
        )
    if merged != old:
        write_text_atomic(path, json.dumps(merged, indent=2, sort_keys=True))
