"""Fault injection for tests, from outside the pipeline: with this folder on PYTHONPATH and
``KILL_RANK_AT=RANK:STEP`` in the environment, that global rank SIGKILLs itself right after
that many training steps. Every process of the command (the Luigi process and each spawned
rank) runs this at start-up, so the patch reaches the ranks too."""

import os

if os.environ.get("KILL_RANK_AT"):
    import signal

    from pipeline.distributed.rank import RankContext

    _rank, _step = os.environ["KILL_RANK_AT"].split(":")
    _on_step = RankContext.on_step

    def _on_step_then_die(self, step, total, loss):
        _on_step(self, step, total, loss)
        if (self.rank, step) == (int(_rank), int(_step)):
            os.kill(os.getpid(), signal.SIGKILL)

    RankContext.on_step = _on_step_then_die
