"""Luigi parameters made from the settings dataclasses of :mod:`pipeline`.

A setting's default, help text and choices are declared once, on its dataclass
field (:func:`pipeline.settings.setting`). :func:`settings_parameters` adds one
Luigi parameter per field to a task or config section, so ``luigi.cfg``, the
command line (``--TrainEpoch-lr 0.01``) and the library share that declaration;
:func:`settings_of` builds the dataclass back from a task's parameter values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

import luigi

from pipeline.settings import declared, field_types, setting_fields

T = TypeVar("T")
C = TypeVar("C", bound=type)


def _parameter(field: dataclasses.Field, kind: Any, section: str | None) -> luigi.Parameter[Any]:
    spec = declared(field)
    description = spec.help
    if spec.choices:
        description += f" (one of: {', '.join(spec.choices)})"
    common: dict[str, Any] = dict(default=field.default, description=description or None,
                                  significant=not spec.run_only)
    if section:
        common["config_path"] = dict(section=section, name=field.name)
    # Choices are plain strings here, not ChoiceParameters: pipeline.settings.check()
    # refuses a bad value with a ConfigError naming "[section] name" and the choices.
    if kind is bool:
        return luigi.BoolParameter(parsing=luigi.BoolParameter.EXPLICIT_PARSING, **common)
    if kind is int:
        return luigi.IntParameter(**common)
    if kind is float:
        return luigi.FloatParameter(**common)
    if kind is str:
        return luigi.Parameter(**common)
    raise TypeError(f"setting {field.name}: no Luigi parameter for type {kind!r}")


def _fields(settings_cls: type) -> list[tuple[dataclasses.Field, Any]]:
    types = field_types(settings_cls)
    return [(f, types[f.name]) for f in setting_fields(settings_cls)]


def settings_parameters(*settings_classes: type, only: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                        section: str | None = None) -> Callable[[C], C]:
    """Class decorator: one Luigi parameter per :func:`~pipeline.settings.setting` field of each class.

    Fields made without :func:`setting` (plain fields and library-only options) and names in
    ``exclude`` (or not in ``only``, when given) are skipped. ``section`` reads the values from that ``luigi.cfg``
    section instead of the task's own (``[dataset]`` for IndexDataset).
    """

    def add(task_cls: C) -> C:
        for settings_cls in settings_classes:
            for field, kind in _fields(settings_cls):
                if field.name not in exclude and (not only or field.name in only):
                    parameter = _parameter(field, kind, section)
                    setattr(task_cls, field.name, parameter)
                    parameter.__set_name__(task_cls, field.name)  # setattr skips it; Luigi's descriptor needs it
        return task_cls

    return add


def settings_of(task: Any, settings_cls: type[T], **extra: Any) -> T:
    """An instance of ``settings_cls`` from ``task``'s parameters of the same names (plus ``extra``)."""
    values = {f.name: getattr(task, f.name) for f, _ in _fields(settings_cls) if hasattr(task, f.name)}
    return settings_cls(**values, **extra)
