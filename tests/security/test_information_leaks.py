"""Information disclosure to users of other tenants and to ordinary members: whether a team
name or a username exists, the hosts and PIDs of the workers, and server text interpreted as
HTML in the browser (a message echoing a request turned into markup)."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from experiments import services, workers
from experiments.models import TrainingRun, Worker
from finetune_hub.models import Invitation, Membership, Team
from tests.support.clients import ApiClient, make_user
from tests.support.training_helpers import make_experiment

HOST = "gpu-node-secret-17"


# --- team names ---------------------------------------------------------------------------


def test_another_tenants_team_name_is_not_revealed(outsider_api, team):
    r = outsider_api.post("/api/teams", {"name": "Acme"})  # the name of someone else's team
    assert r.status_code == 201, r.content
    mine = Team.objects.get(pk=r.json()["id"])
    assert mine != team and list(mine.members.all()) == [outsider_api.user]
    assert [t["name"] for t in outsider_api.get("/api/teams").json()] == ["Acme", "Other"]


def test_my_own_team_names_stay_distinct(api):
    r = api.post("/api/teams", {"name": " acme "})
    assert r.status_code == 409 and "already in a team named" in r.json()["detail"]


def test_team_form_creates_a_team_whose_name_another_tenant_uses(browser_client, outsider):
    browser_client.force_login(outsider)
    r = browser_client.post("/teams/new/", {"name": "Acme"})
    assert r.status_code == 302 and Team.objects.filter(name="Acme").count() == 2


# --- usernames ----------------------------------------------------------------------------


def test_adding_a_member_answers_the_same_whether_the_user_exists(api, team, outsider):
    real = api.post(f"/api/teams/{team.pk}/members", {"username": "outsider", "role": "viewer"})
    ghost = api.post(f"/api/teams/{team.pk}/members", {"username": "ghost", "role": "viewer"})
    assert real.status_code == ghost.status_code == 201
    assert set(real.json()) == set(ghost.json()) and real.json()["role"] == ghost.json()["role"]
    assert real.json()["detail"].replace("outsider", "ghost") == ghost.json()["detail"]
    # Invited, not added (issue 29): the user joins only by accepting.
    assert Invitation.objects.filter(team=team, user=outsider).exists()
    assert not Membership.objects.filter(team=team, user=outsider).exists()
    assert not Membership.objects.filter(team=team, user__username="ghost").exists()


def test_inactive_users_are_not_revealed_either(api, team):
    sleeper = make_user("sleeper")
    sleeper.is_active = False
    sleeper.save()
    r = api.post(f"/api/teams/{team.pk}/members", {"username": "sleeper", "role": "viewer"})
    assert r.status_code == 201 and "If an active account" in r.json()["detail"]
    assert not Membership.objects.filter(team=team, user__username="sleeper").exists()


def test_team_page_answers_the_same_whether_the_user_exists(browser_client, team, outsider):
    pages = [
        browser_client.post(
            f"/teams/{team.pk}/", {"username": name, "role": "viewer"}, follow=True
        ).content.decode()
        for name in ("outsider", "ghost")
    ]
    notices = [re.search(r"If an active account named [^<]*", p).group(0) for p in pages]
    assert notices[0].replace("outsider", "ghost") == notices[1]


def test_member_form_is_for_team_admins_only(outsider_api, team, member):
    r = outsider_api.post(f"/api/teams/{team.pk}/members", {"username": "ghost", "role": "admin"})
    assert r.status_code == 404
    r = ApiClient(member).post(f"/api/teams/{team.pk}/members", {"username": "x", "role": "admin"})
    assert r.status_code == 403


# --- workers ------------------------------------------------------------------------------


@pytest.fixture
def worker(db):
    return Worker.objects.create(
        name=f"{HOST}:4242",
        host=HOST,
        pid=4242,
        devices=[{"type": "cpu", "cores": 64, "memory_bytes": 256 * 10**9}],
        cuda=False,
        memory_bytes=256 * 10**9,
        heartbeat_at=timezone.now(),
    )


@pytest.fixture
def running(team, owner, tiny_model, worker):
    run = services.run_enqueue(
        experiment=make_experiment(team, owner, tiny_model), by=owner, dispatch=False
    )
    TrainingRun.objects.filter(pk=run.pk).update(status="running", worker=worker, pid=777)
    return run


@pytest.fixture
def site_admin(db):
    user = make_user("root")
    user.is_superuser = user.is_staff = True
    user.save()
    return user


def test_workers_api_hides_hosts_and_pids_from_users(api, worker):
    [shown] = api.get("/api/workers").json()
    assert shown["host"] is None and shown["pid"] is None and shown["name"] is None
    assert shown["devices"] == worker.devices  # what a run can get is still shown
    assert HOST not in api.get("/api/workers").content.decode()


def test_run_api_hides_the_worker_from_users(api, outsider_api, running):
    for path in [
        f"/api/runs/{running.pk}",
        "/api/runs/queue",
        f"/api/runs/compare?ids={running.pk}",
        f"/api/experiments/{running.experiment_id}",
    ]:
        r = api.get(path)
        assert r.status_code == 200 and HOST not in r.content.decode(), path
    assert api.get(f"/api/runs/{running.pk}").json()["worker"] is None
    assert outsider_api.get(f"/api/runs/{running.pk}").status_code == 404


def test_site_admins_see_workers(running, site_admin):
    admin_api = ApiClient(site_admin)
    assert admin_api.get("/api/workers").json()[0]["host"] == HOST
    Membership.objects.create(team=running.experiment.team, user=site_admin, role="viewer")
    assert admin_api.get(f"/api/runs/{running.pk}").json()["worker"] == f"{HOST}:4242"
    client = Client()
    client.force_login(site_admin)
    assert HOST in client.get("/runs/").content.decode()
    assert HOST in client.get(f"/runs/{running.pk}/").content.decode()


def test_pages_hide_the_worker_from_users(browser_client, running):
    for path in ["/runs/", f"/runs/{running.pk}/", f"/experiments/{running.experiment_id}/"]:
        r = browser_client.get(path)
        assert r.status_code == 200 and HOST not in r.content.decode(), path


def test_capacity_messages_do_not_name_the_worker(team, owner, tiny_model, worker):
    Worker.objects.filter(pk=worker.pk).update(memory_bytes=1000, devices=[])
    worker.refresh_from_db()
    experiment = make_experiment(team, owner, tiny_model)
    reason = workers.fits(worker, experiment.estimate)
    assert reason and HOST not in reason
    from finetune_hub.errors import ServiceError

    with pytest.raises(ServiceError) as refused:
        services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    assert refused.value.status == 409 and HOST not in refused.value.detail


def test_dead_workers_are_not_listed(api, worker):
    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert api.get("/api/workers").json() == []


# --- server text in the browser -----------------------------------------------------------

HTML_SINKS = re.compile(r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write")


def test_no_script_puts_text_into_html():
    roots = [Path(settings.BASE_DIR) / "templates", Path(settings.BASE_DIR) / "finetune_hub"]
    # Our own scripts and templates; vendored libraries (static/vendor: plotly.js draws its
    # SVG with them) are third-party code, checked by their authors, and never given our text
    # but through their APIs.
    files = [
        p
        for root in roots
        for p in root.rglob("*")
        if p.suffix in (".js", ".html") and "vendor" not in p.parts
    ]
    assert any(p.name == "experiment_form.js" for p in files)
    offenders = [str(p) for p in files if HTML_SINKS.search(p.read_text())]
    assert offenders == []


def test_estimate_errors_echo_input_only_as_json(api):
    # The form script shows this detail with textContent; the API itself answers JSON.
    r = api.post(
        "/api/experiments/estimate",
        {"base_model": "<img src=x onerror=alert(1)>", "technique": "lora"},
    )
    assert r.status_code >= 400 and r["Content-Type"].startswith("application/json")
