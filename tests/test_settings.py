"""pipeline.settings: one way to declare a setting and one check, with one message format;
and the shipped configurations against the rules it enforces."""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.data.settings import IndexSettings
from pipeline.errors import ConfigError
from pipeline.sampling import ListSettings
from pipeline.settings import Problem, Registry, check, option, setting, setting_fields, significant, unread

REPO = Path(__file__).resolve().parents[1]

COLOURS: Registry[str] = Registry("colour", "[demo] colour")
COLOURS.add("red", "#f00")
COLOURS.add("blue", "#00f")


@dataclass(frozen=True)
class Demo:
    count: int = setting(3, "how many", minimum=1, why="one at least")
    share: float = setting(0.5, "a share", minimum=0.0, maximum=1.0)
    cap: float = setting(1.0, "a cap", above=0.0, maximum=1.0)
    flag: bool = setting(True, "a switch")
    colour: str = setting("red", "a colour", choices=COLOURS)
    threads: int = setting(0, "threads", run_only=True)
    chunk: int = option(8, minimum=1)
    device: str | None = option(None)
    plain: int = 7

    def problems(self) -> list[Problem]:
        return unread(self, ["share"], "flag") if not self.flag else []


def _message(**values) -> str:
    with pytest.raises(ConfigError) as info:
        check(Demo(**values), "demo")
    return str(info.value)


def test_values_are_converted_to_the_declared_type():
    demo = Demo(count="4", share="0.25", cap=1, flag="TRUE", device=None)
    check(demo, "demo")
    assert (demo.count, demo.share, demo.cap, demo.flag) == (4, 0.25, 1.0, True)
    assert type(demo.cap) is float


@pytest.mark.parametrize("values, message", [
    (dict(count="x"), "[demo] count = 'x'; use an integer"),
    (dict(count=2.5), "[demo] count = 2.5; use an integer"),
    (dict(count=True), "[demo] count = True; use an integer"),
    (dict(flag="maybe"), "[demo] flag = 'maybe'; use true or false"),
    (dict(share=float("nan")), "[demo] share = nan; use a finite number"),
    (dict(count=0), "[demo] count = 0; it must be at least 1 (one at least)"),
    (dict(share=1.5), "[demo] share = 1.5; use a value in [0.0, 1.0]"),
    (dict(cap=0.0), "[demo] cap = 0.0; use a value in (0.0, 1.0]"),
    (dict(colour="green"), "[demo] colour = 'green'; use one of blue, red"),
    (dict(chunk=0), "[demo] chunk = 0; it must be at least 1"),
    (dict(device=3), "[demo] device = 3; use a string"),
    (dict(flag=False, share=0.1), "[demo] share = 0.1 with [demo] flag = False; share is not read with that flag"),
])
def test_one_message_format_names_section_setting_and_value(values, message):
    assert _message(**values).startswith(message)


def test_declarations():
    assert [f.name for f in setting_fields(Demo)] == ["count", "share", "cap", "flag", "colour", "threads"]
    assert set(significant(Demo())) == {"count", "share", "cap", "flag", "colour"}
    assert Demo(flag=False).problems() == []  # a default value is never "ignored"
    assert COLOURS["blue"] == "#00f" and "red" in COLOURS
    with pytest.raises(ConfigError, match=r"\[demo\] colour = 'green'; use one of blue, red"):
        COLOURS["green"]
    with pytest.raises(ValueError, match="twice"):
        COLOURS.add("red", "#f00")


# --------------------------------------------------------------------------- the shipped configurations


def _sections(*files: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read([REPO / "luigi.cfg", *files])  # as Luigi layers LUIGI_CONFIG_PATH over luigi.cfg
    return parser


def _settings(parser: configparser.ConfigParser) -> tuple[ListSettings, IndexSettings]:
    def values(section: str, cls: type) -> dict[str, str]:
        names = {f.name for f in setting_fields(cls)}
        return {k: v for k, v in parser.items(section) if k in names} if parser.has_section(section) else {}

    return ListSettings(**values("TripletList", ListSettings)), IndexSettings(**values("dataset", IndexSettings))


def test_the_shipped_values_are_the_defaults():
    """So "differs from its default" means "set by the user": a config keeps every shipped key."""
    triplets, dataset = _settings(_sections())
    dataset.check()
    assert triplets == ListSettings()
    assert dataset == IndexSettings()


@pytest.mark.parametrize("profile", [None, *sorted((REPO / "configs").glob("*.cfg"))],
                         ids=lambda p: "luigi.cfg" if p is None else p.name)
def test_every_shipped_profile_passes_the_checks(profile):
    triplets, dataset = _settings(_sections(*([profile] if profile else [])))
    for epoch in (1, 2):
        triplets.sampler(epoch)
    check(dataset, "dataset")
