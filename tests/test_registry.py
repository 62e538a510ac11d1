from datetime import timedelta

import pytest
from django.utils import timezone

from evaluation.models import EvaluationRun
from finetune_hub.errors import ServiceError
from finetune_hub.models import Membership, Role
from registry import services
from registry.models import AliasEvent, ModelVersion, RegisteredModel
from tests.support.clients import ApiClient, make_user
from tests.support.concurrency import errors, race
from tests.support.registry_helpers import trained_run

ADAPTER_KINDS = pytest.mark.parametrize("adapter_kind", ["lora", "ia3", "loha"])

BASE = "/api/registry/models/triage"


def move(model, alias, version, by):
    return services.alias_promote(model=model, alias=alias, version=version, by=by, reason="test")


def promote(api, alias, number, reason="ship it"):
    return api.put(
        f"/api/registry/models/triage/aliases/{alias}", {"version": number, "reason": reason}
    )


def test_register_records_lineage_and_artifacts(api, model, runs):
    r = api.post("/api/registry/models/triage/versions", {"run": runs[0].pk})
    assert r.status_code == 201 and r.json()["number"] == 1
    body = api.get("/api/registry/models/triage/versions/1").json()
    lineage = body["lineage"]
    assert lineage["run"]["id"] == runs[0].pk
    assert lineage["dataset_versions"][0]["number"] == 1
    assert lineage["dataset_versions"][0]["sha256"] == runs[0].experiment.dataset_version.sha256
    assert body["artifacts"]["adapter_model.safetensors"] and body["kind"] == "adapter"


@pytest.mark.django_db(transaction=True)
def test_version_numbers_stay_distinct_under_concurrent_registration(team, owner, tiny_model):
    """Bites on PostgreSQL (tests/support/concurrency.py): without the row lock two registrations
    read the same highest number."""
    model = services.model_create(team=team, name="race", by=owner)
    run = trained_run(team, owner, tiny_model, seed=3)

    def register():
        return services.version_register(model=model, run=run, by=owner)

    outcomes = race(register, [()] * 4)
    assert not errors(outcomes), outcomes
    assert sorted(model.versions.values_list("number", flat=True)) == [1, 2, 3, 4]


def test_promote_history_at_time_and_rollback(api, versions):
    assert promote(api, "production", 1).status_code == 200
    after_first = timezone.now()
    assert promote(api, "production", 2, "better").status_code == 200
    assert promote(api, "production", 2).status_code == 409  # already there
    r = api.post(
        "/api/registry/models/triage/aliases/production/rollback", {"reason": "regression"}
    )
    assert r.status_code == 200 and r.json()["to_version"] == 1 and r.json()["action"] == "rollback"
    history = api.get("/api/registry/models/triage/aliases/production/history").json()
    assert [(e["from_version"], e["to_version"]) for e in history] == [(None, 1), (1, 2), (2, 1)]
    assert [e["sequence"] for e in history] == [1, 2, 3]
    at = api.get(
        "/api/registry/models/triage/aliases/production/at", time=after_first.isoformat()
    ).json()
    assert at["version"] == 1
    before = (timezone.now() - timedelta(days=1)).isoformat()
    assert (
        api.get("/api/registry/models/triage/aliases/production/at", time=before).json()["version"]
        is None
    )
    bad = api.get("/api/registry/models/triage/aliases/production/at", time="yesterday")
    assert bad.status_code == 422


def test_rollback_without_history_is_refused(api, versions):
    r = api.post("/api/registry/models/triage/aliases/production/rollback", {"reason": "x"})
    assert r.status_code == 409


def test_threshold_rule_refuses_without_and_below_the_evaluation(api, model, versions, owner):
    data = versions[0].dataset_version
    services.policy_set(
        model=model,
        by=owner,
        policy={
            "evaluation_dataset_version": data.pk,
            "thresholds": [{"metric": "chrf", "min": 50}],
        },
    )
    r = promote(api, "production", 1)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "thresholds"
    EvaluationRun.objects.create(
        team=model.team,
        subject_kind="run",
        training_run=versions[0].source_run,
        base_model="x",
        dataset_version=data,
        metrics=["chrf"],
        generation={},
        status="succeeded",
        results={"chrf": {"score": 42.0}},
        created_by=owner,
        finished_at=timezone.now(),
    )
    r = promote(api, "production", 1)
    assert r.status_code == 409 and "chrf 42 is below 50" in r.json()["errors"][0]["message"]
    assert promote(api, "staging", 1).status_code == 200  # staging is not gated


def test_ab_rule_needs_a_significant_win_over_the_holder(api, model, versions, owner):
    services.alias_promote(
        model=model, alias="production", version=versions[0], by=owner, reason="first"
    )
    services.policy_set(
        model=model,
        by=owner,
        policy={
            "evaluation_dataset_version": versions[0].dataset_version_id,
            "require_ab_win": True,
        },
    )
    r = promote(api, "production", 2)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "require_ab_win"


def test_approval_and_two_person_rule(api, model, versions, team, owner):
    approver = make_user("approver")
    Membership.objects.create(team=team, user=approver, role=Role.APPROVER)
    services.policy_set(
        model=model, by=owner, policy={"require_approval": True, "two_person_rule": True}
    )
    r = promote(api, "production", 1)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    request_id = r.json()["request"]
    assert not AliasEvent.objects.exists()
    own = api.post(f"/api/registry/models/triage/promotions/{request_id}/approve")
    assert own.status_code == 403 and "Two-person" in own.json()["detail"]
    member = make_user("m2")
    Membership.objects.create(team=team, user=member, role=Role.MEMBER)
    assert (
        ApiClient(member)
        .post(f"/api/registry/models/triage/promotions/{request_id}/approve")
        .status_code
        == 403
    )
    ok = ApiClient(approver).post(f"/api/registry/models/triage/promotions/{request_id}/approve")
    assert ok.status_code == 200 and ok.json()["status"] == "applied"
    event = AliasEvent.objects.get()
    assert event.approved_by == approver and event.actor == owner
    again = ApiClient(approver).post(f"/api/registry/models/triage/promotions/{request_id}/approve")
    assert again.status_code == 409


def test_deleting_an_aliased_version_is_refused(api, model, versions, owner):
    services.alias_promote(model=model, alias="staging", version=versions[0], by=owner, reason="x")
    assert api.delete("/api/registry/models/triage/versions/1").status_code == 409
    assert api.delete("/api/registry/models/triage/versions/2").status_code == 204
    assert ModelVersion.objects.filter(number=1).exists()


def test_bad_policy_names_the_field(api, team):
    r = api.post(
        "/api/registry/models",
        {"team": team.pk, "name": "m", "policy": {"thresholds": [{"metric": "chrf"}]}},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("policy")
    assert not RegisteredModel.objects.exists()


def test_generate_follows_promotion_and_rollback_without_restart(api, model, versions, owner):
    services.alias_promote(
        model=model, alias="production", version=versions[0], by=owner, reason="a"
    )
    ask = {"prompt": "Triage: my parcel is late", "max_new_tokens": 8}
    first = api.post("/api/registry/models/triage/aliases/production/generate", ask).json()
    assert first["version"] == 1
    services.alias_promote(
        model=model, alias="production", version=versions[1], by=owner, reason="b"
    )
    second = api.post("/api/registry/models/triage/aliases/production/generate", ask).json()
    assert second["version"] == 2 and second["output"] != first["output"]
    services.alias_rollback(model=model, alias="production", by=owner, reason="c")
    third = api.post("/api/registry/models/triage/aliases/production/generate", ask).json()
    assert third["version"] == 1 and third["output"] == first["output"]
    r = api.post("/api/registry/models/triage/aliases/nothing/generate", ask)
    assert r.status_code == 409


def test_feedback_is_stored_per_version_and_sent_to_annotation(api, model, versions, owner):
    services.alias_promote(
        model=model, alias="production", version=versions[0], by=owner, reason="a"
    )
    served = api.post(
        "/api/registry/models/triage/aliases/production/generate",
        {"prompt": "hello", "max_new_tokens": 4},
    ).json()
    r = api.post(
        "/api/registry/models/triage/feedback",
        {"generation": served["generation"], "rating": -1, "comment": "wrong format"},
    )
    assert r.status_code == 201
    assert (
        api.post(
            "/api/registry/models/triage/feedback",
            {"generation": served["generation"], "rating": 1},
        ).status_code
        == 409
    )
    bad_rating = api.post(
        "/api/registry/models/triage/feedback", {"generation": served["generation"], "rating": 5}
    )
    assert bad_rating.status_code == 422 and bad_rating.json()["errors"][0]["field"] == "rating"
    summary = api.get("/api/registry/models/triage/feedback").json()
    assert summary[0] == {"version": 1, "up": 0, "down": 1}
    from registry.models import Feedback

    example = services.feedback_to_annotation(feedback=Feedback.objects.get(), by=owner)
    assert example.version.is_draft and example.status == "flagged"
    assert example.fields["output"] == served["output"] and "wrong format" in example.flag_reason


def test_pickles_are_refused(api, model, runs, owner):
    from finetune_hub.storage import artifact_path

    (artifact_path(runs[0].output_path) / "training_args.bin").write_bytes(b"\x80\x04pickle")
    r = api.post("/api/registry/models/triage/versions", {"run": runs[0].pk})
    assert r.status_code == 409 and "training_args.bin" in r.json()["detail"]
    assert str(artifact_path("")) not in r.text  # the answer names no server path
    with pytest.raises(ServiceError):
        services.version_register(model=model, run=runs[0], by=owner)


def test_it_validates_ownership(outsider_api, api, model, versions, owner):
    services.alias_promote(
        model=model, alias="production", version=versions[0], by=owner, reason="a"
    )
    base = "/api/registry/models/triage"
    gets = [
        f"{base}/versions/1",
        f"{base}/versions/1/export?kind=adapter",
        f"{base}/aliases/production/history",
        f"{base}/aliases/production/at?time=2026-01-01T00:00:00Z",
        f"{base}/feedback",
        f"{base}/promotions",
    ]
    for path in gets:
        assert outsider_api.get(path).status_code == 404, path
    posts = [
        (f"{base}/versions", {"run": versions[0].source_run_id}),
        (f"{base}/aliases/production/rollback", {"reason": "x"}),
        (f"{base}/aliases/production/generate", {"prompt": "x"}),
        (f"{base}/feedback", {"generation": 1, "rating": 1}),
    ]
    for path, body in posts:
        assert outsider_api.post(path, body).status_code == 404, path
    assert (
        outsider_api.put(f"{base}/aliases/production", {"version": 1, "reason": "x"}).status_code
        == 404
    )
    assert outsider_api.delete(f"{base}/versions/2").status_code == 404
    assert outsider_api.get("/api/registry/models").json() == []
    assert AliasEvent.objects.count() == 1 and ModelVersion.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_promotions_leave_one_holder_and_a_chained_history(team, owner, tiny_model):
    """Bites on PostgreSQL (tests/support/concurrency.py): every promotion lands, one after
    the other,
    and the events chain without gaps; without the row lock two read the same holder."""
    model = services.model_create(team=team, name="racing", by=owner)
    first = trained_run(team, owner, tiny_model, seed=5)
    versions = [services.version_register(model=model, run=first, by=owner) for _ in range(4)]

    def promote_one(version):
        return services.alias_promote(
            model=model, alias="production", version=version, by=owner, reason=f"race {version}"
        )

    outcomes = race(promote_one, [(v,) for v in versions])
    assert not errors(outcomes), outcomes
    events = list(AliasEvent.objects.filter(registered_model=model).order_by("sequence"))
    assert [e.sequence for e in events] == [1, 2, 3, 4]
    assert events[0].from_version is None
    for before, after in zip(events, events[1:], strict=False):
        assert after.from_version_id == before.to_version_id
    holder = model.aliases.get(name="production").version
    assert holder.pk == events[-1].to_version_id


def test_scheduled_retraining_trains_on_newer_data_and_opens_a_comparison(
    api, model, versions, owner, cpu_worker
):
    from datasets_app.services import dataset_version_upload
    from experiments.models import TrainingRun
    from registry.retraining import compare_finished, retrain_due
    from tests.support.data import examples, jsonl

    assert api.put(f"{BASE}/schedule", {"every_days": 7}).status_code == 200
    assert api.put(f"{BASE}/schedule", {"every_days": 0}).status_code == 422
    move(model, "production", versions[0], owner)
    assert retrain_due() == []  # no newer data yet
    model.refresh_from_db()
    model.last_retrain_at = None
    model.save()
    dataset = versions[0].dataset_version.dataset
    newer = dataset_version_upload(
        dataset=dataset,
        filename="v2.jsonl",
        by=owner,
        data=jsonl(examples("instruction", 130)).encode(),
    )
    [job] = retrain_due()
    assert job.run.experiment.dataset_version == newer and job.production == versions[0]
    assert retrain_due() == []  # not due again for 7 days
    TrainingRun.objects.filter(pk=job.run_id).update(status="succeeded", output_path="x")
    [compared] = compare_finished()
    subjects = [s.evaluation for s in compared.comparison.subjects.order_by("index")]
    assert subjects[0].model_version == versions[0] and subjects[1].training_run == job.run
