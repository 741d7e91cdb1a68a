"""The command line with a fault injected at a chosen point of an iteration, in a child process
(tests/test_faults.py):

    python -m tests.fault_child POINT ITERATION [run.py arguments ...]

POINT is ``kill-before-checkpoint`` or ``kill-after-checkpoint`` (SIGKILL just before or just
after the checkpoint of ITERATION is put in place), or a signal name, ``SIGINT`` or ``SIGTERM``
(sent to this process during the update of ITERATION)."""

import os
import signal
import sys

from tests import faulty_envs  # noqa: F401  (registers the faulty envs)
import importlib

from trpo_np import cli

train = importlib.import_module("trpo_np.train")  # the module (trpo_np.train is the API's function)


def inject(point: str, iteration: int) -> None:
    if point.startswith("kill-"):
        save = train.save_checkpoint

        def save_then_kill(path, arrays, meta):
            if meta["iteration"] == iteration and point == "kill-before-checkpoint":
                os.kill(os.getpid(), signal.SIGKILL)
            save(path, arrays, meta)
            if meta["iteration"] == iteration and point == "kill-after-checkpoint":
                os.kill(os.getpid(), signal.SIGKILL)
        train.save_checkpoint = save_then_kill
    else:
        update = train.Trainer.update

        def signal_in_update(self, batch):
            if self.iteration + 1 == iteration:
                os.kill(os.getpid(), getattr(signal, point))
            return update(self, batch)
        train.Trainer.update = signal_in_update


if __name__ == "__main__":
    inject(sys.argv[1], int(sys.argv[2]))
    sys.exit(cli.main(sys.argv[3:]))
