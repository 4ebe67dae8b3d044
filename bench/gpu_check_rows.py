"""Shared pieces of ``bench/gpu_check.py`` (not a benchmark itself): the table's
rows, how parts record them, the shipped configurations read as settings, and
the synthetic Tiny ImageNet-shaped pixel store the throughput parts train on."""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np

from pipeline.settings import setting_fields

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CFG = REPO / "luigi.cfg"
COURSE_CFG = REPO / "configs" / "tiny-imagenet.cfg"
# pass: goal met; FAIL: goal missed or the part broke; skip: not measured here; info: a figure without a goal.
STATUSES = ("pass", "FAIL", "skip", "info")
T = TypeVar("T")


@dataclass
class Row:
    """One line of the table; ``data`` carries values for the orchestrator (e.g. the GPU count)."""

    part: str
    check: str
    value: str
    goal: str = ""
    status: str = "info"
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"row status {self.status!r}; use one of {STATUSES}")


def record(path: Path, row: Row) -> None:
    """Append ``row`` to a part's JSON-lines file at once, so a part killed later keeps it."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(dataclasses.asdict(row)) + "\n")
        f.flush()


def read_rows(path: Path) -> list[Row]:
    """The rows a part recorded (a line cut short by a kill is dropped)."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(Row(**json.loads(line)))
            except (ValueError, TypeError):
                continue
    return rows


def render(rows: list[Row]) -> str:
    """The Markdown table: check, value, goal, result."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| check | value | goal | result |", "|---|---|---|---|"]
    lines += [f"| {cell(r.check)} | {cell(r.value)} | {cell(r.goal)} | {r.status} |" for r in rows]
    return "\n".join(lines)


def last_error(log: Path) -> str:
    """The line of ``log`` that best says what went wrong, for the table: the last Python
    exception line, else the last line naming an error or failure, else the last line."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    raised = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception|Interrupt)\b[^ ]*: ", ln)]
    named = [ln for ln in lines if re.match(r"(FAILED|ERROR)\b", ln) or re.search(r"Error|error:|Traceback", ln)]
    return ((raised or named or lines or ["(no output)"])[-1])[:240]


def judge(met: bool, on_gpu: bool) -> str:
    """pass/FAIL where the goal applies (a CUDA run); skip in the CPU dry run."""
    if not on_gpu:
        return "skip"
    return "pass" if met else "FAIL"


def _convert(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        return text.strip().lower() in ("1", "true", "yes", "on")
    return type(default)(text.strip())


def cfg_settings(cfg: Path, section: str, cls: type[T], **overrides: Any) -> T:
    """``cls`` built from ``[section]`` of ``cfg`` (only its declared settings; the rest keep
    their defaults), then ``overrides``: the same values a task reads from that file."""
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(cfg):
        raise FileNotFoundError(f"configuration file {cfg} is missing")
    values = {}
    for f in setting_fields(cls):
        if parser.has_option(section, f.name):
            values[f.name] = _convert(parser.get(section, f.name), f.default)
    values.update(overrides)
    return cls(**values)


def cfg_value(cfg: Path, section: str, key: str) -> str:
    """One raw value of ``cfg`` (e.g. ``[ValidateEpoch] k``)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(cfg)
    return parser.get(section, key)


def synthetic_store(workdir: Path, n_classes: int, per_class: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A read-only memory-mapped ``(N, size, size, 3)`` uint8 store of random pixels and its
    class-sorted labels, made once per work folder (the parts share it).

    Random pixels: throughput does not depend on what the images show, and writing
    100k real JPEGs to index would take longer than the check itself.
    """
    from pipeline.data.pixel_store import create_store

    n = n_classes * per_class
    path = workdir / f"pixels-{n_classes}x{per_class}-{size}px.npy"
    if not path.is_file():
        tmp = path.with_name(path.name + ".part.npy")
        store = create_store(tmp, n, size)
        rng = np.random.default_rng(0)
        for lo in range(0, n, 8192):
            hi = min(n, lo + 8192)
            store[lo:hi] = rng.integers(0, 256, (hi - lo, size, size, 3), dtype=np.uint8)
        store.flush()
        del store
        os.replace(tmp, path)  # complete or absent: a part killed midway leaves no half store behind
    return np.load(path, mmap_mode="r"), np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
