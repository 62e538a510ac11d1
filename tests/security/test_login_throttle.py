"""Password guessing: twenty wrong passwords for one account, then the right one, used to log
in, on the site's login form and on the admin's. Failed logins are now counted per username
and per address (django-axes, finetune_hub/throttle.py): past the limit both forms refuse,
the right password included, with the same answer whether or not the account exists."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client, RequestFactory

from finetune_hub.throttle import client_address
from tests.support.clients import make_user

SITE, ADMIN = "/accounts/login/", "/admin/login/"
PASSWORD = "owner-pass-123"  # tests.support.clients.make_user


def login(client: Client, username: str, password: str, url: str = SITE, address="10.0.0.1"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail(times: int, username: str, url: str = SITE, address="10.0.0.1"):
    for _ in range(times):
        r = login(Client(), username, "wrong-password", url, address)
        assert r.status_code in (200, 429)


def assert_locked_out(response):
    assert response.status_code == 429, response.content
    page = response.content.decode()
    assert "Too many failed login attempts: try again in 15 minutes." in page
    assert "didn&#x27;t match" not in page  # nothing about this username in particular
    assert response["Retry-After"] == str(15 * 60)


def test_the_right_password_after_too_many_wrong_ones_is_refused(owner, settings):
    fail(settings.AXES_FAILURE_LIMIT, "owner")
    client = Client()
    assert_locked_out(login(client, "owner", PASSWORD))
    assert not logged_in(client)


def test_a_few_mistakes_do_not_lock_out_and_a_success_clears_them(owner, settings):
    fail(settings.AXES_FAILURE_LIMIT - 1, "owner")
    client = Client()
    assert login(client, "owner", PASSWORD).status_code == 302 and logged_in(client)
    fail(settings.AXES_FAILURE_LIMIT - 1, "owner")  # counted from zero again
    assert login(Client(), "owner", PASSWORD).status_code == 302


def test_the_admin_login_is_throttled_with_the_site_login(owner, settings):
    owner.is_staff = True
    owner.save()
    fail(settings.AXES_FAILURE_LIMIT, "owner", url=ADMIN)
    assert_locked_out(login(Client(), "owner", PASSWORD, url=ADMIN))
    assert_locked_out(login(Client(), "owner", PASSWORD, url=SITE))


def test_an_unknown_username_gets_the_same_answers(owner, settings):
    fail(settings.AXES_FAILURE_LIMIT, "owner", address="10.0.0.1")
    fail(settings.AXES_FAILURE_LIMIT, "nobody-here", address="10.0.0.2")
    known = login(Client(), "owner", "wrong-password", address="10.0.0.3")
    unknown = login(Client(), "nobody-here", "wrong-password", address="10.0.0.4")
    assert_locked_out(known)
    assert_locked_out(unknown)
    strip = lambda r: r.content.decode().split("csrfmiddlewaretoken")[0]  # noqa: E731
    assert strip(known) == strip(unknown)


def test_an_address_guessing_many_usernames_is_locked_out(owner, settings):
    for i in range(settings.AXES_FAILURE_LIMIT):
        fail(1, f"guess{i}", address="10.9.9.9")
    assert_locked_out(login(Client(), "owner", PASSWORD, address="10.9.9.9"))
    client = Client()
    login(client, "owner", PASSWORD, address="10.0.0.8")  # the account itself is not locked
    assert logged_in(client)


def test_the_lockout_ends_after_the_cool_off(owner, settings):
    fail(settings.AXES_FAILURE_LIMIT, "owner")
    assert_locked_out(login(Client(), "owner", PASSWORD))
    past = settings.AXES_COOLOFF_TIME + timedelta(seconds=1)
    for attempt in AccessAttempt.objects.all():
        AccessAttempt.objects.filter(pk=attempt.pk).update(attempt_time=attempt.attempt_time - past)
    client = Client()
    assert login(client, "owner", PASSWORD).status_code == 302 and logged_in(client)


def test_other_accounts_keep_logging_in(owner, member, settings):
    fail(settings.AXES_FAILURE_LIMIT, "owner", address="10.0.0.1")
    client = Client()
    login(client, "member", "member-pass-123", address="10.0.0.2")
    assert logged_in(client)


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "1.2.3.4", "10.0.0.1"),  # no proxy: the header is the client's own claim
        (1, "1.2.3.4", "1.2.3.4"),
        (1, "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # a forged entry in front is not believed
        (2, "6.6.6.6, 1.2.3.4, 10.0.0.7", "1.2.3.4"),
        (1, "", "10.0.0.1"),
    ],
)
def test_the_address_behind_proxies(settings, proxies, forwarded, expected):
    settings.FORWARDED_PROXY_COUNT = proxies
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected


def test_a_user_made_by_a_site_admin_logs_in(db):
    make_user("fresh")
    client = Client()
    assert login(client, "fresh", "fresh-pass-123").status_code == 302 and logged_in(client)
