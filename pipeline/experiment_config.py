"""Guard against silently mixing settings inside one experiment folder.

An experiment's outputs are found by name and epoch only, so the settings that
shape them are recorded in ``<experiment>/config.json`` on first use and every
later run is checked against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline.data.label_noise import NOISE_KINDS, LabelNoise
from pipeline.errors import ConfigError
from pipeline.layout import check_layout
from pipeline.settings import Problem, check, setting, unread
from pipeline.storage import exclusive_lock, write_text_atomic


@dataclass(frozen=True)
class RunSettings:
    """``[run]``: which experiment, its seed, how many epochs the whole job trains, and
    the label noise it trains on (:mod:`pipeline.data.label_noise`)."""

    experiment: str = setting("demo", "experiment name: outputs go to <artifacts root>/<experiment>/")
    seed: int = setting(0, "seed of every random stream (see pipeline.seeds)")
    epochs: int = setting(14, "epochs RunAll trains, validates and reports", minimum=1)
    label_noise: float = setting(0.0, "share of training labels the experiment flips (0 = the true labels; "
                                      "metrics then also report against the true ones)", minimum=0.0)
    label_noise_kind: str = setting("symmetric", "symmetric (any other class) or pairs (class c -> c+1)",
                                    choices=NOISE_KINDS)

    def problems(self) -> list[Problem]:
        problems = [] if self.label_noise > 0 else unread(self, ["label_noise_kind"], "label_noise")
        if self.label_noise >= 1:
            problems.append(Problem(("label_noise",), "use a share below 1 (0.2 flips a fifth of the labels)"))
        return problems

    def noise(self) -> LabelNoise:
        """The label noise, checked (a bad value raises ConfigError naming ``[run]``)."""
        check(self, "run")
        return LabelNoise(self.label_noise, self.label_noise_kind)

    def recorded_noise(self) -> dict[str, Any]:
        """What recorded settings say of the noise: nothing without it, so experiments that
        were recorded before label noise existed stay current."""
        noise = self.noise()
        return {"label_noise": noise.share, "label_noise_kind": noise.kind} if noise.active else {}


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
    check_layout(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Stages of one experiment may run at once (--workers N): serialise read-merge-write.
    with exclusive_lock(path.with_name(f".{path.name}.lock")):
        _record_or_check(path, settings, experiment)


def check_recorded(path: str | Path, settings: Mapping[str, Mapping[str, Any]], experiment: str) -> None:
    """Raise :class:`ConfigError` if ``settings`` contradict those recorded in ``path`` (read only).

    Tasks call this from ``complete()``, so a changed setting is refused before
    anything runs, even when every output of the experiment already exists.
    """
    path = Path(path)
    check_layout(path.parent)
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}); restore it, or delete {path.parent} to start "
                          f"experiment {experiment!r} over") from exc
    _raise_on_differences(path, old, _plain(settings), experiment)


def _plain(settings: Mapping[str, Any]) -> dict:
    return json.loads(json.dumps(settings, default=str))


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    diffs = []
    for section, values in new.items():
        a, b = _flatten(old.get(section, {})), _flatten(values)
        diffs += [f"[{section}] {k}: was {a[k]!r}, now {b[k]!r}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    return diffs


def _raise_on_differences(path: Path, old: Mapping[str, Any], new: Mapping[str, Any], experiment: str) -> None:
    diffs = _differences(old, new)
    if diffs:
        raise ConfigError(
            f"experiment {experiment!r} was created with other settings ({path}):\n  " + "\n  ".join(diffs)
            + "\nUse a new experiment name (--experiment NAME or [run] experiment), "
            f"or delete {path.parent} to start this one over"
        )


def _record_or_check(path: Path, settings: Mapping[str, Mapping[str, Any]], experiment: str) -> None:
    new = _plain(settings)
    if not path.is_file():
        write_text_atomic(path, json.dumps(new, indent=2, sort_keys=True))
        return
    old = json.loads(path.read_text())
    _raise_on_differences(path, old, new, experiment)
    merged = dict(old)
    for section, values in new.items():
        merged[section] = {**old.get(section, {}), **values}
    if merged != old:
        write_text_atomic(path, json.dumps(merged, indent=2, sort_keys=True))
