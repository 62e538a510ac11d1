"""The README's deployment, as far as one machine allows: the production web server
(gunicorn, production settings) and two `run_huey` workers, as two GPU hosts' workers would
run, against one database and one queue (PostgreSQL + Redis in that pass, SQLite +
SqliteHuey in the other). Runs queued over HTTP are trained by both workers at once, and the
workers API lists both."""

import json
import urllib.request

import pytest

from experiments.models import TrainingRun, Worker
from finetune_hub.auth import token_create
from tests.security.test_production_server import gunicorn_server  # noqa: F401 (fixture)
from tests.support.training_helpers import make_experiment, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def call(url: str, token: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return r.status, json.loads(r.read())


def test_a_web_server_and_two_workers_share_the_database_and_the_queue(
    gunicorn_server,  # noqa: F811
    consumers,  # noqa: F811
    team,
    owner,
    tiny_model,
):
    first, second = consumers(workers=1), consumers(workers=1)
    # Both workers have reported themselves before any run is queued.
    wait_for(lambda: Worker.objects.filter(pid__in=[first.pid, second.pid]).count() == 2, 90)
    _, token = token_create(user=owner, name="deploy")
    experiments = [make_experiment(team, owner, tiny_model, max_steps=12) for _ in range(2)]
    queued = [
        call(f"{gunicorn_server}/api/experiments/{e.pk}/runs", token, "POST", {})
        for e in experiments
    ]
    assert [status for status, _ in queued] == [201, 201]
    ids = [run["id"] for _, run in queued]
    done = wait_for(
        lambda: TrainingRun.objects.filter(pk__in=ids, status="succeeded").count() == 2, 240
    )
    assert done
    runs = TrainingRun.objects.filter(pk__in=ids)
    assert {r.worker.pid for r in runs} == {first.pid, second.pid}  # one run each, at once
    status, listed = call(f"{gunicorn_server}/api/workers", token)
    assert status == 200 and len(listed) == 2 and all(w["host"] is None for w in listed)
