"""A worker process for the scheduling tests: it reports a faked GPU inventory for this host
(two workers of one host share its GPUs) and claims runs until none is left, holding each a
moment before finishing it, then prints what it held and when, as JSON.

    python tests/support/claimer.py '<devices JSON>' <hold seconds> <start at, epoch seconds>

The processes start claiming at the same moment, so their claims race.
"""

import json
import os
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_hub.settings")
sys.path.insert(0, os.getcwd())
django.setup()

from experiments import workers  # noqa: E402
from experiments.models import TrainingRun  # noqa: E402
from experiments.training import queue  # noqa: E402

devices, hold, start_at = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
worker = workers.worker_heartbeat(devices)
time.sleep(max(0.0, start_at - time.time()))
held = []
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    run = queue.run_claim(worker=worker)
    if run is None:
        if not TrainingRun.objects.filter(status__in=["queued", "running"]).exists():
            break
        time.sleep(0.02)
        continue
    start = time.time()
    time.sleep(hold)
    # The end is taken before the GPUs are released: intervals err on the long side.
    held.append({"run": run.pk, "gpus": run.gpus, "start": start, "end": time.time()})
    queue.run_finish(run=run, status=TrainingRun.Status.SUCCEEDED)
print(json.dumps(held))
