"""Shared configuration sections of ``luigi.cfg``: ``[artifacts]``, ``[run]``,
``[model]``, ``[loss]``, ``[compute]``, ``[dask]`` and ``[tracking]``.

Each section's settings are declared once, on a dataclass in :mod:`pipeline` or
:mod:`models`; see :mod:`tasks.parameters`. Settings that belong to one task
live in that task's own section (``[TripletList]``, ``[TrainEpoch]``...).
"""

from __future__ import annotations

import luigi
from luigi.cmdline_parser import CmdlineParser

from pipeline import paths
from pipeline.dask_cluster import DaskSettings
from pipeline.device import ComputeSettings
from pipeline.experiment_config import RunSettings
from pipeline.network import ModelSettings, WeightSettings
from pipeline.tracking import EventLog, TrackingSettings
from pipeline.training.settings import LossSettings
from tasks.parameters import settings_of, settings_parameters


class artifacts(luigi.Config):  # noqa: N801  (section name in luigi.cfg)
    """``[artifacts] root``: the folder every output goes under."""

    root = luigi.Parameter(default="artifacts")


@settings_parameters(RunSettings)
class run(luigi.Config):  # noqa: N801
    """``[run]``: experiment name (the output folder), seed and number of epochs.

    (Not called ``[experiment]``: Luigi would then read ``--experiment`` as an
    ambiguous abbreviation of ``--experiment-name``.)
    """

    def settings(self) -> RunSettings:
        return settings_of(self, RunSettings)


@settings_parameters(ModelSettings, WeightSettings)
class model(luigi.Config):  # noqa: N801
    """``[model]``: the embedding network and its initial weights."""

    def settings(self, in_channels: int = 3) -> ModelSettings:
        return settings_of(self, ModelSettings, in_channels=in_channels)

    def weight_settings(self) -> WeightSettings:
        return settings_of(self, WeightSettings)


@settings_parameters(LossSettings)
class loss(luigi.Config):  # noqa: N801
    """``[loss]``: the triplet loss, read by TrainEpoch and by TripletList (whose mining targets its margin)."""

    def settings(self) -> LossSettings:
        return settings_of(self, LossSettings)


@settings_parameters(ComputeSettings)
class compute(luigi.Config):  # noqa: N801
    """``[compute]``: where training and embedding run (run-only: not part of any output's identity).

    One setting for both stages, so ``--compute-device cpu`` moves the whole run.
    """

    def settings(self) -> ComputeSettings:
        return settings_of(self, ComputeSettings)


@settings_parameters(DaskSettings)
class dask(luigi.Config):  # noqa: N801
    """``[dask] address``: the cluster the data-parallel stages run on (IndexDataset decoding,
    plain TripletList class blocks, EmbedEpoch shards, ValidateEpoch and PixelBaseline query
    blocks; run-only). ``--dask-address local:2`` on the command line."""

    def settings(self) -> DaskSettings:
        return settings_of(self, DaskSettings)


@settings_parameters(TrackingSettings)
class tracking(luigi.Config):  # noqa: N801
    """``[tracking] tensorboard``: TensorBoard event files under ``<experiment>/tensorboard/`` (run-only)."""

    def settings(self) -> TrackingSettings:
        return settings_of(self, TrackingSettings)

    def event_log(self, experiment: str, kind: str, epoch: int = 0) -> EventLog:
        """The event file a task (``kind``: train, lists, metrics, baseline) writes for ``experiment``'s ``epoch``."""
        return EventLog(paths.tensorboard_dir(artifacts().root, experiment), kind, epoch,
                        enabled=self.settings().tensorboard)


class RunSeed:
    """Mixin: ``self.seed`` is ``[run] seed`` (``--run-seed N`` on the command line).

    Read from the Config section rather than through a parameter's
    ``config_path``, which Luigi resolves from the file only, not the command line.
    """

    @property
    def seed(self) -> int:
        return run().seed


class _FromRun:
    """A parameter whose default is the ``[run]`` setting of the same name, as ``run()`` sees it:
    from luigi.cfg or from ``--run-<name>`` on the command line (a ``config_path`` would read the
    file only, and ``--run-experiment x`` would then be silently ignored)."""

    def _value_iterator(self, task_name, param_name):
        parser = CmdlineParser.get_instance()
        if parser:
            given = getattr(parser.known_args, self._parser_global_dest(param_name, task_name), None)
            yield self._parse_or_no_value(given), None
        yield self._get_value_from_config(task_name, param_name), None
        yield getattr(run(), param_name), None


class _RunParameter(_FromRun, luigi.Parameter):
    pass


class _RunIntParameter(_FromRun, luigi.IntParameter):
    pass


def experiment_param() -> luigi.Parameter:
    """The ``experiment`` parameter of every per-experiment task (default: [run] experiment)."""
    return _RunParameter(description="experiment name: outputs go to <artifacts root>/<experiment>/ "
                                     "(default: [run] experiment)")


def epochs_param() -> luigi.IntParameter:
    """The ``epochs`` parameter of RunAll and Compare (default: [run] epochs)."""
    return _RunIntParameter(description="epochs 1..N to train, validate and report (default: [run] epochs)")
