"""The registry's rules, one behaviour each, with the exact refusal a client gets: who may
register, promote and roll back; what an alias may be called; which model's history an alias
move reads; what a version and an alias event record. (A mutation run found each of these
unguarded: bench/RESULTS.md.)"""

import pytest

from finetune_hub.errors import ServiceError
from finetune_hub.models import Membership, Role, Team
from registry import services
from registry.models import AliasEvent
from tests.support.clients import make_user
from tests.support.registry_helpers import trained_run


def user_with(team, role):
    user = make_user(f"u-{role}")
    Membership.objects.create(team=team, user=user, role=role)
    return user


def refusal(call) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call()
    return caught.value


def promote(model, version, by, alias="production", reason="ship it"):
    return services.alias_promote(model=model, alias=alias, version=version, by=by, reason=reason)


def assert_field_error(error, status, field, message):
    assert (error.status, error.detail) == (status, message)
    assert [(e.field, e.message) for e in error.errors] == [(field, message)]


# ---------------------------------------------------------------- registration


def test_a_version_records_its_run_description_and_base_model_info(model, team, owner, tiny_model):
    run = trained_run(team, owner, tiny_model, seed=5)
    run.base_model_info = {"source": "tiny", "dtype": "float32"}
    run.save(update_fields=["base_model_info"])
    version = services.version_register(model=model, run=run, by=owner, description="first try")
    assert version.description == "first try" and version.kind == "adapter"
    assert version.base_model_info == {"source": "tiny", "dtype": "float32"}
    assert services.version_register(model=model, run=run, by=owner).description == ""


def test_a_full_model_output_is_registered_as_full(model, team, owner, tiny_model):
    run = trained_run(team, owner, tiny_model, seed=6)
    folder = services.artifact_path(run.output_path)
    (folder / "adapter_config.json").unlink()
    assert services.version_register(model=model, run=run, by=owner).kind == "full"


def test_registration_refusals_name_the_run(model, team, owner, tiny_model):
    other = Team.objects.create(name="Other")
    stranger = make_user("stranger")
    Membership.objects.create(team=other, user=stranger, role=Role.ADMIN)
    foreign = trained_run(other, stranger, tiny_model, seed=7)
    error = refusal(lambda: services.version_register(model=model, run=foreign, by=owner))
    assert_field_error(error, 400, "run", "No such run in this team")

    run = trained_run(team, owner, tiny_model, seed=8)
    run.status = "running"
    run.save(update_fields=["status"])
    error = refusal(lambda: services.version_register(model=model, run=run, by=owner))
    assert (error.status, error.detail) == (409, f"Run {run.pk} has no trained output (running)")
    # Succeeded but with nothing saved (a crash after the status was written) is refused too.
    run.status, run.output_path = "succeeded", ""
    run.save(update_fields=["status", "output_path"])
    error = refusal(lambda: services.version_register(model=model, run=run, by=owner))
    assert error.detail == f"Run {run.pk} has no trained output (succeeded)"


@pytest.mark.parametrize("action", ["register", "promote", "rollback"])
def test_a_viewer_can_read_but_not_change_the_registry(action, model, versions, team, owner):
    viewer = user_with(team, Role.VIEWER)
    promote(model, versions[0], owner, alias="staging")
    promote(model, versions[1], owner, alias="staging")
    call = {
        "register": lambda: services.version_register(
            model=model, run=versions[0].source_run, by=viewer
        ),
        "promote": lambda: promote(model, versions[0], viewer),
        "rollback": lambda: services.alias_rollback(
            model=model, alias="staging", by=viewer, reason="bad"
        ),
    }[action]
    error = refusal(call)
    assert (error.status, error.detail) == (403, "This needs the member role in team Acme")


# ---------------------------------------------------------------- alias names and reasons


@pytest.mark.parametrize(
    "given, stored", [(" Prod-1 ", "prod-1"), ("a_b-c", "a_b-c"), ("x" * 50, "x" * 50)]
)
def test_an_alias_is_letters_digits_dash_and_underscore(given, stored, model, versions, owner):
    event = promote(model, versions[0], owner, alias=given)
    assert event.alias == stored


@pytest.mark.parametrize("given", ["", None, "   ", "has space", "dot.ted", "x" * 51, "ünïcode!"])
def test_other_alias_names_are_refused_with_the_field(given, model, versions, owner):
    error = refusal(lambda: promote(model, versions[0], owner, alias=given))
    assert_field_error(error, 400, "alias", "An alias is letters, digits, - and _")


@pytest.mark.parametrize("reason", ["", None, "  "])
def test_a_move_needs_a_reason(reason, model, versions, owner):
    error = refusal(lambda: promote(model, versions[0], owner, reason=reason))
    assert_field_error(error, 400, "reason", "Say why (reason)")
    promote(model, versions[0], owner)
    promote(model, versions[1], owner)
    error = refusal(
        lambda: services.alias_rollback(model=model, alias="production", by=owner, reason=reason)
    )
    assert_field_error(error, 400, "reason", "Say why (reason)")


def test_a_version_of_another_model_is_refused(model, versions, team, owner):
    other = services.model_create(team=team, name="other", by=owner)
    error = refusal(lambda: promote(other, versions[0], owner))
    assert_field_error(error, 400, "version", "The version belongs to another model")


def test_promoting_the_holder_again_is_a_conflict(model, versions, owner):
    promote(model, versions[0], owner)
    error = refusal(lambda: promote(model, versions[0], owner))
    assert (error.status, error.detail) == (409, f"production already points at {versions[0]}")


def test_a_policy_refusal_lists_every_failed_rule(model, versions, owner):
    promote(model, versions[0], owner)
    services.policy_set(
        model=model,
        by=owner,
        policy={
            "evaluation_dataset_version": versions[0].dataset_version_id,
            "thresholds": [{"metric": "chrf", "min": 50}],
            "require_ab_win": True,
        },
    )
    error = refusal(lambda: promote(model, versions[1], owner))
    assert error.status == 409
    assert [e.field for e in error.errors] == ["thresholds", "require_ab_win"]
    messages = "; ".join(e.message for e in error.errors)
    assert error.detail == f"The policy refuses {versions[1]} for production: {messages}"


# ---------------------------------------------------------------- history per model and alias


def test_an_alias_event_records_who_why_and_the_evidence(model, versions, owner):
    event = promote(model, versions[0], owner, reason="canary looked fine")
    event.refresh_from_db()
    assert (event.alias, event.reason, event.actor, event.action) == (
        "production",
        "canary looked fine",
        owner,
        "promote",
    )
    assert event.evidence == {"policy": services.policies.parse(model.policy).model_dump()}
    ungated = promote(model, versions[0], owner, alias="staging")
    ungated.refresh_from_db()
    assert ungated.evidence == {"policy": "not gated"}


def test_each_model_and_alias_has_its_own_history(model, versions, team, owner, tiny_model):
    """Two models with a `production` alias, and two aliases of one model: each move reads
    only its own alias's holder and events."""
    promote(model, versions[0], owner)
    promote(model, versions[1], owner)
    other = services.model_create(team=team, name="other", by=owner)
    run = trained_run(team, owner, tiny_model, seed=9)
    theirs = services.version_register(model=other, run=run, by=owner)

    # The other model has no production holder and no history of its own yet.
    error = refusal(
        lambda: services.alias_rollback(model=other, alias="production", by=owner, reason="x")
    )
    assert (error.status, error.detail) == (
        409,
        "production has no previous holder to roll back to",
    )
    event = promote(other, theirs, owner)
    assert (event.sequence, event.from_version) == (1, None)

    # A second alias of the first model starts its own chain too.
    staging = promote(model, versions[0], owner, alias="staging")
    assert (staging.sequence, staging.from_version) == (1, None)
    assert list(
        AliasEvent.objects.filter(registered_model=model, alias="production").values_list(
            "sequence", "from_version__number", "to_version__number"
        )
    ) == [(1, None, 1), (2, 1, 2)]


def test_rollback_returns_to_the_previous_holder_and_says_which_event(model, versions, owner):
    promote(model, versions[0], owner)
    promote(model, versions[1], owner)
    event = services.alias_rollback(model=model, alias="production", by=owner, reason="regress")
    assert (event.action, event.from_version, event.to_version) == (
        "rollback",
        versions[1],
        versions[0],
    )
    assert event.evidence == {"rolled_back_event": 2} and event.reason == "regress"


def test_rolling_back_a_gated_alias_needs_an_approver_only_when_approval_is_required(
    model, versions, team, owner
):
    member, approver = user_with(team, Role.MEMBER), user_with(team, Role.APPROVER)
    for alias in ("production", "staging"):
        promote(model, versions[0], owner, alias=alias)
        promote(model, versions[1], owner, alias=alias)
    # Without required approval, a member rolls back any alias.
    services.alias_rollback(model=model, alias="production", by=member, reason="x")
    promote(model, versions[1], owner)
    services.policy_set(model=model, by=owner, policy={"require_approval": True})
    # Now the gated alias needs an approver; the ungated one still does not.
    error = refusal(
        lambda: services.alias_rollback(model=model, alias="production", by=member, reason="x")
    )
    assert (error.status, error.detail) == (403, "This needs the approver role in team Acme")
    services.alias_rollback(model=model, alias="staging", by=member, reason="x")
    services.alias_rollback(model=model, alias="production", by=approver, reason="x")


def test_a_gated_request_records_the_alias_reason_and_evidence(model, versions, owner):
    services.policy_set(model=model, by=owner, policy={"require_approval": True})
    request = promote(model, versions[0], owner, reason="needs a second look")
    request.refresh_from_db()
    assert (request.alias, request.reason, request.status) == (
        "production",
        "needs a second look",
        "pending",
    )
    assert request.evidence == {"policy": services.policies.parse(model.policy).model_dump()}


def test_rollback_reads_its_own_alias_even_when_another_moved_later(model, versions, owner):
    promote(model, versions[0], owner)
    promote(model, versions[1], owner)
    for version in (versions[0], versions[1], versions[0]):  # staging's history runs longer
        promote(model, version, owner, alias="staging")
    event = services.alias_rollback(model=model, alias="production", by=owner, reason="x")
    assert (event.from_version, event.to_version) == (versions[1], versions[0])
