"""The dashboard side of invitations (issue 29): the team page invites, lists and withdraws
(admins), leaves, and sets the default team; the Invitations page accepts and declines one's
own; the API tokens page sets the default team and binds a token to a team. Each action on
another user's invitation or another team's page is a 404."""

import pytest
from django.test import Client

from finetune_hub.models import ApiToken, Invitation, Membership, Role, Team
from tests.support.clients import make_user


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def newcomer(db):
    user = make_user("newcomer")
    Membership.objects.create(team=Team.objects.create(name="Home"), user=user, role=Role.ADMIN)
    return user


@pytest.fixture
def invitation(team, owner, newcomer):
    return Invitation.objects.create(team=team, user=newcomer, role=Role.REVIEWER, invited_by=owner)


def text(response) -> str:
    return response.content.decode()


def test_the_team_page_invites_and_lists_pending_invitations(browser_client, team, newcomer):
    r = browser_client.post(
        f"/teams/{team.pk}/", {"username": "newcomer", "role": "member"}, follow=True
    )
    assert "is invited with the role member" in text(r)
    assert not Membership.objects.filter(team=team, user=newcomer).exists()
    page = text(browser_client.get(f"/teams/{team.pk}/"))
    assert "Pending invitations" in page and "newcomer" in page


def test_members_do_not_see_the_pending_invitations(team, member, invitation):
    page = text(signed_in(member).get(f"/teams/{team.pk}/"))
    assert "Pending invitations" not in page and "newcomer" not in page


def test_the_invitee_accepts_on_the_invitations_page(team, newcomer, invitation):
    client = signed_in(newcomer)
    page = text(client.get("/invitations/"))
    assert "Acme" in page and "reviewer" in page
    r = client.post(f"/invitations/{invitation.pk}/accept/", follow=True)
    assert "you are now a member" in text(r)
    assert Membership.objects.get(team=team, user=newcomer).role == Role.REVIEWER
    assert client.get(f"/teams/{team.pk}/").status_code == 200


def test_the_invitee_declines(team, newcomer, invitation):
    r = signed_in(newcomer).post(f"/invitations/{invitation.pk}/decline/", follow=True)
    assert "Invitation declined" in text(r)
    assert not Invitation.objects.exists() and not team.memberships.filter(user=newcomer).exists()


def test_someone_elses_invitation_is_404(team, owner, outsider, invitation):
    for user in (owner, outsider):
        client = signed_in(user)
        assert "Acme" not in text(client.get("/invitations/")).split("<h1>")[1]
        assert client.post(f"/invitations/{invitation.pk}/accept/").status_code == 404
        assert client.post(f"/invitations/{invitation.pk}/decline/").status_code == 404
    assert Invitation.objects.filter(pk=invitation.pk).exists()


def test_withdrawing_an_invitation(browser_client, team, member, outsider, invitation):
    url = f"/teams/{team.pk}/invitations/{invitation.pk}/withdraw/"
    assert signed_in(outsider).post(url).status_code == 404
    r = signed_in(member).post(url, follow=True)
    assert "needs the admin role" in text(r) and Invitation.objects.exists()
    r = browser_client.post(url, follow=True)
    assert "Invitation withdrawn" in text(r) and not Invitation.objects.exists()


def test_leaving_a_team_and_the_last_admin_staying(browser_client, team, member, outsider):
    assert signed_in(outsider).post(f"/teams/{team.pk}/leave/").status_code == 404
    r = signed_in(member).post(f"/teams/{team.pk}/leave/", follow=True)
    assert "You left Acme" in text(r)
    assert not team.memberships.filter(user=member).exists()
    r = browser_client.post(f"/teams/{team.pk}/leave/", follow=True)
    assert "last admin" in text(r) and r.redirect_chain[-1][0] == f"/teams/{team.pk}/"


def test_the_default_team_from_the_team_page(browser_client, team, owner, outsider):
    second = Team.objects.create(name="Second")
    Membership.objects.create(team=second, user=owner, role=Role.MEMBER)
    assert "Make this my default team" in text(browser_client.get(f"/teams/{second.pk}/"))
    r = browser_client.post(f"/teams/{second.pk}/default/", follow=True)
    assert "your default team for /mlflow" in text(r)
    assert owner.memberships.get(is_default=True).team == second
    other = outsider.memberships.get().team
    assert browser_client.post(f"/teams/{other.pk}/default/").status_code == 404


def test_the_tokens_page_binds_a_token_and_sets_the_default(browser_client, team, owner, outsider):
    second = Team.objects.create(name="Second")
    Membership.objects.create(team=second, user=owner, role=Role.MEMBER)
    r = browser_client.post("/tokens/", {"name": "script", "team": second.pk})
    assert r.status_code == 200 and ApiToken.objects.get(name="script").team == second
    page = text(browser_client.get("/tokens/"))
    assert "Default team for /mlflow" in page and "None chosen" in page
    browser_client.post("/tokens/", {"default_team": team.pk})
    assert owner.memberships.get(is_default=True).team == team
    other = outsider.memberships.get().team
    r = browser_client.post("/tokens/", {"name": "sneaky", "team": other.pk}, follow=True)
    assert "Choose one of your teams" in text(r)
    assert not ApiToken.objects.filter(name="sneaky").exists()
    browser_client.post("/tokens/", {"default_team": other.pk})
    assert owner.memberships.get(is_default=True).team == team
