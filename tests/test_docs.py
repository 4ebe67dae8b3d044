"""The documentation cannot drift from the code.

Every ``luigi --module tasks TASK ...`` command in README.md and docs/*.md (also
``.venv/bin/luigi ...`` and ``make run ARGS="..."``) must name a task of
:mod:`tasks` and only flags Luigi's own command-line parser accepts for it.
Every ``python -m pipeline.X`` module the docs name must answer ``--help``, and
every ``from pipeline.X import Y`` in a snippet must import.
Relative links must point at files that exist, and the README stays short.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import luigi
import pytest
from luigi.cmdline_parser import CmdlineParser
from luigi.task_register import Register, TaskClassException

import tasks  # noqa: F401  (registers the pipeline's tasks and config sections)

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "artifacts" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

# Luigi's own flags (the [core] section without a prefix); Luigi's parser knows them too,
# this list only keeps them valid should a Luigi version register them elsewhere.
GLOBAL_FLAGS = {"--workers", "--local-scheduler", "--scheduler-host", "--scheduler-port", "--module",
                "--no-lock", "--help", "--help-all", "--log-level", "--logging-conf-file"}

_LUIGI = re.compile(r"\bluigi\s+--module\s+tasks\s+(?P<rest>.*)")
_MAKE_RUN = re.compile(r"\bmake\s+run\s+ARGS=(?P<args>\"[^\"]*\"|'[^']*')")
_PYTHON_M = re.compile(r"\bpython3?\s+-m\s+(?P<module>pipeline(?:\.\w+)+)")
_IMPORT = re.compile(r"^\s*from\s+(?P<module>(?:pipeline|tasks|models)(?:\.\w+)*)\s+import\s+(?P<names>[\w, ]+)", re.M)
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
# Where a command embedded in prose or a shell line ends.
_END = re.compile(r"`|\s#|\s\|\|?\s|\s&&\s|;")


@dataclass(frozen=True)
class Command:
    doc: str  # path relative to the repository root
    line: int
    task: str
    args: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{self.task}"


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) with shell continuations (trailing backslash) joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _split(rest: str) -> list[str]:
    cut = _END.search(rest)
    rest = rest[:cut.start()] if cut else rest
    try:
        return shlex.split(rest)
    except ValueError:  # an unbalanced quote in prose: fall back to whitespace
        return rest.split()


def extract_commands(text: str, doc: str = "<text>") -> list[Command]:
    """Every Luigi command line of a Markdown text (placeholders such as ``<Task>`` skipped)."""
    commands = []
    for number, line in _logical_lines(text):
        for match in _LUIGI.finditer(line):
            words = _split(match.group("rest"))
            if words and re.fullmatch(r"[A-Za-z_]\w*", words[0]):
                commands.append(Command(doc, number, words[0], tuple(words[1:])))
        for match in _MAKE_RUN.finditer(line):
            commands.append(Command(doc, number, "RunAll", tuple(shlex.split(match.group("args")[1:-1]))))
    return commands


def _flags(args: tuple[str, ...]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def check_command(task: str, args: tuple[str, ...] | list[str]) -> list[str]:
    """What is wrong with ``luigi --module tasks TASK ARGS`` (empty: nothing).

    The task must be a registered Luigi task defined in :mod:`tasks`; every ``--flag``
    must be an option of the parser Luigi builds for that root task (its own
    parameters, ``--Section-param`` of every registered task and config section,
    Luigi's global flags), spelled out in full (argparse would accept abbreviations).
    """
    try:
        cls = Register.get_task_cls(task)
    except TaskClassException as e:
        return [f"{task}: not a registered Luigi task ({e})"]
    if not (isinstance(cls, type) and issubclass(cls, luigi.Task) and cls.__module__.startswith("tasks")):
        return [f"{task}: not a task of the tasks package ({cls.__module__})"]
    parser = CmdlineParser._build_parser(root_task=task)  # noqa: SLF001  (the parser `luigi` itself uses)
    known = {option for action in parser._actions for option in action.option_strings}  # noqa: SLF001
    return [f"{task}: unknown flag {flag}" for flag in _flags(tuple(args))
            if flag not in known and flag not in GLOBAL_FLAGS]


_SECTION_FLAG = re.compile(r"(?<![\w-])--(?P<section>[A-Za-z][A-Za-z0-9]*)-[A-Za-z0-9-]*[A-Za-z0-9]")


def check_flag_mentions(text: str) -> list[str]:
    """Flags anywhere in a text (prose too) that name a registered section, e.g.
    ``--TrainEpoch-lr`` or ``--dask-address``, but no setting of it."""
    sections = {family for family, *_ in Register.get_all_params()}
    parser = CmdlineParser._build_parser()  # noqa: SLF001
    known = {option for action in parser._actions for option in action.option_strings}  # noqa: SLF001
    return sorted({m.group(0) for m in _SECTION_FLAG.finditer(text)
                   if m.group("section") in sections and m.group(0) not in known and m.group(0) not in GLOBAL_FLAGS})


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _all_commands() -> list[Command]:
    return [c for path in DOCS if path.exists() for c in extract_commands(_read(path), str(path.relative_to(ROOT)))]


def _python_modules() -> list[str]:
    return sorted({m.group("module") for path in DOCS if path.exists() for m in _PYTHON_M.finditer(_read(path))})


COMMANDS = _all_commands()
MODULES = _python_modules()


def test_docs_have_commands():
    assert (ROOT / "docs").is_dir()
    assert len(COMMANDS) >= 10, [c.id for c in COMMANDS]
    assert {"RunAll", "TrainEpoch", "ValidateEpoch", "SearchIndex", "Compare"} <= {c.task for c in COMMANDS}
    assert "pipeline.search" in MODULES


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_luigi_command(command: Command):
    assert check_command(command.task, command.args) == [], " ".join((command.task, *command.args))


@pytest.mark.parametrize("module", MODULES)
def test_python_module_help(module: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"python -m {module} --help exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "usage" in proc.stdout.lower()


IMPORTS = sorted({(m.group("module"), name.strip()) for path in DOCS if path.exists()
                  for m in _IMPORT.finditer(_read(path)) for name in m.group("names").split(",") if name.strip()})


@pytest.mark.parametrize("module, name", IMPORTS, ids=[f"{m}.{n}" for m, n in IMPORTS])
def test_python_imports_in_docs(module: str, name: str):
    """``from pipeline.X import Y`` in a snippet still works."""
    assert hasattr(importlib.import_module(module), name), f"{module} has no {name}"


def test_checker_rejects_bogus_task_and_flags():
    assert check_command("RunAll", ["--experiment", "x", "--epochs", "3", "--workers", "2", "--local-scheduler"]) == []
    assert check_command("TrainEpoch", ["--epoch", "3", "--TrainEpoch-lr", "0.1", "--model-arch", "resnet50",
                                        "--dask-address=local:2", "--no-lock"]) == []
    assert check_command("TrainEpochs", ["--epoch", "1"])  # no such task
    assert check_command("RunAll", ["--epoch", "3"]) == ["RunAll: unknown flag --epoch"]  # a prefix of --epochs
    assert check_command("TrainEpoch", ["--TrainEpoch-margin", "2"]) == ["TrainEpoch: unknown flag --TrainEpoch-margin"]
    assert check_command("RunAll", ["--bogus"]) == ["RunAll: unknown flag --bogus"]
    assert check_flag_mentions("set `--TrainEpoch-lr 0.1 --model-arch resnet50`, not `--TrainEpoch-lrr 0.1`, "
                               "`--dask-adress local:2` or `--IndexDataset-<setting>`") == [
        "--TrainEpoch-lrr", "--dask-adress"]


def test_extraction():
    text = """
```sh
.venv/bin/luigi --module tasks ValidateEpoch --epoch 3 --workers 2   # comment --not-a-flag
LUIGI_CONFIG_PATH=x.cfg luigi --module tasks RunAll \\
    --workers 2 --no-lock
make run ARGS="--experiment long --epochs 20"
```
Prose: `luigi --module tasks TrainEpoch --help` lists them; `luigi --module tasks <Task>` is a placeholder.
"""
    got = [(c.line, c.task, c.args) for c in extract_commands(text)]
    assert got == [(3, "ValidateEpoch", ("--epoch", "3", "--workers", "2")),
                   (4, "RunAll", ("--workers", "2", "--no-lock")),
                   (6, "RunAll", ("--experiment", "long", "--epochs", "20")),
                   (8, "TrainEpoch", ("--help",))]


def test_readme_is_short():
    lines = _read(ROOT / "README.md").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("doc", [p for p in DOCS if p.exists()], ids=lambda p: str(p.relative_to(ROOT)))
def test_section_flags_in_prose(doc: Path):
    assert check_flag_mentions(_read(doc)) == []


@pytest.mark.parametrize("doc", [p for p in DOCS if p.exists()], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(doc: Path):
    missing = []
    for match in _LINK.finditer(_read(doc)):
        target = match.group("target").split("#", 1)[0]
        if target and not re.match(r"^[a-z]+:", target) and not (doc.parent / target).exists():
            missing.append(match.group("target"))
    assert missing == []
