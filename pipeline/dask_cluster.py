"""Where the dask stages compute: in this process, on a LocalCluster, or on an existing
dask.distributed cluster (``[dask] address``).

The data-parallel stages take the client that :func:`dask_client` yields, or None
to compute in this process: IndexDataset decoding and TripletList class blocks
build dask graphs and hand them to :func:`compute` (None: the in-process
schedulers ``[dataset] dask_scheduler`` and ``[TripletList] dask_scheduler``
name); EmbedEpoch shards (:mod:`pipeline.embedding.sharded`) and the query blocks
of ValidateEpoch and PixelBaseline (:mod:`pipeline.evaluation.on_cluster`) submit
futures. Only ids, blocks and results travel through a cluster: pixels are
written to and read from the memory-mapped store, and checkpoints are read from
disk, so a remote cluster needs the artifacts root on storage every worker
shares, under the same path.
"""

from __future__ import annotations

import contextlib
import logging
import math
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
_RESOURCE = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)=([0-9]*\.?[0-9]+)")


@dataclass(frozen=True)
class DaskSettings:
    """``[dask]``: the cluster the dask stages run on (run-only: results never depend on it)."""

    address: str = setting("", "empty = in this process; "
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


def parse_resources(text: str, setting_name: str) -> dict[str, float]:
    """``"GPU=1"`` or ``"GPU=1,SSD=1"``-style worker resources as a dict; empty text: none.

    A malformed entry raises :class:`ConfigError` naming ``setting_name`` (e.g.
    ``[EmbedEpoch] dask_resources``).
    """
    resources: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        match = _RESOURCE.fullmatch(entry)
        if not match or not math.isfinite(float(match.group(2))) or float(match.group(2)) <= 0:
            raise ConfigError(f"{setting_name} = {text}; write resources as NAME=AMOUNT, comma-separated "
                              "(e.g. GPU=1, for workers started with `dask worker ADDRESS --resources GPU=1`)")
        resources[match.group(1)] = float(match.group(2))
    return resources


@contextlib.contextmanager
def dask_client(address: str, *, timeout: float = CONNECT_TIMEOUT_S,
                resources: dict[str, float] | None = None) -> Iterator[Client | None]:
    """The client of ``[dask] address`` for the duration of a stage; None for in-process.

    ``local:N`` starts a LocalCluster (one thread per worker process, no dashboard:
    two tasks at once must not fight over its port) and closes it on exit; its
    workers advertise ``resources`` (what the stage's tasks will ask for, e.g.
    ``{"GPU": 1}``), as ``dask worker --resources`` does on a real cluster. A remote
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
                          silence_logs=logging.ERROR, resources=resources or None) as cluster, \
                Client(cluster) as client:
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


def worker_count(client: Client) -> int:
    """Workers connected to ``client``'s scheduler now (at least 1: the connection checked for one)."""
    return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))


def check_resources(client: Client, resources: dict[str, float], setting_name: str) -> None:
    """Raise :class:`ConfigError` naming ``setting_name`` if no worker of ``client`` offers ``resources``:
    tasks that ask for them would otherwise wait for such a worker forever."""
    if not resources:
        return
    offered = [info.get("resources", {}) for info in client.scheduler_info(n_workers=-1)["workers"].values()]
    if not any(all(have.get(name, 0) >= amount for name, amount in resources.items()) for have in offered):
        wanted = ",".join(f"{name}={amount:g}" for name, amount in resources.items())
        raise ConfigError(f"{setting_name} = {wanted}, but no worker of the dask cluster offers it (workers offer "
                          f"{offered}); start workers with `dask worker ADDRESS --resources {wanted}`, or leave "
                          f"{setting_name} empty to use any worker")


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
