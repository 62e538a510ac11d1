"""GPU-aware scheduling with faked GPU inventories: a run takes the GPUs it asks for on one
host, the first free ones large enough; a run needing more than are free waits while a
smaller one behind it goes; a freed GPU is reused; two workers of one host never hold the
same GPU (two worker processes claim concurrently, on SQLite and on PostgreSQL); a run no
live worker can hold is refused when queued, naming the estimate."""

import json
import socket
import subprocess
import sys
import time
from itertools import combinations

import pytest
from django.conf import settings
from django.utils import timezone

from experiments import services
from experiments.models import Experiment, TrainingRun, Worker
from experiments.training import queue
from experiments.training.supervisor import child_env
from finetune_hub.errors import ServiceError
from tests.support.training_helpers import make_experiment

GB = 10**9


def gpus(*sizes_gb: int) -> list[dict]:
    return [
        {
            "type": "cuda",
            "index": i,
            "name": "Fake H200",
            "memory_bytes": size * GB,
            "memory_free_bytes": size * GB,
        }
        for i, size in enumerate(sizes_gb)
    ] + [{"type": "cpu", "cores": 16, "memory_bytes": 128 * GB}]


def fake_worker(name: str, devices: list[dict], host: str = "gpu-host") -> Worker:
    return Worker.objects.create(
        name=name,
        host=host,
        pid=1,
        devices=devices,
        cuda=True,
        memory_bytes=max(d["memory_bytes"] for d in devices if d["type"] == "cuda"),
        heartbeat_at=timezone.now(),
    )


def queued(team, owner, tiny_model, n_gpus: int = 1, need_gb: float | None = None, **params):
    experiment = make_experiment(team, owner, tiny_model, gpus=n_gpus, **params)
    if need_gb is not None:  # a larger model's estimate, per GPU
        estimate = experiment.estimate
        estimate["cuda"].update(total_bytes=int(need_gb * GB), total_gb=need_gb)
        Experiment.objects.filter(pk=experiment.pk).update(estimate=estimate)
    return services.run_enqueue(experiment=experiment, by=owner, dispatch=False)


@pytest.mark.django_db
def test_runs_take_free_gpus_a_large_run_waits_and_a_freed_gpu_is_reused(team, owner, tiny_model):
    worker = fake_worker("gpu-host:1", gpus(80, 80))
    one = queued(team, owner, tiny_model)
    two = queued(team, owner, tiny_model, n_gpus=2)
    three = queued(team, owner, tiny_model)
    assert queue.run_claim(worker=worker).pk == one.pk
    # Two GPUs wanted, one free: the two-GPU run waits and the next one-GPU run goes.
    claimed = queue.run_claim(worker=worker)
    assert (claimed.pk, claimed.gpus) == (three.pk, [1])
    assert queue.run_claim(worker=worker) is None
    two.refresh_from_db()
    assert (two.status, two.gpus) == ("queued", [])
    one.refresh_from_db()
    assert one.gpus == [0]
    queue.run_finish(run=one, status="succeeded")
    assert queue.run_claim(worker=worker) is None  # one GPU free, two wanted
    queue.run_finish(run=TrainingRun.objects.get(pk=three.pk), status="succeeded")
    claimed = queue.run_claim(worker=worker)
    assert (claimed.pk, claimed.gpus) == (two.pk, [0, 1])  # both freed GPUs reused


@pytest.mark.django_db
def test_a_run_takes_only_gpus_large_enough_for_its_estimate(team, owner, tiny_model):
    worker = fake_worker("gpu-host:1", gpus(16, 80, 80))
    big = queued(team, owner, tiny_model, need_gb=40)
    small = queued(team, owner, tiny_model, need_gb=10)
    bigger = queued(team, owner, tiny_model, need_gb=40, n_gpus=2)
    assert queue.run_claim(worker=worker).gpus == [1]  # not the 16 GB GPU 0
    assert (queue.run_claim(worker=worker).pk, TrainingRun.objects.get(pk=small.pk).gpus) == (
        small.pk,
        [0],
    )
    assert queue.run_claim(worker=worker) is None  # one 80 GB GPU left, two wanted
    queue.run_finish(run=TrainingRun.objects.get(pk=big.pk), status="succeeded")
    assert queue.run_claim(worker=worker).pk == bigger.pk
    assert TrainingRun.objects.get(pk=bigger.pk).gpus == [1, 2]


@pytest.mark.django_db
def test_workers_of_one_host_share_its_gpus_and_other_hosts_have_their_own(team, owner, tiny_model):
    a = fake_worker("gpu-host:1", gpus(80))
    b = fake_worker("gpu-host:2", gpus(80))
    other = fake_worker("other-host:1", gpus(80), host="other-host")
    runs = [queued(team, owner, tiny_model) for _ in range(3)]
    assert queue.run_claim(worker=a).gpus == [0]
    assert queue.run_claim(worker=b) is None  # its host's one GPU is held by a's run
    assert queue.run_claim(worker=other).gpus == [0]  # another host's GPU 0
    assert TrainingRun.objects.filter(pk=runs[2].pk, status="queued").exists()


@pytest.mark.django_db
def test_a_run_no_host_can_hold_is_refused_when_queued_naming_the_estimate(team, owner, tiny_model):
    fake_worker("gpu-host:1", gpus(80, 80))
    experiment = make_experiment(team, owner, tiny_model, gpus=4)
    with pytest.raises(ServiceError) as refused:
        services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    need = experiment.estimate["cuda"]["total_gb"]
    assert refused.value.status == 409
    assert refused.value.detail == (
        f"The run needs 4 GPUs of about {need:.1f} GB each; the largest live worker has "
        "2 GPUs that large"
    )


def test_the_estimate_is_per_gpu_and_counts_the_gpus(team, owner, tiny_model, db):
    one = make_experiment(team, owner, tiny_model).estimate["cuda"]
    four = make_experiment(team, owner, tiny_model, gpus=4).estimate["cuda"]
    # Data parallel: each GPU holds a whole replica and its own batch.
    assert four["total_bytes"] == one["total_bytes"] and four["gpus"] == 4
    assert four["all_gpus_gb"] == round(4 * one["total_bytes"] / GB, 1)


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_of_one_host_never_hold_the_same_gpu(team, owner, tiny_model):
    """Two real processes claim from the same queue at once (PostgreSQL: row locks between
    connections; SQLite: IMMEDIATE transactions): each run is claimed once, no GPU is held
    by two runs at a time, and the two-GPU run gets both."""
    devices = gpus(80, 80)
    fake_worker(f"{socket.gethostname()}:0", devices, host=socket.gethostname())
    runs = [queued(team, owner, tiny_model) for _ in range(12)]
    runs.insert(4, queued(team, owner, tiny_model, n_gpus=2))
    start_at = str(time.time() + 8)  # both processes are set up by then
    processes = [
        subprocess.Popen(
            [sys.executable, "tests/support/claimer.py", json.dumps(devices), "0.1", start_at],
            cwd=settings.BASE_DIR,
            env=child_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    held = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        held += json.loads(out.strip().splitlines()[-1])
    assert sorted(h["run"] for h in held) == sorted(r.pk for r in runs)  # each exactly once
    assert {tuple(h["gpus"]) for h in held if h["run"] == runs[4].pk} == {(0, 1)}
    for x, y in combinations(held, 2):
        if set(x["gpus"]) & set(y["gpus"]):
            assert x["end"] <= y["start"] or y["end"] <= x["start"], (x, y)
    assert all(r.status == "succeeded" for r in TrainingRun.objects.all())


@pytest.mark.django_db
def test_the_queue_page_shows_each_hosts_gpus_and_the_run_holding_each(
    browser_client, team, owner, tiny_model
):
    from finetune_hub.models import Membership, Role, Team
    from tests.support.clients import make_user

    worker = fake_worker("gpu-host:1", gpus(80, 80, 80))
    mine = queued(team, owner, tiny_model)
    queue.run_claim(worker=worker)
    elsewhere, stranger = Team.objects.create(name="Elsewhere"), make_user("stranger")
    Membership.objects.create(team=elsewhere, user=stranger, role=Role.ADMIN)
    theirs = queued(elsewhere, stranger, tiny_model)
    queue.run_claim(worker=worker)
    html = browser_client.get("/runs/").content.decode()
    table = " ".join(html.split('id="hosts"', 1)[1].split("</table>", 1)[0].split())
    assert "gpu-host" not in html and ">host 1<" in table  # host names are for site admins
    gpu = "Fake H200, 80 GB (80 GB free) · <span class="
    assert f'GPU 0: {gpu}"badge running">run <a href="/runs/{mine.pk}/">' in table
    assert f'GPU 1: {gpu}"badge running">another team\'s run' in table
    assert f"/runs/{theirs.pk}/" not in html
    assert f'GPU 2: {gpu}"badge ok">free' in table


@pytest.mark.django_db
def test_the_workers_api_says_which_gpus_are_busy_and_which_run_holds_each(
    api, outsider_api, team, owner, tiny_model
):
    worker = fake_worker("gpu-host:1", gpus(80, 40))
    run = queued(team, owner, tiny_model)
    queue.run_claim(worker=worker)
    listed = api.get("/api/workers").json()
    assert [w["host"] for w in listed] == [None]  # host names are for site admins
    assert listed[0]["gpus"] == [
        {
            "index": 0,
            "name": "Fake H200",
            "memory_bytes": 80 * GB,
            "memory_free_bytes": 80 * GB,
            "busy": True,
            "run": run.pk,
        },
        {
            "index": 1,
            "name": "Fake H200",
            "memory_bytes": 40 * GB,
            "memory_free_bytes": 40 * GB,
            "busy": False,
            "run": None,
        },
    ]
    # Another team sees the GPU busy, not whose run holds it.
    theirs = outsider_api.get("/api/workers").json()[0]["gpus"][0]
    assert (theirs["busy"], theirs["run"]) == (True, None)
