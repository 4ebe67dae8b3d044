"""Declare a setting once, and check every setting the same way.

Settings live in frozen dataclasses beside the code that uses them
(``TrainSettings``, ``ListSettings``, ``IndexSettings``...). A field made with
:func:`setting` is a configurable setting: ``tasks/parameters.py`` turns it into
a Luigi parameter (``luigi.cfg`` key and ``--Section-name`` flag), so its default
is typed once. A field made with :func:`option` is checked the same way but is a
library-only tuning knob that no configuration sets. :func:`setting_fields` lists
a class's settings.

:func:`check` is the one check, in two steps, with one message format::

    [section] name = value; how to fix it
    [section] name = value with [section] other = value; why, and how to fix it

1. Each declared field alone (:func:`check_fields`): its value converted to the
   declared type (``str``, ``int``, ``float``, ``bool``; config files and library
   callers may give strings), then its ``choices`` and its range (``minimum``,
   ``maximum``, ``above``; floats must be finite).
2. The rules between fields, which a settings dataclass declares by defining
   ``problems(self) -> list[Problem]``.

Silently ignored settings are one such rule. A setting the chosen variant never
reads (``[dataset] root`` with the embedded source, ``pool_size`` with batched
lists) is refused when its value differs from its default; :func:`unread`
builds those problems. Defaults equal the values ``luigi.cfg`` ships, so "differs
from its default" means "set by the user", and a config may keep every shipped
key whatever variant it picks. Run-only knobs (thread counts, dask schedulers,
block counts) are never refused: they tune how work is spread, and one config
sets them once for every variant.

A :class:`Registry` maps the values of a choice setting to implementations
(sampling strategies, dataset sources); a setting whose ``choices`` is a registry
accepts exactly the registered names.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar, Union

from pipeline.errors import ConfigError

T = TypeVar("T")

_KEY = "setting"  # the dataclass field metadata key that holds a field's Declared


class Registry(Generic[T]):
    """Implementations chosen by name: the values a choice setting may take.

    Each implementation's module registers itself (``@REGISTRY.register(name)`` on a
    class or function, or ``REGISTRY.add(name, item)``), and the package imports its
    modules, so adding an implementation touches only its own module and that import.
    """

    def __init__(self, what: str, setting: str) -> None:
        self.what = what  # e.g. "triplet strategy", for messages
        self.setting = setting  # e.g. "[TripletList] strategy", for messages
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name`` (a name registered twice is a programming error)."""
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda item: self.add(name, item)

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(self._items))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"{self.setting} = {name!r}; use one of {', '.join(self.names())} "
                              f"(unknown {self.what})") from None


@dataclass(frozen=True)
class Declared:
    """What :func:`setting` or :func:`option` declared about a field (kept in its metadata)."""

    help: str
    configurable: bool
    run_only: bool = False
    choices_from: Sequence[str] | Registry | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    why: str = ""

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The accepted values (a registry's names as registered when asked), or None for any."""
        if self.choices_from is None:
            return None
        if isinstance(self.choices_from, Registry):
            return self.choices_from.names()
        return tuple(self.choices_from)


def setting(default: Any, help: str = "", *, choices: Sequence[str] | Registry | None = None,  # noqa: A002
            minimum: float | None = None, maximum: float | None = None, above: float | None = None,
            why: str = "", run_only: bool = False) -> Any:
    """A configurable setting: a dataclass field that becomes a Luigi parameter.

    ``choices`` (a sequence, or a :class:`Registry` whose names are the choices),
    ``minimum``/``maximum`` (inclusive) and ``above`` (exclusive lower bound) are
    checked by :func:`check`; ``why`` says why the range is what it is (shown
    with a value outside it). ``run_only`` marks knobs that change how a result is
    computed, not what it is (threads, block counts): they are left out of output
    identities and recorded settings, and never refused as ignored.
    """
    return dataclasses.field(default=default, metadata={_KEY: Declared(
        help=help, configurable=True, run_only=run_only, choices_from=choices, minimum=minimum, maximum=maximum,
        above=above, why=why)})


def option(default: Any, *, choices: Sequence[str] | None = None, minimum: float | None = None,
           maximum: float | None = None, above: float | None = None, why: str = "") -> Any:
    """A library-only tuning field (no config key, no Luigi parameter), checked like a setting."""
    return dataclasses.field(default=default, metadata={_KEY: Declared(
        help="", configurable=False, choices_from=choices, minimum=minimum, maximum=maximum, above=above, why=why)})


def declared(field: dataclasses.Field) -> Declared:
    """What :func:`setting`/:func:`option` declared about ``field`` (e.g. from :func:`setting_fields`)."""
    d = _declared(field)
    if d is None:
        raise TypeError(f"field {field.name} was made without setting() or option()")
    return d


def _declared(field: dataclasses.Field) -> Declared | None:
    return field.metadata.get(_KEY)


def setting_fields(settings_cls: type | Any) -> tuple[dataclasses.Field, ...]:
    """The configurable settings (fields made with :func:`setting`) of a settings dataclass or instance."""
    cls: type = settings_cls if isinstance(settings_cls, type) else type(settings_cls)
    return _setting_fields(cls)


@cache
def _setting_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init and (d := _declared(f)) is not None and d.configurable)


@cache
def field_types(cls: type) -> dict[str, Any]:
    """The declared type of every field of ``cls`` (annotations resolved)."""
    return typing.get_type_hints(cls)


def significant(settings: Any) -> dict[str, Any]:
    """The settings of ``settings`` that shape results, by name: all but the run-only ones."""
    return {f.name: getattr(settings, f.name) for f in setting_fields(settings) if not is_run_only(f)}


def is_run_only(field: dataclasses.Field) -> bool:
    """Whether ``field`` is a run-only setting (see :func:`setting`)."""
    d = _declared(field)
    return d is not None and d.run_only


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Problem:
    """A rule that a combination of settings breaks.

    ``names`` are the settings involved, the one to change first; ``fix`` says why
    the combination is refused and how to fix it. :func:`check` formats it as
    ``[section] a = 1 with [section] b = 2; fix``.
    """

    names: tuple[str, ...]
    fix: str


def unread(settings: Any, names: Iterable[str], decided_by: str, fix: str = "") -> list[Problem]:
    """Problems for those of ``names`` that differ from their default although ``decided_by``'s
    current value means nothing reads them (so they would be silently ignored)."""
    defaults = {f.name: f.default for f in dataclasses.fields(settings)}
    problems = []
    for name in names:
        value, default = getattr(settings, name), defaults[name]
        if value != default:
            problems.append(Problem((name, decided_by), fix or (
                f"{name} is not read with that {decided_by}, so the value would be silently ignored: "
                f"remove {name} (its default is {default!r}) or change {decided_by}")))
    return problems


def check(settings: Any, section: str) -> None:
    """Raise :class:`ConfigError` for the first bad field (:func:`check_fields`), else for every
    problem that ``settings.problems()`` reports, one per line."""
    check_fields(settings, section)
    problems = getattr(settings, "problems", None)
    if problems is not None:
        refuse(settings, section, problems())


def refuse(settings: Any, section: str, problems: Sequence[Problem]) -> None:
    """Raise :class:`ConfigError` stating ``problems`` (nothing when there are none)."""
    if problems:
        raise ConfigError("\n".join(
            " with ".join(f"[{section}] {name} = {getattr(settings, name)!r}" for name in p.names) + f"; {p.fix}"
            for p in problems))


def check_fields(settings: Any, section: str, names: Iterable[str] | None = None) -> None:
    """Convert each declared field (or those in ``names``) to its type and check its choices and range.

    A converted value is stored back (frozen dataclasses too: call it from
    ``__post_init__``), so ``pool_size="64"`` becomes 64. Raises
    :class:`ConfigError` ``[section] name = value; ...`` for the first bad field.
    """
    cls: type = type(settings)
    types = field_types(cls)
    wanted = None if names is None else set(names)
    for f in dataclasses.fields(settings):
        d = _declared(f)
        if d is None or (wanted is not None and f.name not in wanted):
            continue
        value = getattr(settings, f.name)
        try:
            converted = _convert(value, types[f.name])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[{section}] {f.name} = {value!r}; {exc}") from None
        if converted is not value:
            object.__setattr__(settings, f.name, converted)  # frozen: the converted value replaces the given one
        fix = _bad_value(converted, d)
        if fix:
            raise ConfigError(f"[{section}] {f.name} = {converted!r}; {fix}")


def _convert(value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (str, int, float, bool, or one of them or None); TypeError/ValueError says what to use."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError("use true or false")
    if kind is int:
        if isinstance(value, bool):
            raise TypeError("use an integer")
        if isinstance(value, int):
            return value
        try:
            number = float(value) if isinstance(value, float) else int(str(value).strip())
        except ValueError:
            raise ValueError("use an integer") from None
        if number != int(number):
            raise ValueError("use an integer")
        return int(number)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError("use a number")
        if isinstance(value, float):
            return value
        try:
            return float(value if isinstance(value, int) else str(value).strip())
        except ValueError:
            raise ValueError("use a number") from None
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise TypeError("use a string")
    return value  # other types are the declaring code's business


def _bad_value(value: Any, d: Declared) -> str:
    """How to fix ``value`` under ``d``'s choices and range; empty when it is fine."""
    if isinstance(value, float) and not math.isfinite(value):
        return "use a finite number"
    choices = d.choices
    if choices and value not in choices:
        return f"use one of {', '.join(choices)}"
    if d.minimum is None and d.maximum is None and d.above is None:
        return ""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "use a number"
    low_ok = (d.minimum is None or value >= d.minimum) and (d.above is None or value > d.above)
    if low_ok and (d.maximum is None or value <= d.maximum):
        return ""
    why = f" ({d.why})" if d.why else ""
    if d.maximum is None:
        return (f"it must be at least {d.minimum}" if d.above is None else f"it must be above {d.above}") + why
    if d.minimum is None and d.above is None:
        return f"it must be at most {d.maximum}{why}"
    low = f"[{d.minimum}" if d.above is None else f"({d.above}"
    return f"use a value in {low}, {d.maximum}]{why}"
