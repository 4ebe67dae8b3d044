"""What an embedding worker keeps between shards: its device and the network, loaded
once per worker process rather than once per shard.

A dask worker runs many shards of one EmbedEpoch (and, on a long-lived cluster,
shards of later epochs). Loading the checkpoint and moving the network to the
device costs far more than embedding a small shard, so the network is cached in
the worker process, keyed by the checkpoint's resolved path, modification time and
size (a rewritten checkpoint is a new key), the device and the expected
``[model]``. Only the latest network is kept: a worker embedding epoch after
epoch holds one model, not one per epoch.

Nothing here runs in the Luigi process: CUDA is touched only inside a worker.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch
from torch import nn

from pipeline.network import ModelSettings, network_from_checkpoint
from pipeline.checkpoint import load_checkpoint
from pipeline.device import ComputeSettings, resolve_device

_LOCK = threading.Lock()  # a worker with several threads loads a network once, not once per thread
_CACHE: dict[tuple, nn.Module] = {}


def cached_network(checkpoint: str | Path, expected: ModelSettings, device: torch.device, what: str) -> nn.Module:
    """The network in ``checkpoint`` on ``device``, loaded once per process and key (see the module doc).

    Raises what :func:`~models.embedding_net.network_from_checkpoint` raises (a
    ConfigError naming ``what`` when ``expected`` differs from the checkpoint's
    ``[model]``) and what :func:`~pipeline.checkpoint.load_checkpoint` raises for a
    damaged file.
    """
    path = Path(checkpoint).resolve()
    stat = os.stat(path)
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(device), expected)
    with _LOCK:
        net = _CACHE.get(key)
        if net is None:
            net = network_from_checkpoint(load_checkpoint(path), expected, device, what)
            net.eval()
            _CACHE.clear()  # keep only the latest network
            _CACHE[key] = net
    return net


def worker_device(settings: ComputeSettings, worker_name: object = None) -> torch.device:
    """The device a worker embeds on, resolved in the worker (never in the Luigi process).

    ``[compute] device = auto`` takes CUDA where the worker has it, else the CPU. A
    LocalCluster names its workers 0..N-1: worker i takes GPU ``i mod count``, so
    ``local:N`` on an N-GPU machine runs one embedding process per GPU. Other
    workers take the current CUDA device (choose it per worker with
    ``CUDA_VISIBLE_DEVICES``, as dask-cuda's workers do). ``cpu``, ``cuda`` and
    ``cuda:N`` are taken as given; a worker without CUDA then fails naming the setting.
    ``threads`` (when not 0) sets the worker's torch threads.
    """
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.device != "auto" or not torch.cuda.is_available():
        return resolve_device(settings.device)
    if isinstance(worker_name, int) or (isinstance(worker_name, str) and worker_name.isdigit()):
        return torch.device("cuda", int(worker_name) % torch.cuda.device_count())
    return torch.device("cuda")
