"""Tasks whose settings are recorded in ``<experiment>/config.json`` and checked on every run."""

from __future__ import annotations

from pathlib import Path

from pipeline import paths
from pipeline.experiment_config import check_recorded, record_or_check
from tasks.config import artifacts
from tasks.config_keys import check_config_keys


class RecordedSettings:
    """Mixin for tasks whose settings are recorded in ``<experiment>/config.json``.

    ``complete()`` refuses settings that contradict the record, even when the
    output exists: Luigi then reports the error before running anything. The
    task provides ``experiment`` and ``recorded_settings()``.
    """

    def config_path(self) -> Path:
        return paths.config_file(artifacts().root, self.experiment)

    def check_settings(self) -> None:
        """Raise :class:`ConfigError` if the configuration has keys that are not settings, or if
        the current settings contradict the experiment's record."""
        check_config_keys()
        check_recorded(self.config_path(), self.recorded_settings(), self.experiment)

    def record_settings(self) -> None:
        """Record the settings on first use, or raise :class:`ConfigError` if they contradict the record."""
        record_or_check(self.config_path(), self.recorded_settings(), self.experiment)

    def complete(self) -> bool:
        self.check_settings()
        return super().complete()
