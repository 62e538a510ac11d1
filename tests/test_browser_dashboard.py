"""What a first-use walk through the dashboard broke (issue 13), each walked again in
Chromium: a gated promotion approved and rejected on the model page, an example's fields
corrected at the annotation desk by a team member who is not site staff, the Overview's
running runs and models, and a promote with nothing chosen."""

import pytest

from datasets_app import annotation
from datasets_app.models import Example
from experiments import services as training_services
from finetune_hub.models import Membership, Role, Team
from registry import services
from registry.models import PromotionRequest
from tests.support.browser import log_in, shot
from tests.support.clients import make_user
from tests.support.registry_helpers import trained_run
from tests.support.training_helpers import make_experiment, make_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_approve_and_reject_a_gated_promotion_on_the_model_page(page, team, owner, tiny_model):
    model = services.model_create(team=team, name="gated", by=owner)
    first = trained_run(team, owner, tiny_model, seed=1)
    for run in (first, trained_run(team, owner, tiny_model, seed=2, experiment=first.experiment)):
        services.version_register(model=model, run=run, by=owner)
    services.policy_set(
        model=model, policy={"require_approval": True, "gated_aliases": ["production"]}, by=owner
    )
    log_in(page, "owner", "owner-pass-123")
    page.goto("/registry/gated/")
    page.select_option("#pversion", "1")
    page.fill("#preason", "ship v1")
    page.click("button:has-text('Promote (through the policy)')")
    page.wait_for_selector("text=Promotion requested: it waits for an approver")
    page.click("button:has-text('Approve')")
    page.wait_for_selector("#alias-production:has-text('v1')")
    assert "Server Error" not in page.content()
    assert PromotionRequest.objects.get(version__number=1).status == "applied"

    page.select_option("#pversion", "2")
    page.fill("#preason", "ship v2")
    page.click("button:has-text('Promote (through the policy)')")
    page.wait_for_selector("button:has-text('Reject')")
    page.click("button:has-text('Reject')")
    page.wait_for_selector("text=No alias has moved yet", state="detached")
    assert page.inner_text("#alias-production") == "v1"
    assert PromotionRequest.objects.get(version__number=2).status == "rejected"
    assert page.query_selector("button:has-text('Approve')") is None
    shot(page, "registry-gated")


def test_promoting_with_nothing_chosen_is_a_message_not_an_error_page(page, team, owner):
    services.model_create(team=team, name="empty", by=owner)
    log_in(page, "owner", "owner-pass-123")
    page.goto("/registry/empty/")
    page.fill("#preason", "nothing to ship")
    page.click("button:has-text('Promote (through the policy)')")
    page.wait_for_selector(".messages >> text=Choose a version to promote")
    page.click("button:has-text('Register as the next version')")
    page.wait_for_selector(".messages >> text=Choose a run to register")
    assert page.url.endswith("/registry/empty/")


def test_a_team_annotator_who_is_not_staff_corrects_an_example_at_the_desk(page, team, owner):
    annotator = make_user("annotator")
    Membership.objects.create(team=team, user=annotator, role=Role.MEMBER)
    assert not annotator.is_staff
    version = make_version(team, owner)
    draft = annotation.draft_create(version=version, by=annotator)
    example = draft.examples.get(position=3)
    elsewhere, stranger = Team.objects.create(name="Elsewhere"), make_user("stranger")
    Membership.objects.create(team=elsewhere, user=stranger, role=Role.ADMIN)
    other = make_version(elsewhere, stranger)
    log_in(page, "annotator", "annotator-pass-123")
    page.goto("/admin/")
    page.wait_for_selector("a:has-text('Examples')")
    page.goto(f"/admin/datasets/example/{example.pk}/change/")
    output = page.locator("textarea[name=output]")
    assert output.count() == 1, "the example's fields are editable, not only its notes"
    output.fill("a corrected answer")
    page.fill("textarea[name=notes]", "fixed the answer")
    shot(page, "annotation-desk-change")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist, .success")
    example.refresh_from_db()
    assert example.fields["output"] == "a corrected answer" and example.notes == "fixed the answer"
    hidden = other.examples.first()
    page.goto(f"/admin/datasets/example/{hidden.pk}/change/")
    assert "a corrected answer" not in page.content() and hidden.fields["output"] not in (
        page.content()
    )
    page.goto(f"/admin/datasets/datasetversion/{draft.pk}/change/")
    assert page.query_selector("a.deletelink") is None  # nothing offered only to be refused
    assert Example.objects.filter(pk=example.pk).exists()


def test_the_overview_shows_runs_in_flight_and_registered_models(page, team, owner, tiny_model):
    experiment = make_experiment(team, owner, tiny_model)
    run = training_services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    services.model_create(team=team, name="overview-model", by=owner)
    log_in(page, "owner", "owner-pass-123")
    page.goto("/")
    page.wait_for_selector(f"a:has-text('#{run.pk}')")
    assert "overview-model" in page.inner_text("body")
    assert "Nothing queued or running" not in page.inner_text("body")
    shot(page, "overview")
