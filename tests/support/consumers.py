"""Huey consumer processes (`manage.py run_huey`) against the test database, started by a test
and killed after it with the training processes they left: the `consumers` fixture, offered by
conftest."""

import os
import signal
import subprocess
import sys

import pytest
from django.conf import settings
from huey.contrib.djhuey import HUEY

from experiments.models import TrainingRun
from experiments.training.supervisor import child_env


@pytest.fixture
def consumers():
    """Starts `manage.py run_huey` processes against the test database; kills them after."""
    started = []

    def start(workers: int = 2, **environment):
        env = dict(child_env(), STALE_AFTER_S="3", HUEY_WORKERS=str(workers), **environment)
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_huey", "--worker-type", "thread"],
            cwd=settings.BASE_DIR,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        return process

    HUEY.flush()  # tasks other tests left behind are not this test's
    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for run in TrainingRun.objects.exclude(pid=None):
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    HUEY.flush()
