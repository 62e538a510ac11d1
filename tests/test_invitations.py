"""Membership with consent (issue 29): a team admin adding a username only invites it; the
user joins on accepting, may decline, and may leave (not as the last admin). A user in
several teams chooses the team plain /mlflow answers for, so joining a team never breaks a
running script's tracking URI."""

import pytest
from django.contrib.auth import get_user_model

from experiments.models import Experiment
from finetune_hub.models import ApiToken, Invitation, Membership, Role, Team
from tests.support.clients import ApiClient, make_user


@pytest.fixture
def newcomer(db):
    """A user of another team, whose script logs to plain /mlflow."""
    user = make_user("newcomer")
    Membership.objects.create(team=Team.objects.create(name="Home"), user=user, role=Role.ADMIN)
    return user


def invite(api, team, username, role="member"):
    return api.post(f"/api/teams/{team.pk}/members", {"username": username, "role": role})


def test_adding_a_user_invites_them_without_a_membership(api, team, newcomer):
    r = invite(api, team, "newcomer", "reviewer")
    assert r.status_code == 201 and r.json()["state"] == "invited"
    assert not Membership.objects.filter(team=team, user=newcomer).exists()
    assert [t["name"] for t in ApiClient(newcomer).get("/api/teams").json()] == ["Home"]
    mine = ApiClient(newcomer).get("/api/invitations").json()
    assert [(i["team_name"], i["role"], i["invited_by"]) for i in mine] == [
        ("Acme", "reviewer", "owner")
    ]


def test_the_answer_is_the_same_for_an_unknown_username(api, team, newcomer):
    known = invite(api, team, "newcomer").json()
    unknown = invite(api, team, "nobody").json()
    assert known["state"] == unknown["state"] == "invited"
    assert known["detail"].replace("newcomer", "X") == unknown["detail"].replace("nobody", "X")
    assert not Invitation.objects.filter(user__username="nobody").exists()


def test_accepting_joins_with_the_invited_role(api, team, newcomer):
    invite(api, team, "newcomer", "approver")
    client = ApiClient(newcomer)
    invitation = client.get("/api/invitations").json()[0]
    r = client.post(f"/api/invitations/{invitation['id']}/accept")
    assert r.status_code == 200 and r.json()["name"] == "Acme" and r.json()["role"] == "approver"
    assert Membership.objects.get(team=team, user=newcomer).role == Role.APPROVER
    assert client.get("/api/invitations").json() == []
    assert client.post(f"/api/invitations/{invitation['id']}/accept").status_code == 404


def test_declining_leaves_no_membership(api, team, newcomer):
    invite(api, team, "newcomer")
    client = ApiClient(newcomer)
    invitation = client.get("/api/invitations").json()[0]
    assert client.post(f"/api/invitations/{invitation['id']}/decline").status_code == 204
    assert not Membership.objects.filter(team=team, user=newcomer).exists()
    assert not Invitation.objects.exists()


def test_only_the_invitee_sees_and_answers_an_invitation(api, team, newcomer, outsider, member):
    invite(api, team, "newcomer")
    invitation = Invitation.objects.get()
    for other in (outsider, member, api.user):
        client = ApiClient(other)
        assert client.get("/api/invitations").json() == []
        assert client.post(f"/api/invitations/{invitation.pk}/accept").status_code == 404
        assert client.post(f"/api/invitations/{invitation.pk}/decline").status_code == 404
    assert Invitation.objects.filter(pk=invitation.pk).exists()
    assert not Membership.objects.filter(team=team, user__in=[outsider, newcomer]).exists()


def test_team_admins_list_and_withdraw_invitations(api, team, newcomer, member, outsider):
    invite(api, team, "newcomer")
    listed = api.get(f"/api/teams/{team.pk}/invitations").json()
    assert [(i["username"], i["role"]) for i in listed] == [("newcomer", "member")]
    assert ApiClient(member).get(f"/api/teams/{team.pk}/invitations").status_code == 403
    assert ApiClient(outsider).get(f"/api/teams/{team.pk}/invitations").status_code == 404
    url = f"/api/teams/{team.pk}/invitations/{listed[0]['id']}"
    assert ApiClient(member).delete(url).status_code == 403
    assert ApiClient(outsider).delete(url).status_code == 404
    assert api.delete(url).status_code == 204
    assert ApiClient(newcomer).get("/api/invitations").json() == []
    assert api.delete(url).status_code == 404


def test_a_members_role_changes_at_once(api, team, member):
    r = invite(api, team, "member", "approver")
    assert r.json()["state"] == "member"
    assert Membership.objects.get(team=team, user=member).role == Role.APPROVER


def test_a_site_admin_adds_a_member_directly(team, newcomer):
    boss = get_user_model().objects.create_superuser("boss", password="boss-pass-123")
    Membership.objects.create(team=team, user=boss, role=Role.ADMIN)
    r = invite(ApiClient(boss), team, "newcomer")
    assert r.status_code == 201 and r.json()["state"] == "member"
    assert Membership.objects.filter(team=team, user=newcomer).exists()
    r = invite(ApiClient(boss), team, "nobody")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "username"


def test_a_member_leaves_and_the_last_admin_cannot(api, team, member, outsider):
    assert ApiClient(outsider).post(f"/api/teams/{team.pk}/leave").status_code == 404
    r = ApiClient(member).post(f"/api/teams/{team.pk}/leave")
    assert r.status_code == 204
    assert ApiClient(member).get(f"/api/teams/{team.pk}/members").status_code == 404
    r = api.post(f"/api/teams/{team.pk}/leave")
    assert r.status_code == 409 and "last admin" in r.json()["detail"]
    assert r.json()["code"] == "conflict"


def test_an_admin_leaves_when_another_admin_stays(api, team, member):
    invite(api, team, "member", "admin")
    assert api.post(f"/api/teams/{team.pk}/leave").status_code == 204
    assert list(team.memberships.values_list("user__username", "role")) == [("member", "admin")]


def mlflow_create(token: str, name: str, prefix: str = "/mlflow"):
    from django.test import Client

    return Client().post(
        f"{prefix}/api/2.0/mlflow/experiments/create",
        {"name": name},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def team_of_experiment(name: str) -> str:
    return Experiment.objects.get(name=name).team.name


def test_joining_a_team_never_breaks_a_tracking_uri(api, team, newcomer):
    script = ApiClient(newcomer)
    assert mlflow_create(script.token, "before").status_code == 200
    invite(api, team, "newcomer")
    script.post(f"/api/invitations/{Invitation.objects.get().pk}/accept")
    r = mlflow_create(script.token, "after")
    assert r.status_code == 400 and "several teams" in r.json()["message"]
    home = newcomer.memberships.get(team__name="Home").team
    r = script.put(f"/api/teams/{home.pk}/default")
    assert r.status_code == 200 and r.json()["default"] is True
    assert mlflow_create(script.token, "after").status_code == 200
    assert team_of_experiment("after") == "Home"
    assert mlflow_create(script.token, "named", f"/mlflow/teams/{team.pk}").status_code == 200
    assert team_of_experiment("named") == "Acme"
    teams = {t["name"]: t["default"] for t in script.get("/api/teams").json()}
    assert teams == {"Acme": False, "Home": True}


def test_a_token_bound_to_a_team_logs_there(api, team, newcomer, outsider):
    invite(api, team, "newcomer")
    ApiClient(newcomer).post(f"/api/invitations/{Invitation.objects.get().pk}/accept")
    client = ApiClient(newcomer)
    home = newcomer.memberships.get(team__name="Home").team
    client.put(f"/api/teams/{home.pk}/default")
    r = client.post("/api/tokens", {"name": "acme script", "team": team.pk})
    assert r.status_code == 201 and r.json()["team"] == team.pk
    assert mlflow_create(r.json()["token"], "bound").status_code == 200
    assert team_of_experiment("bound") == "Acme"
    # Leaving the team takes the binding away: the default team answers again.
    assert client.post(f"/api/teams/{team.pk}/leave").status_code == 204
    assert ApiToken.objects.get(name="acme script").team is None
    assert mlflow_create(r.json()["token"], "unbound").status_code == 200
    assert team_of_experiment("unbound") == "Home"


def test_a_token_cannot_be_bound_to_another_team(api, outsider):
    other = outsider.memberships.get().team
    r = api.post("/api/tokens", {"name": "x", "team": other.pk})
    assert r.status_code == 404 and not ApiToken.objects.filter(name="x").exists()


def test_one_default_team_a_user(api, team, owner, outsider):
    second = api.post("/api/teams", {"name": "Second"}).json()["id"]
    api.put(f"/api/teams/{team.pk}/default")
    api.put(f"/api/teams/{second}/default")
    assert list(owner.memberships.filter(is_default=True).values_list("team_id")) == [(second,)]
    assert api.put(f"/api/teams/{outsider.memberships.get().team_id}/default").status_code == 404
