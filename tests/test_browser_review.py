import pytest

from evaluation.models import Vote
from registry import services
from tests.support.browser import log_in, shot
from tests.support.comparisons import good_and_bad
from tests.support.registry_helpers import trained_run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_blind_review_in_the_browser(page, team, owner, reviewer):
    comparison = good_and_bad(team, owner, n=200, min_votes=2)
    log_in(page, "reviewer", "reviewer-pass-123")
    page.goto(f"/comparisons/{comparison.pk}/")
    page.click("text=Review pairs")
    for _ in range(3):
        left = page.inner_text("#left")
        page.click(
            "button:has-text('Left is better')"
            if left != "nope"
            else "button:has-text('Right is better')"
        )
        page.wait_for_load_state()
    assert Vote.objects.exclude(choice="").count() == 3
    assert all(v.outcome == "a" for v in Vote.objects.exclude(choice=""))
    page.goto(f"/comparisons/{comparison.pk}/")
    human = page.inner_text("#human")
    assert "3 – 0" in human and "no significant difference" in human  # p = 0.25 at 3 votes
    assert page.locator("#side-by-side ins").count() > 0


def test_promote_and_roll_back_in_the_browser(page, team, owner, tiny_model):
    model = services.model_create(team=team, name="triage", by=owner)
    first = trained_run(team, owner, tiny_model, seed=1)
    for run in (first, trained_run(team, owner, tiny_model, seed=2, experiment=first.experiment)):
        services.version_register(model=model, run=run, by=owner)
    log_in(page, "owner", "owner-pass-123")
    page.goto("/registry/triage/")
    for number in ("1", "2"):
        page.select_option("#pversion", number)
        page.fill("#preason", f"ship v{number}")
        page.click("button:has-text('Promote (through the policy)')")
        page.wait_for_selector(f"#alias-production:has-text('v{number}')")
    page.fill("input[name=reason][placeholder='why roll back']", "regression")
    page.click("button:has-text('Roll back')")
    page.wait_for_selector("#alias-production:has-text('v1')")
    assert page.locator("table.history tr").count() == 4  # header and three events
    shot(page, "registry-rollback")


def test_blind_review_by_keyboard_with_progress(page, team, owner, reviewer):
    comparison = good_and_bad(team, owner, n=200, min_votes=2)
    total = comparison.pairs.count()
    log_in(page, "reviewer", "reviewer-pass-123")
    page.goto(f"/comparisons/{comparison.pk}/review/")
    for number in (1, 2):
        assert page.inner_text("#progress") == f"Pair {number} of {total}"
        key = "ArrowLeft" if page.inner_text("#left") != "nope" else "2"
        with page.expect_navigation():
            page.keyboard.press(key)
    page.fill("#comment", "tb12")  # typing in the comment box votes nothing
    assert page.inner_text("#progress") == f"Pair 3 of {total}"
    page.click("h1")
    with page.expect_navigation():
        page.keyboard.press("b")
    votes = list(Vote.objects.exclude(choice="").order_by("pk"))
    assert [v.choice for v in votes][2] == "both_bad" and votes[2].comment == "tb12"
    assert all(v.outcome == "a" for v in votes[:2])
    assert page.inner_text("#progress") == f"Pair 4 of {total}"
