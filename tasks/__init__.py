"""Luigi tasks of the deep-ranking pipeline: thin wrappers over :mod:`pipeline`.

    luigi --module tasks RunAll --local-scheduler   # the whole job

Graph: IndexDataset -> TripletList(N) -> TrainEpoch(N) -> EmbedEpoch(N) ->
ValidateEpoch(N) -> Report -> RunAll; TrainEpoch(N) also needs TrainEpoch(N-1),
and a mined TripletList(N) needs EmbedEpoch(N-1). SearchIndex(N) indexes
EmbedEpoch(N) for ``python -m pipeline.search`` and ``python -m pipeline.serve``;
AuditEpoch(N) audits the training labels with EmbedEpoch(N) and the epochs before it.
"""

from tasks.compare import Compare, ExperimentEpochOutputs
from tasks.epoch import AuditEpoch, EmbedEpoch, JoinEpoch, TrainEpoch, TripletList
from tasks.index_dataset import IndexDataset
from tasks.pixel_baseline import PixelBaseline
from tasks.report import Report
from tasks.run_all import RunAll
from tasks.search_index import SearchIndex
from tasks.validate_epoch import ValidateEpoch, ValidateEpochs

__all__ = [
    "AuditEpoch",
    "Compare",
    "EmbedEpoch",
    "ExperimentEpochOutputs",
    "IndexDataset",
    "JoinEpoch",
    "PixelBaseline",
    "Report",
    "RunAll",
    "SearchIndex",
    "TrainEpoch",
    "TripletList",
    "ValidateEpoch",
    "ValidateEpochs",
]
