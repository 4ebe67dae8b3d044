"""Exceptions the pipeline raises for problems a user can fix.

Each message names the offending file or setting and says what was expected, so
the command line shows an actionable sentence rather than a stack trace.
"""


class PipelineError(Exception):
    """Base class: a problem with the user's data or configuration."""


class DatasetLayoutError(PipelineError):
    """A dataset root does not have the expected files or folders."""


class BadImageError(PipelineError):
    """An image file is corrupt, truncated, empty or otherwise undecodable."""


class ConfigError(PipelineError):
    """A configuration value is missing, out of range or inconsistent."""


class TrainingError(PipelineError):
    """Training diverged (for example a non-finite loss)."""


class WeightsUnavailableError(PipelineError):
    """Pretrained weights were requested but cannot be found offline."""


class ArtifactWriteError(PipelineError):
    """An output cannot be written: disk full, quota exceeded, read-only file
    system or no write permission under the artifacts root."""


class CorruptArtifactError(PipelineError):
    """An artifact is truncated, overwritten or inconsistent with its manifest:
    the message names the file, the folder to delete and the task that rebuilds it."""
