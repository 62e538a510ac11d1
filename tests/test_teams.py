from finetune_hub.models import Membership, Role
from tests.support.clients import ApiClient


def test_creator_becomes_admin(api, owner):
    r = api.post("/api/teams", {"name": "Research"})
    assert r.status_code == 201 and r.json()["role"] == "admin"
    assert Membership.objects.get(team_id=r.json()["id"], user=owner).role == Role.ADMIN


def test_team_names_are_unique_among_my_teams_and_required(api):
    assert api.post("/api/teams", {"name": "Acme"}).status_code == 409
    r = api.post("/api/teams", {"name": "  "})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "name"


def test_list_shows_only_my_teams(api, outsider):
    assert [t["name"] for t in api.get("/api/teams").json()] == ["Acme"]


def test_admin_adds_members(api, team, member):
    r = api.post(f"/api/teams/{team.pk}/members", {"username": "member", "role": "reviewer"})
    assert r.status_code == 201
    assert Membership.objects.get(team=team, user=member).role == Role.REVIEWER
    names = [m["username"] for m in api.get(f"/api/teams/{team.pk}/members").json()]
    assert names == ["member", "owner"]


def test_member_cannot_add_members(team, member, reviewer):
    r = ApiClient(member).post(
        f"/api/teams/{team.pk}/members", {"username": "reviewer", "role": "admin"}
    )
    assert r.status_code == 403
    assert Membership.objects.get(team=team, user=reviewer).role == Role.REVIEWER


def test_bad_member_input(api, team):
    # An unknown username gets the answer a known one gets (tests/security/test_information_leaks)
    r = api.post(f"/api/teams/{team.pk}/members", {"username": "ghost", "role": "member"})
    assert r.status_code == 201 and not team.memberships.filter(user__username="ghost").exists()
    r = api.post(f"/api/teams/{team.pk}/members", {"username": " ", "role": "member"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "username"
    r = api.post(f"/api/teams/{team.pk}/members", {"username": "owner", "role": "king"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "role"


def test_last_admin_cannot_demote_themselves(api, team):
    r = api.post(f"/api/teams/{team.pk}/members", {"username": "owner", "role": "member"})
    assert r.status_code == 409


def test_it_validates_ownership(outsider_api, team):
    assert outsider_api.get(f"/api/teams/{team.pk}/members").status_code == 404
    r = outsider_api.post(
        f"/api/teams/{team.pk}/members", {"username": "outsider", "role": "admin"}
    )
    assert r.status_code == 404
    assert not Membership.objects.filter(team=team, user=outsider_api.user).exists()


def test_team_page_for_member_and_outsider(browser_client, team, outsider):
    assert browser_client.get(f"/teams/{team.pk}/").status_code == 200
    browser_client.force_login(outsider)
    assert browser_client.get(f"/teams/{team.pk}/").status_code == 404
