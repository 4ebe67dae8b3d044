"""The search page's settings, declared once: each field becomes a command-line
option of ``python -m pipeline.serve`` (``max_upload_mb`` -> ``--max-upload-mb``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.settings import check, declared, setting, setting_fields


@dataclass(frozen=True)
class ServeSettings:
    """How the page is served (none of it changes a search result)."""

    host: str = setting("127.0.0.1", "address to listen on (127.0.0.1: this machine only)", run_only=True)
    port: int = setting(8765, "port to listen on (0 = any free port; the URL is printed)", run_only=True,
                        minimum=0)
    k: int = setting(10, "neighbours shown per query", run_only=True, minimum=1)
    max_upload_mb: float = setting(10.0, "largest accepted upload, in megabytes", run_only=True, minimum=0.001)
    page_size: int = setting(20, "validation queries per page of the worst-queries view", run_only=True,
                             minimum=1)
    device: str = setting("cpu", "torch device that embeds uploads (cpu, cuda, cuda:N or auto)", run_only=True)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per field, with its default and help."""
    for f in setting_fields(ServeSettings):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                            help=f"{declared(f).help} (default: {f.default})")


def from_args(args: argparse.Namespace) -> ServeSettings:
    """The settings parsed by :func:`add_arguments`, checked (``ConfigError`` names the option)."""
    settings = ServeSettings(**{f.name: getattr(args, f.name) for f in setting_fields(ServeSettings)})
    check(settings, "serve")
    if settings.port > 65535:
        raise ConfigError(f"--port {settings.port} is not a TCP port; use 0..65535 (0 = any free port)")
    return settings
