"""``[TrainEpoch]`` settings of distributed training: how many ranks train an epoch, where.

All are run-only: N ranks compute the same steps, loss and batch statistics as
one process (see :mod:`pipeline.distributed.split`), so results agree up to the
order of floating-point sums and no output path depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.settings import check, setting

SECTION = "TrainEpoch"


@dataclass(frozen=True)
class DistributedSettings:
    """World layout: ``nnodes`` machines with ``processes`` ranks each; global rank
    ``node_rank * processes + local_rank``, rank 0 on node 0 writes the epoch."""

    processes: int = setting(1, "training ranks on this machine (one per GPU; on the CPU, processes sharing "
                                "its cores); 1 = the single-process path", run_only=True, minimum=1)
    nnodes: int = setting(1, "machines that train each epoch together", run_only=True, minimum=1)
    node_rank: int = setting(0, "this machine's number, 0 .. nnodes-1; node 0 runs the graph and writes the "
                                "epoch, the others only join its training", run_only=True, minimum=0)
    rendezvous: str = setting("", "host:port where node 0's rank 0 listens for the other ranks (empty: "
                                  "127.0.0.1 and a free port, single machine only)", run_only=True)
    timeout_s: float = setting(600.0, "seconds to wait for the other ranks to join, for any collective, and "
                                      "(nodes > 0) for node 0's inputs on shared storage", run_only=True,
                               minimum=1.0)

    @property
    def world_size(self) -> int:
        return self.nnodes * self.processes

    @property
    def distributed(self) -> bool:
        """Whether the epoch trains on several ranks (else: today's single-process path)."""
        return self.world_size > 1

    def global_rank(self, local_rank: int) -> int:
        return self.node_rank * self.processes + local_rank

    def check(self) -> None:
        """Raise :class:`~pipeline.errors.ConfigError` naming the first invalid setting."""
        check(self, SECTION)
        if self.node_rank >= self.nnodes:
            raise ConfigError(f"[{SECTION}] node_rank = {self.node_rank} with nnodes = {self.nnodes}; "
                              f"number the machines 0 .. {self.nnodes - 1}")
        if self.nnodes > 1 and not self.rendezvous:
            raise ConfigError(f"[{SECTION}] nnodes = {self.nnodes} needs rendezvous = HOST:PORT, an address of "
                              "node 0 that every machine reaches (the same on every node)")
        if self.rendezvous:
            parse_rendezvous(self.rendezvous)


def parse_rendezvous(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6::addr]:port`` too) -> (host, port); ConfigError naming the setting otherwise."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"[{SECTION}] rendezvous = {text!r}; use HOST:PORT of node 0, e.g. node0.example:29500")
    return host, int(port)
