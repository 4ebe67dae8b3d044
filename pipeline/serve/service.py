"""The searchable epochs of one experiment, each opened (network, index, pixel
store) on first use and kept for the next requests, a few at a time."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from pipeline import paths
from pipeline.inventory import describe_epochs, trained_epochs
from pipeline.search.locate import SearchUnavailableError, index_command, locate
from pipeline.search.searcher import Searcher

# Open epochs kept in memory; switching back and forth between a few stays instant
# while a long run's dozens of indexes do not all sit in memory at once.
KEEP_OPEN = 4


class SearchService:
    """Opens :class:`Searcher` s of ``experiment`` under ``root`` on demand (thread-safe)."""

    def __init__(self, root: str | Path, experiment: str, *, device: str = "cpu") -> None:
        self.root, self.experiment, self.device = Path(root), experiment, device
        # epoch -> (the index's meta.json stamp when opened, searcher)
        self._open: OrderedDict[int, tuple[tuple[int, int], Searcher]] = OrderedDict()
        self._lock = threading.Lock()

    def epochs(self) -> list[int]:
        """Epochs with a search index now (read from disk each time, so new indexes show up)."""
        return Searcher.available_epochs(self.root, self.experiment)

    def latest_epoch(self) -> int:
        """The last indexed epoch; :class:`SearchUnavailableError` saying how to build one if there is none."""
        epochs = self.epochs()
        if epochs:
            return epochs[-1]
        if not paths.experiment_dir(self.root, self.experiment).is_dir():
            locate(self.root, self.experiment, 0)  # raises, naming the experiments that do exist
        trained = trained_epochs(self.root, self.experiment)
        raise SearchUnavailableError(
            f"experiment {self.experiment!r} under {self.root} has no search index yet (trained epochs: "
            f"{describe_epochs(trained)}); build one with `{index_command(self.experiment, trained[-1] if trained else 1)}`"
            ", or name an epoch with --epoch")

    def unavailable(self, epoch: int) -> str:
        """Why ``epoch`` cannot be searched, and the command that makes it searchable."""
        return (f"epoch {epoch} of experiment {self.experiment!r} has no search index (indexed epochs: "
                f"{describe_epochs(self.epochs())}); build it with `{index_command(self.experiment, epoch)}`")

    def searcher(self, epoch: int) -> Searcher:
        """The searcher of ``epoch``, opened now if it is not open yet.

        Raises what :meth:`Searcher.from_artifacts` raises (a missing index or
        epoch, damaged files). An index rebuilt since it was opened (the task
        swaps in a new folder) is opened again. Opening holds the lock: two
        requests for a new epoch load it once, not twice.
        """
        with self._lock:
            stamp = self._stamp(epoch)
            found = self._open.get(epoch)
            if found is not None and found[0] == stamp:
                self._open.move_to_end(epoch)
                return found[1]
            searcher = Searcher.from_artifacts(self.root, self.experiment, epoch, device=self.device)
            self._open[epoch] = (stamp, searcher)
            self._open.move_to_end(epoch)
            while len(self._open) > KEEP_OPEN:
                self._open.popitem(last=False)
            return searcher

    def _stamp(self, epoch: int) -> tuple[int, int]:
        """Identity of the epoch's index on disk: (inode, mtime) of its meta.json, (0, 0) if absent."""
        try:
            st = (paths.search_dir(self.root, self.experiment, epoch) / paths.SEARCH_META_FILE).stat()
        except OSError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)
