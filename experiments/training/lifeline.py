"""The training process's tie to the worker that supervises it: the worker names itself in
the environment (its pid and start time), and the training process checks that it still
runs (child.py stops the whole process, reporting.py stops between steps). Standard library
and psutil only: the child checks before Django is set up."""

import os

# The supervising worker process, set by it in the environment: under torchrun a rank's
# parent is torchrun's agent, which outlives a killed worker.
SUPERVISOR_PID = "FINETUNE_HUB_SUPERVISOR_PID"
SUPERVISOR_STARTED = "FINETUNE_HUB_SUPERVISOR_STARTED"


def supervisor_alive_check():
    """A function that says whether this process's supervisor still runs: the worker named
    in the environment (the same process: its start time too, so a reused PID is not it),
    else the parent this process started with."""
    pid, started = os.environ.get(SUPERVISOR_PID), os.environ.get(SUPERVISOR_STARTED)
    if not (pid and started):
        parent = os.getppid()
        return lambda: os.getppid() == parent
    import psutil

    def alive() -> bool:
        try:
            return repr(psutil.Process(int(pid)).create_time()) == started
        except psutil.Error:
            return False

    return alive
