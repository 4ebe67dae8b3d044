"""Shared configuration sections of ``luigi.cfg`` (``[artifacts]``,
``[run]``, ``[model]``, ``[compute]``).

Settings that belong to one task live in that task's own section
(``[TripletList]``, ``[TrainEpoch]``...), as Luigi task parameters.
"""

from __future__ import annotations

import luigi

from models.embedding_net import ModelSettings


class artifacts(luigi.Config):  # noqa: N801  (section name in luigi.cfg)
    """``[artifacts] root``: the folder every output goes under."""

    root = luigi.Parameter(default="artifacts")


class run(luigi.Config):  # noqa: N801
    """``[run]``: experiment name (the output folder), seed and number of epochs.

    (Not called ``[experiment]``: Luigi would then read ``--experiment`` as an
    ambiguous abbreviation of ``--experiment-name``.)
    """

    experiment = luigi.Parameter(default="demo")
    seed = luigi.IntParameter(default=0)
    epochs = luigi.IntParameter(default=6)


class model(luigi.Config):  # noqa: N801
    """``[model]``: the embedding network (see :class:`models.ModelSettings`)."""

    arch = luigi.Parameter(default="resnet18")
    embedding_dim = luigi.IntParameter(default=128)
    normalize = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    stem = luigi.Parameter(default="small")
    input_size = luigi.IntParameter(default=0)
    width = luigi.IntParameter(default=64)
    weights = luigi.Parameter(default="none")
    weights_path = luigi.Parameter(default="")

    def settings(self, in_channels: int = 3) -> ModelSettings:
        return ModelSettings(arch=self.arch, embedding_dim=self.embedding_dim, normalize=self.normalize,
                             stem=self.stem, input_size=self.input_size, width=self.width,
                             in_channels=in_channels)


class RunSeed:
    """Mixin: ``self.seed`` is ``[run] seed`` (``--run-seed N`` on the command line).

    Read from the Config section rather than through a parameter's
    ``config_path``, which Luigi resolves from the file only, not the command line.
    """

    @property
    def seed(self) -> int:
        return run().seed


def experiment_param() -> luigi.Parameter:
    """The ``experiment`` parameter of every per-experiment task (default: [run] experiment)."""
    return luigi.Parameter(default="demo", config_path=dict(section="run", name="experiment"),
                           description="experiment name: outputs go to <artifacts root>/<experiment>/")


class compute(luigi.Config):  # noqa: N801
    """``[compute]``: where training and embedding run (run-only: not part of any output's identity).

    One setting for both stages, so ``--compute-device cpu`` moves the whole run.
    """

    device = luigi.Parameter(default="auto", significant=False,
                             description="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    threads = luigi.IntParameter(default=0, significant=False,
                                 description="CPU threads for torch (0 = torch's default)")
