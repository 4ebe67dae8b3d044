"""Resume inside an epoch: an epoch interrupted after a partial save and
restarted from it ends bit-identical (on the CPU) to an uninterrupted one, at
the pipeline level and through the partial-checkpoint files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.network import build_model
from pipeline.training.loop import EpochProgress, PartialSaves, train_one_epoch
from pipeline.training.optimization import make_optimizer
from pipeline.training.partial import fingerprint, load_partial, partial_path, remove_partial, save_partial
from pipeline.training.settings import TrainSettings
from tests.test_training import CPU, SMALL, uniform_triplets

SETTINGS = TrainSettings(batch_size=16, lr=0.05, weight_decay=1e-4)


class Killed(Exception):
    """Stands for a SIGKILL at a given step."""


def fresh(seed: int = 0):
    torch.manual_seed(seed)
    net = build_model(SMALL)
    return net, make_optimizer(net, SETTINGS)


def run(net, optimizer, triplets, store, **kwargs):
    return train_one_epoch(net, optimizer, triplets, store, SETTINGS, epoch=3, seed=5, device=CPU, show_bar=False,
                           **kwargs)


@pytest.mark.parametrize("kill_after", [1, 7, 18])
def test_resumed_epoch_is_bit_identical(fashion, tmp_path, kill_after):
    store, train = fashion
    triplets = uniform_triplets(train, epoch=3)  # 300 triplets: 19 steps of 16
    net, opt = fresh()
    reference = run(net, opt, triplets, store)

    digest = fingerprint(triplets, {"case": "test"})
    path = partial_path(tmp_path / "train" / "epoch-003")
    net2, opt2 = fresh()

    def kill(step: int, total: int, loss: float) -> None:
        if step == kill_after + 1:  # one step past the last save: that step's work is lost
            raise Killed

    saves = PartialSaves(save=lambda p: save_partial(path, net2, opt2, p, digest), every_steps=1)
    with pytest.raises(Killed):
        run(net2, opt2, triplets, store, saves=saves, progress=kill)
    assert path.name == ".partial-epoch-003.pt" and path.is_file()

    state, progress = load_partial(path, digest)
    assert progress.step == kill_after and len(progress.rows) == kill_after
    net3, opt3 = fresh(seed=99)  # whatever the fresh init, the saved state replaces it
    net3.load_state_dict(state["model"])
    opt3.load_state_dict(state["optimizer"])
    heard: list[tuple[int, int]] = []
    resumed = run(net3, opt3, triplets, store, resume=progress,
                  progress=lambda done, total, row: heard.append((done, row["step"])))
    # A listener (the TensorBoard curve) hears of every step once: the saved ones replayed first.
    assert heard == [(i + 1, i) for i in range(len(reference))]

    for key, value in net.state_dict().items():
        assert torch.equal(net3.state_dict()[key], value), key
    assert resumed["loss"].tolist() == reference["loss"].tolist()
    assert resumed["step"].tolist() == list(range(len(reference)))
    remove_partial(path)
    assert not path.exists()


def test_partial_saves_follow_the_step_rule_and_skip_the_last_step(fashion):
    store, train = fashion
    triplets = uniform_triplets(train, epoch=3)  # 19 steps
    net, opt = fresh()
    saved: list[int] = []
    run(net, opt, triplets, store, saves=PartialSaves(save=lambda p: saved.append(p.step), every_steps=5))
    assert saved == [5, 10, 15]  # never after the final step: the epoch completes instead


def test_a_partial_of_another_list_or_settings_is_not_used(fashion, tmp_path, caplog):
    store, train = fashion
    triplets = uniform_triplets(train, epoch=3)
    net, opt = fresh()
    path = tmp_path / ".partial-epoch-003.pt"
    row = (3, 0, 1.0, 1.0, 0.05, 0.1, 1.0, False, 48, 16, 0.7)
    save_partial(path, net, opt, EpochProgress(step=4, rows=(row,) * 4), fingerprint(triplets, {"lr": 0.05}))
    assert load_partial(path, fingerprint(triplets, {"lr": 0.05})) is not None
    assert load_partial(path, fingerprint(triplets, {"lr": 0.01})) is None
    other = np.ascontiguousarray(triplets[::-1])
    assert load_partial(path, fingerprint(other, {"lr": 0.05})) is None
    assert "another triplet list or other settings" in caplog.text
    # An older version's step log (without loss_all) cannot be continued: the epoch starts over.
    save_partial(path, net, opt, EpochProgress(step=4, rows=(row[:-1],) * 4), fingerprint(triplets, {"lr": 0.05}))
    assert load_partial(path, fingerprint(triplets, {"lr": 0.05})) is None
    assert "other columns" in caplog.text
    path.write_bytes(b"PK\x03\x04 cut short")
    assert load_partial(path, fingerprint(triplets, {"lr": 0.05})) is None
    assert "damaged" in caplog.text


def test_a_diverged_model_is_never_saved_as_complete(fashion):
    """Non-finite weights after the last step (here planted) fail the epoch instead of being saved."""
    from pipeline.errors import TrainingError

    store, train = fashion
    triplets = uniform_triplets(train, epoch=3)[:16]  # one step
    net, opt = fresh()

    def poison(step: int, total: int, loss: float) -> None:
        with torch.no_grad():
            net.head.weight[0, 0] = float("nan")

    with pytest.raises(TrainingError, match="non-finite"):
        run(net, opt, triplets, store, progress=poison)


def test_old_checkpoints_are_refused_then_upgraded_by_the_command(tmp_path):
    """A checkpoint with a pickled numpy RNG state (as earlier versions wrote) is refused, and
    `python -m pipeline.checkpoint upgrade` makes it loadable with weights_only=True."""
    import subprocess
    import sys

    from pipeline.checkpoint import load_checkpoint
    from pipeline.errors import PipelineError

    net, opt = fresh()
    path = tmp_path / "train" / "epoch-001" / "_checkpoint.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": net.state_dict(), "epoch": 1, "rng": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(PipelineError, match="python -m pipeline.checkpoint upgrade"):
        load_checkpoint(path)
    done = subprocess.run([sys.executable, "-m", "pipeline.checkpoint", "upgrade", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "dropped rng" in done.stdout
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and "rng" not in state
    assert load_checkpoint(path)["model"].keys() == net.state_dict().keys()
