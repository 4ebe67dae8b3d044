"""Where the dask stages compute: in this process, on a LocalCluster, or on an existing
dask.distributed cluster (``[dask] address``).

The data-parallel stages (IndexDataset decoding, TripletList class blocks) build
dask graphs and hand them to :func:`compute` with the client that
:func:`dask_client` yields, or None for the in-process schedulers that
``[dataset] dask_scheduler`` and ``[TripletList] dask_scheduler`` name. Only ids,
blocks and results travel through a cluster: pixels are written to and read
from the memory-mapped store, so a remote cluster needs the artifacts root on
storage every worker shares, under the same path.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import dask

from pipeline.errors import ConfigError
from pipeline.settings import setting

if TYPE_CHECKING:  # distributed is imported only when a cluster is asked for
    from distributed import Client

# Seconds to reach a scheduler (and to see a worker there) before giving up: a
# wrong address should end the command in seconds, not hang it.
CONNECT_TIMEOUT_S = 5.0

_LOCAL = re.compile(r"local:(\d+)")
_REMOTE = re.compile(r"([a-z][a-z0-9+.-]*://)?[^\s/:]+:\d+")


@dataclass(frozen=True)
class DaskSettings:
    """``[dask]``: the cluster the dask stages run on (run-only: results never depend on it)."""

    address: str = setting("", "empty = in this process ([dataset] / [TripletList] dask_scheduler); "
                           "tcp://host:8786 = an existing dask.distributed scheduler (artifacts on shared "
                           "storage); local:N = a LocalCluster of N worker processes for each task", run_only=True)


@dataclass(frozen=True)
class ClusterTarget:
    """A parsed ``[dask] address``: ``kind`` is ``in-process``, ``local`` (``workers`` processes) or
    ``remote`` (``address``)."""

    kind: str
    workers: int = 0
    address: str = ""


def _usage(address: str) -> str:
    return (f"[dask] address = {address}; use empty (in-process), local:N (a LocalCluster of N worker "
            "processes) or tcp://host:8786 (a running `dask scheduler` with `dask worker`s)")


def parse_address(address: str) -> ClusterTarget:
    """Parse ``[dask] address``; a malformed one raises :class:`ConfigError` naming it."""
    address = address.strip()
    if not address:
        return ClusterTarget("in-process")
    local = _LOCAL.fullmatch(address)
    if local:
        if int(local.group(1)) < 1:
            raise ConfigError(_usage(address) + "; local:N needs at least 1 worker")
        return ClusterTarget("local", workers=int(local.group(1)))
    if _REMOTE.fullmatch(address):
        return ClusterTarget("remote", address=address)
    raise ConfigError(_usage(address))


@contextlib.contextmanager
def dask_client(address: str, *, timeout: float = CONNECT_TIMEOUT_S) -> Iterator[Client | None]:
    """The client of ``[dask] address`` for the duration of a stage; None for in-process.

    ``local:N`` starts a LocalCluster (one thread per worker process, no dashboard:
    two tasks at once must not fight over its port) and closes it on exit. A remote
    address that cannot be reached, or whose scheduler has no worker, within
    ``timeout`` seconds raises :class:`ConfigError` naming the address.
    """
    target = parse_address(address)
    if target.kind == "in-process":
        yield None
        return
    from distributed import Client, LocalCluster  # lazily: in-process runs never pay for the import

    if target.kind == "local":
        with LocalCluster(n_workers=target.workers, processes=True, threads_per_worker=1, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(target.address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"[dask] address = {address}: no dask scheduler answered within {timeout:g}s ({exc}). "
                          "Start one there (`dask scheduler`, then `dask worker ADDRESS` on each machine), fix "
                          "the address, or leave [dask] address empty to compute in this process") from exc
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"[dask] address = {address}: the scheduler has no worker after {timeout:g}s. "
                              f"Start one with `dask worker {target.address}` (with the artifacts root on "
                              "storage it shares, under the same path), or leave [dask] address empty") from exc
        yield client


def compute(collections: Sequence[Any], client: Client | None, scheduler: str) -> tuple:
    """``dask.compute(*collections)`` on ``client`` when given, else with the in-process ``scheduler``
    (``threads``, ``synchronous``, ``processes``)."""
    return dask.compute(*collections, scheduler=client if client is not None else scheduler)


def share(value: Any, client: Client | None) -> Any:
    """``value`` as a task argument that many tasks read: on a cluster, scattered once to the
    workers (rather than copied into every task of the graph); in-process, itself."""
    if client is None:
        return value
    return client.scatter(value, hash=False)
